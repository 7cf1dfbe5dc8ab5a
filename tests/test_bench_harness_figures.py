"""The harness's figures from programmed times (no clock is read for a figure): the median of the rounds, the
warm-up calls, the speed-up against the baseline, GB/s, throughput, copy bandwidth, and non-finite figures in JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nemesis_fast.bench import harness
from nemesis_fast.bench.harness import Case, Report, time_interleaved, write_bench_json

CPU = torch.device("cpu")


def programmed(monkeypatch, times):
    """Makes each timed call of provider `name` call it and take the next of `times[name]` milliseconds."""
    left = {name: list(values) for name, values in times.items()}

    def fake(fn, device):
        fn()
        return left[fn.__name__].pop(0)

    monkeypatch.setattr(harness, "_time_once", fake)


def provider(name, calls):
    def fn():
        calls.append(name)

    fn.__name__ = name
    return fn


def test_the_time_is_the_median_of_the_rounds_not_their_mean(monkeypatch):
    programmed(monkeypatch, {"a": [1.0, 2.0, 100.0], "b": [5.0, 3.0, 4.0]})
    calls = []
    got = time_interleaved(
        {"a": provider("a", calls), "b": provider("b", calls)}, CPU, warmup=0, min_reps=3, min_seconds=0.0, max_reps=3
    )
    assert got == {"a": 2.0, "b": 4.0}  # the mean of a would be 34.33


def test_warm_up_calls_run_first_and_are_not_timed(monkeypatch):
    programmed(monkeypatch, {"a": [7.0, 9.0], "b": [1.0, 3.0]})
    calls = []
    got = time_interleaved(
        {"a": provider("a", calls), "b": provider("b", calls)}, CPU, warmup=2, min_reps=2, min_seconds=0.0, max_reps=2
    )
    assert calls == ["a", "a", "b", "b", "a", "b", "a", "b"]  # warm-up per provider, then rounds taking turns
    assert got == {"a": 8.0, "b": 2.0}


def report_with(monkeypatch, timings, copy_gbps=500.0):
    monkeypatch.setattr(harness, "copy_bandwidth_gbps", lambda device, nbytes=0: copy_gbps)
    monkeypatch.setattr(harness, "time_interleaved", lambda fns, device, **kw: {n: timings[n] for n in fns})
    return Report("t", "cpu")


def test_speedup_is_the_baselines_time_over_the_rows(monkeypatch):
    report = report_with(monkeypatch, {"fast": 1.0, "slow": 4.0, "mid": 2.0})
    rows = report.run(Case("c", {"fast": lambda: None, "slow": lambda: None, "mid": lambda: None}, baseline="slow"))
    by = {row.provider: row for row in rows}
    assert by["slow"].speedup == pytest.approx(1.0)
    assert by["fast"].speedup == pytest.approx(4.0)  # 4 ms / 1 ms: four times faster than the baseline
    assert by["mid"].speedup == pytest.approx(2.0)


def test_bandwidth_fraction_of_copy_and_throughput_are_per_second(monkeypatch):
    report = report_with(monkeypatch, {"p": 2.0, "q": 4.0}, copy_gbps=1000.0)
    rows = report.run(
        Case("c", {"p": lambda: None, "q": lambda: None}, baseline="p", bytes_moved={"p": 10**9}, items=500)
    )
    p, q = rows
    assert p.gbps == pytest.approx(500.0)  # 1 GB in 2 ms
    assert p.fraction_of_copy == pytest.approx(0.5)
    assert q.gbps is None and q.fraction_of_copy is None  # missing from bytes_moved: no figure
    assert p.items_per_s == pytest.approx(250_000.0)  # 500 items in 2 ms
    assert q.items_per_s == pytest.approx(125_000.0)


def test_copy_bandwidth_counts_bytes_read_plus_written(monkeypatch):
    monkeypatch.setattr(harness, "time_ms", lambda fn, device, **kw: 2.0)
    assert harness.copy_bandwidth_gbps(CPU, 1_000_000) == pytest.approx(1.0)  # 2 MB moved in 2 ms


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_bench_json_writes_every_non_finite_figure_as_null(tmp_path, value):
    path = tmp_path / "bench.json"
    with pytest.warns(UserWarning, match=r"rows\[0\]\.ms = .* not a finite number"):
        write_bench_json(path, {"rows": [{"ms": value, "gbps": 1.5}]})
    assert json.loads(path.read_text()) == {"rows": [{"ms": None, "gbps": 1.5}]}
