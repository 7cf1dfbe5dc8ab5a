"""pytest-benchmark CPU cases of gaussian_augment (`pytest benchmarks --benchmark-enable`); the full side-by-side
table, with torch.compile, ART and the GPU cases, comes from `nemesis-fast bench gaussian_augment`."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.bench import gaussian_augment as bench


@pytest.mark.parametrize("source", [torch.float32, torch.uint8])
@pytest.mark.parametrize("provider", ["native", "torch eager"])
def test_gaussian_augment_cpu(benchmark, source, provider):
    x = torch.rand(32, *bench.IMAGE_SHAPE)
    if source == torch.uint8:
        x = (x * 255).round().to(torch.uint8)
    out_dtype = torch.float32 if source == torch.float32 else torch.bfloat16
    fn = bench.make_provider(provider, x, bench.COPIES, bench.SIGMA, out_dtype)
    assert not isinstance(fn, str), fn
    benchmark.group = f"gaussian_augment {source} -> {out_dtype}"
    benchmark(fn)
