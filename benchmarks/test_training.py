"""pytest-benchmark CPU cases of a training epoch (`pytest benchmarks --benchmark-enable`): the device-resident
loader against torch's DataLoader on 512 MNIST images; the full table, with the GPU cases, comes from
`nemesis-fast bench training`."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.bench import training as bench


@pytest.mark.parametrize("case", bench.CASES)
@pytest.mark.parametrize("provider", ["DeviceLoader", "torch DataLoader"])
def test_training_epoch_cpu(benchmark, case, provider):
    images, labels, _ = bench.mnist_images(512)
    fn = bench.make_provider(provider, case, images, labels, torch.device("cpu"))
    assert not isinstance(fn, str), fn
    benchmark.group = f"training {case}"
    benchmark(fn)
