"""Fixtures shared by the pytest-benchmark CPU cases."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.bench import attacks as bench_attacks


@pytest.fixture(scope="module")
def cifar_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The paper's CIFAR CNN with the attack benchmarks' timing weights, 4 uniform images and its predictions."""
    model = bench_attacks.timing_model(torch.device("cpu"))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y
