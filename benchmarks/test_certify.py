"""pytest-benchmark CPU case of randomized-smoothing certification (`pytest benchmarks --benchmark-enable`); the
side-by-side table with ART comes from `nemesis-fast bench certify`."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.bench import certify as bench
from nemesis_fast.certify import Smooth
from nemesis_fast.models import mnist_cnn


def test_certify_cpu(benchmark):
    torch.manual_seed(0)
    smooth = Smooth(mnist_cnn().eval(), bench.SIGMA, bench.CLASSES)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    benchmark.group = "certify"
    result = benchmark(smooth.certify, x, 16, 200, bench.ALPHA, 500, seed=0)
    assert (result.counts.sum(1) == 200).all()


@pytest.mark.slow
def test_side_by_side_report_is_complete():
    report = bench.run("cpu", numel=3, n=40)
    rows = {(row.case.split(":")[0].split(" (")[0], row.provider): row for row in report.rows}
    assert {
        ("vs ART", "nemesis_fast"),
        ("vs ART", "nemesis_fast bf16"),
        ("time split", "nemesis_fast"),
    } <= set(rows)
    ours = rows["vs ART", "nemesis_fast"]
    assert ours.ms > 0 and 0 <= ours.extra["abstain"] <= 1 and ours.extra["mean_radius"] >= 0
    art = rows["vs ART", "ART (batch 1000)"]
    if art.ms is not None:  # ART installed: the paired differences and the default-batch case are there
        assert ("vs ART", "paired difference") in rows and ("ART's default batch", "ART (batch 32)") in rows
        assert ours.speedup > 0
    split = rows["time split", "nemesis_fast"]
    assert 0 < split.extra["noise_share"] < 1
    assert "nemesis_fast" in report.table()
