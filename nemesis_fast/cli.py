"""The command line: `nemesis-fast bench`, `train`, `evaluate` and `certify`."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, NoReturn

from _nemesis_fast_command import interrupted_while_starting, says_interrupted

from ._cli_certify import add_parser as add_certify_parser
from ._cli_evaluate import add_parser as add_evaluate_parser
from ._cli_evaluate import int_in
from ._cli_train import add_parser as add_train_parser

if TYPE_CHECKING:
    import torch

    from .bench.harness import Report

MAX_BENCH_SIZE = 2**31  # 8 GiB of float32 elements; above it a run only ends in the allocator's error
BENCH_DEVICE_TYPES = ("cpu", "cuda")  # the devices the suites time (CUDA events on a GPU, the wall clock on the CPU)


def _run_suite(run: Callable[..., Report], name: str, device: torch.device, size: int | None) -> Report:
    """The report of the suite `run`, at `size` (None: its default); out of GPU or host memory, one line naming
    --size."""
    import torch

    at = f"--size {size}" if size is not None else "its default size"
    try:
        return run(device, **({"numel": size} if size is not None else {}))
    except torch.OutOfMemoryError as error:
        raise SystemExit(
            f"nemesis-fast bench: {name} ran out of {device} memory at {at}; give a smaller --size"
        ) from error
    except (MemoryError, RuntimeError) as error:
        if not _host_allocation_failure(error):
            raise
        raise SystemExit(f"nemesis-fast bench: {name} ran out of host memory at {at}; give a smaller --size") from error


def _host_allocation_failure(error: BaseException) -> bool:
    """Whether `error` is the host running out of memory: Python's MemoryError, or torch's CPU allocator's
    RuntimeError ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ... bytes")."""
    return isinstance(error, MemoryError) or "can't allocate memory" in str(error)


def _bench_device(value: str | None) -> torch.device:
    """--device: a device this machine has, of the kinds the suites time (cpu, cuda[:N]); ValueError otherwise."""
    from ._checks import check_device

    device = check_device(value, "--device")
    if device.type not in BENCH_DEVICE_TYPES:
        raise ValueError(f"--device must be cpu or cuda[:N] (the devices the suites time), got {value!r}")
    return device


def _bench(args: argparse.Namespace) -> int:
    from . import backend_info
    from ._io import check_output_file, refuse_existing
    from .bench import SUITES, suite
    from .bench.harness import on_device, saving_reports, write_reports

    try:
        device = _bench_device(args.device)
        if args.json is not None:
            check_output_file(args.json, "--json")
            if not args.overwrite:
                refuse_existing({"--json": args.json})
    except ValueError as error:
        raise SystemExit(f"nemesis-fast bench: {error}") from error
    names = args.ops or list(SUITES)
    unknown = sorted(set(names) - set(SUITES))
    if unknown:
        raise SystemExit(f"nemesis-fast bench: unknown benchmark {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    info = backend_info()
    print(f"backends: {', '.join(b for b in ('native', 'triton', 'torch') if device.type in info[b]['devices'])}")
    # With --json the file is rewritten after every measured row, so a run stopped part way keeps what it measured.
    # On cuda:N, N is the current device throughout (CUDA events, Triton launches and allocator figures on it).
    with saving_reports(args.json) if args.json else nullcontext([]) as reports, on_device(device):
        for name in names:
            report = _run_suite(suite(name), name, device, args.size)
            print(report.table(), end="\n\n", flush=True)
    if args.json:
        write_reports(args.json, reports)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nemesis-fast", description="nemesis_fast: fast adversarial robustness")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="run the benchmark suite on this machine and print the tables")
    from .bench import SUITES

    bench.add_argument("ops", nargs="*", help=f"benchmarks to run, of {', '.join(SUITES)} (default: all)")
    bench.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when a GPU is visible)")
    bench.add_argument(
        "--size",
        type=int_in(1, MAX_BENCH_SIZE),
        help="problem size: elements for bounded_relu, the pair search's batch for jsma (its attack rows use a fixed"
        f" 8 images, 256 on a GPU), images for the others (1..{MAX_BENCH_SIZE}; default: each suite's own, smaller"
        " on a CPU, e.g. 2^24 elements for bounded_relu, 2^28 on a GPU; the JSON records it)",
    )
    bench.add_argument(
        "--json", help="also write the reports to this JSON file (rewritten after every row, marked complete or not)"
    )
    bench.add_argument("--overwrite", action="store_true", help="replace --json where it exists (default: refused)")
    bench.set_defaults(
        handler=_bench, interrupted=lambda args: f"the rows measured are in {args.json}" if args.json else ""
    )
    add_train_parser(commands)
    add_evaluate_parser(commands)
    add_certify_parser(commands)
    return parser


# What one command calls an option another names otherwise (train: --root and --data; evaluate, certify: these)
_OTHER_NAMES = {"--root": "--data-dir", "--data": "--dataset"}


class _Parser(argparse.ArgumentParser):
    """An option the command does not know is reported by that command's parser (its usage, not the top level's),
    with the command's option spelt most like it."""

    _parsed: tuple[argparse.Namespace, list[str]] | None = None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._parsed = super().parse_known_args(args, namespace)
        return self._parsed

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        args, extra = self._parsed or (None, [])
        command = getattr(args, "command", None)
        if extra and message.startswith("unrecognized arguments") and command is not None:
            _unknown_options(self, command, extra)
        super().error(message)


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command of `parser` (:func:`build_parser`'s), by the command's name."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _unknown_options(parser: argparse.ArgumentParser, name: str, extra: list[str]) -> None:
    command = command_parsers(parser)[name]
    known = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for word in (w.split("=")[0] for w in extra if w.startswith("--")):
        close = [_OTHER_NAMES[word]] if _OTHER_NAMES.get(word) in known else []
        close = close or difflib.get_close_matches(word, known, n=1)
        hints += [f"{close[0]} (for {word})"] if close else []
    command.error(
        f"unrecognized arguments: {' '.join(extra)}" + (f"; did you mean {', '.join(hints)}?" if hints else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        return interrupted_while_starting()
    try:
        return args.handler(args)
    except KeyboardInterrupt:  # Ctrl-C: one line saying what was kept, not a traceback
        if says_interrupted():
            kept = args.interrupted(args)
            print(f"nemesis-fast {args.command}: interrupted" + (f"; {kept}" if kept else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
