"""pytest-benchmark CPU cases of bounded_relu (`pytest benchmarks --benchmark-enable`); the full side-by-side
table comes from `nemesis-fast bench bounded_relu`."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.bench import bounded_relu as bench


@pytest.mark.parametrize("case", bench.CASES)
@pytest.mark.parametrize("provider", ["native", "native save=mask", "torch eager"])
def test_bounded_relu_cpu(benchmark, case, provider):
    fn = bench.make_case(case, provider, torch.randn(1 << 20))
    assert not isinstance(fn, str), fn
    benchmark.group = f"bounded_relu {case}"
    benchmark(fn)
