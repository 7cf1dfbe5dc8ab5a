"""Modules: the bounded ReLU as a layer, and a helper that puts it in place of every ReLU of a model."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_choice, check_positive
from .ops import SAVES, bounded_relu


class BoundedReLU(nn.Module):
    """f_t(x) = min(max(x, 0), t) (Zantedeschi et al., 2017), on nemesis_fast's fused kernels.

    Args:
        t: the upper bound, a finite number > 0.
        save: what backward keeps: "output" (default; training memory equals nn.ReLU's) or "mask" (1 bit per
            element, n / 8 bytes more, and less memory traffic); as for :func:`nemesis_fast.bounded_relu`.
        backend: as for :func:`nemesis_fast.bounded_relu`.
    """

    def __init__(self, t: float = 1.0, *, save: str = "output", backend: str | None = None) -> None:
        super().__init__()
        self.t = check_positive(t, "t")
        self.save = check_choice(save, "save", SAVES)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bounded_relu(x, self.t, save=self.save, backend=self.backend)

    def extra_repr(self) -> str:
        return (
            f"t={self.t}"
            + (f", save={self.save!r}" if self.save != "output" else "")
            + (f", backend={self.backend!r}" if self.backend is not None else "")
        )


def replace_relu(model: nn.Module, t: float = 1.0, *, save: str = "output", backend: str | None = None) -> nn.Module:
    """Replaces every `nn.ReLU` submodule of `model` with a `BoundedReLU(t, save=save, backend=backend)`, in place,
    and returns `model`.

    Functional calls such as `F.relu` inside a `forward` are not modules and are left alone. When `model`
    is itself an `nn.ReLU`, a new `BoundedReLU` is returned.
    """
    t = check_positive(t, "t")
    check_choice(save, "save", SAVES)
    if isinstance(model, nn.ReLU):
        return BoundedReLU(t, save=save, backend=backend)
    for name, child in model.named_children():
        if isinstance(child, nn.ReLU):
            setattr(model, name, BoundedReLU(t, save=save, backend=backend))
        else:
            replace_relu(child, t, save=save, backend=backend)
    return model
