"""The benchmark harness shared by every op and attack benchmark.

A benchmark builds Cases: each names the providers it compares (a zero-argument callable, or the reason it
cannot run here), the provider the ratios are taken against, and the bytes one call must move. The Report
times the providers side by side in one run, next to the device's measured copy bandwidth, and prints a
table or writes JSON. A provider that raises becomes a row with no time and the note "failed: <Type>: <message>",
and the others go on.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from .._checks import check_int
from .._io import write_json_atomic

Provider = Callable[[], object]
T = TypeVar("T")


@dataclass
class Case:
    """One measurement: the same work done by each provider."""

    name: str
    providers: dict[str, Provider | str]  # a provider, or why it cannot run here
    baseline: str
    # Bytes one call must read plus write, for bandwidth figures: one figure for all providers, or one per provider
    # where their designs move different amounts (a provider missing from the dict gets no bandwidth figure).
    bytes_moved: int | dict[str, int] | None = None
    items: int | None = None  # work items per call (images, pairs...), for throughput figures
    item_name: str = "item"  # what one of those items is, singular: "image", "pair" (the table shows "pairs/s")
    min_seconds: float = 0.5  # time the providers, in turns, for at least this long (more rounds: steadier medians)


@dataclass
class Row:
    case: str
    provider: str
    ms: float | None
    gbps: float | None = None
    fraction_of_copy: float | None = None
    speedup: float | None = None  # baseline time / this time
    items_per_s: float | None = None  # throughput in `item_name`s per second (the key kept for older readers)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    item_name: str = "item"  # what items_per_s counts, singular: "image", "pair"
    baseline: str | None = None  # the provider that `speedup` is taken against


def problem_size(numel: Any, default: int) -> int:
    """A suite's `numel` argument: `default` for None, else an int >= 1 (ValueError or TypeError naming numel)."""
    return default if numel is None else check_int(numel, "numel", low=1)


def record_same_images(row: Row, images: int, ms: float) -> None:
    """Adds to `row` its time `ms` per call on the first `images` images of the batch, the ones a slower provider
    attacked alone: the figure :func:`same_images_speedup` compares with that provider's."""
    row.extra |= {"same_images": images, "same_images_ms_per_image": ms / images}


def ms_per_image_on(row: Row, images: int) -> float | None:
    """The time per image of `row` on the first `images` images of the batch: its own figure when it ran on that
    many (extra "images" and "ms_per_image"), or its time on the same images (extra "same_images" and
    "same_images_ms_per_image"); None when it has neither."""
    if row.extra.get("images") == images:
        return row.extra.get("ms_per_image")
    if row.extra.get("same_images") == images:
        return row.extra.get("same_images_ms_per_image")
    return None


def same_images_speedup(base: Row, row: Row) -> float | None:
    """The baseline's time per image over `row`'s, on the images both attacked (the first of the batch, as many as
    the one that attacked fewer): an attack's cost varies from image to image (steps until it succeeds), so times
    per image on different images do not compare. None when a row lacks its time on those images."""
    images = min(base.extra.get("images", 0), row.extra.get("images", 0))
    base_ms, row_ms = ms_per_image_on(base, images), ms_per_image_on(row, images)
    return base_ms / row_ms if base_ms and row_ms else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on_device(device: torch.device) -> AbstractContextManager:
    """Makes a CUDA `device` the current one (where CUDA events record, and where Triton launches), so that
    `cuda:1` is not timed on `cuda:0`'s stream; nothing for any other device."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def error_text(error: BaseException) -> str:
    """`error` in one line for a table: "<Type>: <the first line of its message>" (cut to 300 characters)."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    message = message if len(message) <= 300 else message[:297] + "..."
    return type(error).__name__ + (f": {message}" if message else "")


def failure_note(error: BaseException) -> str:
    """The note of a provider that raised `error`: "failed: <Type>: <the first line of its message>"."""
    return f"failed: {error_text(error)}"


