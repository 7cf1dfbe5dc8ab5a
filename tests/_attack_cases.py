"""The small synthetic models, images and configured attacks that the attack tests share."""

from __future__ import annotations

import math

import torch
from torch import nn

from nemesis_fast.attacks import FGSM, PGD, CarliniWagnerL2, DeepFool, RandFGSM

CLASSES = 5
SHAPE = (2, 4, 4)  # C, H, W
TOL = 1e-5  # the norms' float32 rounding, in the bounds tests


def small_model(dtype: torch.dtype = torch.float32, *, seed: int = 0, activation=nn.ReLU) -> nn.Module:
    """A conv net with batch norm and dropout (so eval mode matters), 5 classes, in `dtype`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(2, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            activation(),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(6 * 16, 16),
            activation(),
            nn.Linear(16, CLASSES),
        ).to(dtype)
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def data(n: int = 12, dtype: torch.dtype = torch.float32, *, seed: int = 1, low: float = 0.0, high: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(n, *SHAPE, generator=g, dtype=dtype)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return x, y


class Linear(nn.Module):
    """Logits W x + b over the flattened image: DeepFool's linearisation is exact."""

    def __init__(self, classes: int = CLASSES, dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        features = math.prod(SHAPE)
        self.weight = nn.Parameter(torch.randn(classes, features, generator=g, dtype=dtype))
        self.bias = nn.Parameter(torch.randn(classes, generator=g, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def linear_case(n: int = 16) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    """A float64 linear model, n images away from the box edges, labelled with the model's predictions."""
    model = Linear()
    x, _ = data(n, torch.float64, low=0.3, high=0.7)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def nearest_boundary(model: Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact L2 distance from each x to the nearest decision boundary of its class y (no box)."""
    logits = model(x)
    w = model.weight
    diffs = []
    for k in range(w.shape[0]):
        gap = (logits[:, k] - logits.gather(1, y[:, None]).squeeze(1)).abs()
        dist = gap / (w[k] - w[y]).norm(dim=1)
        diffs.append(torch.where(y == k, torch.inf, dist))
    return torch.stack(diffs, 1).amin(1)


def attacks(model, *, clip=(0.0, 1.0), eps=0.1):
    """One configured instance of every attack and option, small budgets."""
    return {
        "fgsm": FGSM(model, eps, clip=clip),
        "fgsm-l2": FGSM(model, 4 * eps, norm="2", clip=clip),
        "randfgsm": RandFGSM(model, eps, eps / 2, clip=clip, seed=0),
        "pgd": PGD(model, eps, eps / 4, 5, clip=clip, seed=0),
        "pgd-no-start": PGD(model, eps, eps / 4, 5, random_start=False, clip=clip),
        "pgd-l2": PGD(model, 4 * eps, eps, 5, norm="2", clip=clip, seed=0),
        "deepfool": DeepFool(model, max_iter=20, clip=clip),
        "deepfool-linf": DeepFool(model, max_iter=20, norm="inf", clip=clip),
        "cw": CarliniWagnerL2(
            model, initial_const=1.0, binary_search_steps=3, max_iter=30, learning_rate=0.1, clip=clip
        ),
    }


NAMES = list(attacks(nn.Identity()))
BOUNDS = {"fgsm": ("linf", 1), "fgsm-l2": ("l2", 4), "randfgsm": ("linf", 1), "pgd": ("linf", 1)}
BOUNDS |= {"pgd-no-start": ("linf", 1), "pgd-l2": ("l2", 4)}
