"""pytest-benchmark CPU cases of jsma_saliency_search (`pytest benchmarks --benchmark-enable`): the native kernel
against the materialised eager search; the full side-by-side table, with the attack against torchattacks and
ART, comes from `nemesis-fast bench jsma`."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.bench import jsma as bench


@pytest.mark.parametrize("gradients", bench.GRADIENTS)
@pytest.mark.parametrize("provider", ["native", "torch materialised"])
def test_jsma_saliency_search_cpu(benchmark, provider, gradients):
    fn = bench.search_provider(provider, torch.device("cpu"))
    assert not isinstance(fn, str), fn
    t, o, d = bench.search_inputs(8, 784, gradients, torch.device("cpu"))
    benchmark.group = f"jsma_saliency_search n=784, B=8, {gradients}"
    benchmark(fn, t, o, d, True)