def attempt(name: str, call: Callable[[], T], failures: dict[str, str] | None) -> T | None:
    """call()'s value; where it raises an Exception (not Ctrl-C) and `failures` is a dict, None, with the
    :func:`failure_note` under `name` in `failures` (the exception itself is dropped, so that its traceback does
    not keep the provider's tensors alive). With `failures` None, the exception propagates."""
    try:
        return call()
    except Exception as error:
        if failures is None:
            raise
        failures[name] = failure_note(error)
        return None


def _time_once(fn: Provider, device: torch.device) -> float:
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_interleaved(
    fns: dict[str, Provider],
    device: torch.device,
    *,
    warmup: int = 2,
    min_reps: int = 5,
    min_seconds: float = 0.5,
    max_reps: int = 1000,
    failures: dict[str, str] | None = None,
) -> dict[str, float]:
    """Median wall time of one call of each provider, in milliseconds (CUDA events on a GPU, on `device`).

    The providers take turns, one call each per round, so that load from elsewhere on the machine falls on
    all of them alike and the ratios stay meaningful. With `failures` (a dict), a provider that raises is left out
    of the rounds after and of the result, its note ("failed: <Type>: <message>") put in `failures` under its
    name, and the others go on; without, the exception propagates.
    """
    live = dict(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}

    def call(name: str, timed: Callable[[], T]) -> T | None:
        failed: dict[str, str] = {}
        value = attempt(name, timed, None if failures is None else failed)
        if failed and failures is not None:
            failures.update(failed)
            del live[name]
        return value

    with on_device(device):
        for name, fn in fns.items():
            for _ in range(warmup):
                if name in live:
                    call(name, fn)
        synchronize(device)
        started = time.perf_counter()
        rounds = 0
        while live and rounds < max_reps and (rounds < min_reps or time.perf_counter() - started < min_seconds):
            for name, fn in list(live.items()):
                ms = call(name, partial(_time_once, fn, device))
                if ms is not None:
                    times[name].append(ms)
            rounds += 1
    return {name: statistics.median(times[name]) for name in live if times[name]}


def time_ms(fn: Provider, device: torch.device, **kwargs: Any) -> float:
    """Median wall time of one call of `fn`, in milliseconds."""
    return time_interleaved({"fn": fn}, device, **kwargs)["fn"]


