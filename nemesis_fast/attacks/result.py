"""What :meth:`nemesis_fast.attacks.Attack.run` returns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class AttackResult:
    """What :meth:`Attack.run` returns; every tensor is on the device of the input, one entry per image.

    Attributes:
        x_adv: (B, ...) adversarial images, x's shape and dtype, inside the attack's `clip`.
        success: (B,) bool: the model's prediction on x_adv differs from y (untargeted) or equals the target.
        predictions: (B,) int64: the model's predicted class on x_adv.
        l0: (B,) int64: the number of elements (pixels times channels) that differ between x_adv and x.
        l2: (B,) float32 (float64 for float64 images): the Euclidean norm of x_adv - x, in x's units (pixels in
            [0, 1]: an MNIST image changed by 0.1 in 100 pixels has l2 1.0).
        linf: (B,) same dtype as l2: the largest absolute change of any element, in x's units.
        iterations: (B,) int64: the iterations (gradient steps) the attack spent on each image.
        target: (B,) int64 target classes of a targeted run (empty for an empty batch), else None.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    predictions: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    iterations: torch.Tensor
    target: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        """The fraction of images on which the attack succeeded (nan for an empty batch)."""
        return self.success.float().mean().item() if self.success.numel() else math.nan
