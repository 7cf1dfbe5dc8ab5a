"""Helpers shared by the training tests (test_training.py, test_checkpoints.py, test_training_resume.py,
test_paper_models.py): small data, quiet options, tiny models and a checkpoint that crashes after an epoch."""

from __future__ import annotations

import torch
from torch import nn

from nemesis_fast.models import mnist_cnn
from nemesis_fast.training import train


def small(mnist_sample, n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = mnist_sample[0]
    return images[:n], labels[:n]


def quiet(**kwargs):
    return {"device": "cpu", "log": False, **kwargs}


def trained(mnist_sample, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = mnist_cnn(**kwargs)
    train(model, small(mnist_sample, 32), epochs=1, batch_size=16, **quiet())
    return model


class Crash(Exception):
    pass


class CrashingCheckpoint:
    """A checkpoint in memory that makes training die right after it saved epoch `after`."""

    def __init__(self, after: int | None) -> None:
        self.state, self.after = None, after

    def load(self):
        return self.state

    def save(self, state):
        self.state = state
        if state["epoch"] == self.after:
            raise Crash


def tiny_set(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def tiny_model() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
