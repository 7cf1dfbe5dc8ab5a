"""Per-sample norms of perturbations and gradients: what an attack measures and the norms it accepts."""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import check_choice, check_tensor

Norm = str  # "inf" or "2"


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (L0, L2, Linf) norms of x_adv - x, both (B, ...) of one shape, over all dimensions but the first.

    Returns three (B,) tensors: L0 counts the elements that differ (int64); L2 and Linf, in x's units (pixels in
    [0, 1]), are float32, or float64 for float64 inputs. TypeError for a tensor that is not floating (uint8 pixels
    against [0, 1] images would measure in mixed units), ValueError for shapes that differ.
    """
    check_tensor(x_adv, "x_adv", min_ndim=1)
    check_tensor(x, "x", min_ndim=1)
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv and x must have one shape, got {tuple(x_adv.shape)} and {tuple(x.shape)}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    delta = x_adv.to(dtype) - x.to(dtype)
    delta = delta.flatten(1) if delta.dim() > 1 else delta[:, None]
    if delta.shape[1] == 0:
        zeros = torch.zeros(delta.shape[0], dtype=dtype, device=delta.device)
        return zeros.long(), zeros, zeros.clone()
    return (delta != 0).sum(1), delta.norm(dim=1), delta.abs().amax(1)


def l2_norm(v: torch.Tensor, dim: int) -> torch.Tensor:
    """The L2 norm of `v` over its dimensions from `dim` on, without the under- and overflow of the squares: where
    the plain norm rounds to 0 for nonzero entries (all below about 1e-19 in float32: a saturated softmax's
    gradient) or to inf for finite ones (above about 1e19), it is taken of the entries scaled by their largest
    magnitude. Elsewhere it is the plain norm, bit for bit."""
    flat = v.flatten(dim)
    plain = flat.norm(dim=-1)
    if flat.shape[-1] == 0:
        return plain
    suspect = (plain == 0) | torch.isinf(plain)
    if flat.device.type == "cpu" and not suspect.any():  # a CPU reads the flag at no cost; a GPU would wait for it
        return plain
    peak = flat.abs().amax(-1)
    scale = torch.where(suspect & (peak > 0) & torch.isfinite(peak), peak, torch.ones_like(peak))
    return torch.where(suspect, (flat / scale.unsqueeze(-1)).norm(dim=-1) * scale, plain)


def flat_l2_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm of a (B, ...) tensor (:func:`l2_norm` over all but the first dimension), shaped
    (B, 1, ..., 1) to broadcast against it."""
    return l2_norm(v.flatten(1), 1).view(-1, *([1] * (v.dim() - 1)))


def check_norm(norm: Any, name: str = "norm") -> Norm:
    """ "inf" or "2" (the numbers 2 and math.inf are accepted too)."""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        norm = {2: "2", math.inf: "inf"}.get(norm, norm)
    return check_choice(norm, name, ("inf", "2"))