def copy_bandwidth_gbps(device: torch.device, nbytes: int = 1 << 28) -> float:
    """Measured device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), else its architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    simd = torch.backends.cpu.get_cpu_capability()
    return f"{cpu_name()} ({platform.machine()}, {simd}), {torch.get_num_threads()} threads"


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Bytes of distinct storages that autograd saves for backward while `fn` runs."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


_report_listeners: list[Callable[[Report], None]] = []


@contextmanager
def saving_reports(path: str | os.PathLike) -> Iterator[list[Report]]:
    """Within it, every Report begun is written to `path` (JSON, with the others begun within it) after each row
    it gains, marked "complete": false; so a suite stopped part way (a time limit on a lent GPU) leaves the rows
    it measured. Yields the list of those reports."""
    reports: list[Report] = []

    def save(report: Report) -> None:
        if all(r is not report for r in reports):
            reports.append(report)
        write_reports(path, reports, complete=False)

    _report_listeners.append(save)
    try:
        yield reports
    finally:
        _report_listeners.remove(save)


def write_reports(path: str | os.PathLike, reports: list[Report], *, complete: bool = True) -> None:
    """Writes `reports` to the JSON file `path` (atomically), with whether the run that made them ended."""
    write_bench_json(path, {"complete": complete, "reports": [r.to_dict() for r in reports]})


def write_bench_json(path: str | os.PathLike, data: Any) -> None:
    """Writes `data` to the JSON file `path` (atomically) as strict JSON: a figure that is NaN or infinite (which
    JSON cannot hold) is written as null, with a warning naming where it is, so that no measured row is lost."""
    places: list[str] = []
    data = _finite_or_none(data, "", places)
    if places:
        shown = ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
        warnings.warn(f"bench JSON {os.fspath(path)!r}: {shown} not a finite number, written as null", stacklevel=2)
    write_json_atomic(Path(path), data, allow_nan=False)


def _finite_or_none(data: Any, where: str, places: list[str]) -> Any:
    """`data` (dicts and lists of JSON values) with every NaN or infinite float replaced by None, each noted in
    `places` by where it is (e.g. `reports[0].rows[2].ms = nan`)."""
    if isinstance(data, float) and not math.isfinite(data):
        places.append(f"{where or 'the value'} = {data}")
        return None
    if isinstance(data, dict):
        return {
            key: _finite_or_none(value, f"{where}.{key}" if where else str(key), places) for key, value in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [_finite_or_none(value, f"{where}[{i}]", places) for i, value in enumerate(data)]
    return data


class Report:
    """Rows measured on one device, with that device's copy bandwidth, printable and savable as JSON."""

    def __init__(self, title: str, device: torch.device | str, *, settings: dict[str, Any] | None = None) -> None:
        self.title = title
        self.device = torch.device(device)
        self.settings = settings or {}
        self.copy_gbps = copy_bandwidth_gbps(self.device, (1 << 28) if self.device.type == "cuda" else (1 << 26))
        self.rows: list[Row] = []
        self._changed()

    def run(self, case: Case) -> list[Row]:
        """Times every provider of `case` and appends their rows, with ratios against the baseline; a provider
        that raises gets a row with no time and the note "failed: <Type>: <message>"."""
        runnable = {name: fn for name, fn in case.providers.items() if not isinstance(fn, str)}
        failures: dict[str, str] = {}
        timings = (
            time_interleaved(runnable, self.device, min_seconds=case.min_seconds, failures=failures) if runnable else {}
        )
        rows = []
        for provider, fn in case.providers.items():
            note = fn if isinstance(fn, str) else failures.get(provider, "")
            rows.append(self._row(case, provider, timings.get(provider), note))
        base = next((r.ms for r in rows if r.provider == case.baseline and r.ms), None)
        for row in rows:
            if base and row.ms:
                row.speedup = base / row.ms
        self.rows.extend(rows)
        self._changed()
        return rows

    def _row(self, case: Case, provider: str, ms: float | None, note: str) -> Row:
        """The row of `provider` in `case`: its time `ms` (None: it did not run, `note` says why) and the figures
        drawn from it."""
        row = Row(case.name, provider, ms, note=note, item_name=case.item_name, baseline=case.baseline)
        if ms is None:
            return row
        moved = case.bytes_moved.get(provider) if isinstance(case.bytes_moved, dict) else case.bytes_moved
        if moved:
            row.gbps = moved / (ms * 1e-3) / 1e9
            row.fraction_of_copy = row.gbps / self.copy_gbps
        if case.items:
            row.items_per_s = case.items / (ms * 1e-3)
        return row

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self._changed()

    def _changed(self) -> None:
        for listener in _report_listeners:
            listener(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "device": device_name(self.device),
            "device_type": self.device.type,
            "torch_version": torch.__version__,
            "copy_bandwidth_gbps": self.copy_gbps,
            "settings": self.settings,
            "rows": [asdict(r) for r in self.rows],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        write_bench_json(path, self.to_dict())

    def table(self) -> str:
        head = f"{self.title} on {device_name(self.device)} (torch {torch.__version__}; copy {self.copy_gbps:.1f} GB/s)"
        columns = ["case", "provider", "ms", "GB/s", "% copy", "speedup", "throughput", "note"]
        lines = [[c for c in columns]]
        for r in self.rows:
            extra = ", ".join(f"{k}={_fmt(v)}" for k, v in r.extra.items())
            lines.append(
                [
                    r.case,
                    r.provider,
                    _fmt(r.ms),
                    _fmt(r.gbps),
                    f"{100 * r.fraction_of_copy:.0f}%" if r.fraction_of_copy is not None else "",
                    f"{r.speedup:.2f}x" if r.speedup is not None else "",
                    f"{_fmt(r.items_per_s)} {_plural(r.item_name)}/s" if r.items_per_s is not None else "",
                    "; ".join(x for x in (r.note, extra) if x),
                ]
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
        rendered = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        rendered.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join([head, *rendered])


def _plural(noun: str) -> str:
    """The plural of a Case's item_name, for the throughput column: "image" -> "images", "pass" -> "passes"."""
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)
