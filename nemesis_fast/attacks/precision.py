"""The numerics of images in a dtype: the spacing of its numbers, and how far images may stray outside clip."""

from __future__ import annotations

import math

import torch

# How far x may stray outside clip, in units in the last place of x's dtype at the clip bounds' magnitude: the
# rounding of bounds computed in float64 (normalised images, (x - mean) / std, against bounds computed the same way
# in Python) and of x.clamp(*clip) in x's dtype, which rounds the bounds to it.
CLIP_TOLERANCE_ULPS = 4


def spacing(magnitude: float, dtype: torch.dtype) -> float:
    """The gap between consecutive numbers of `dtype` at `magnitude` >= 0 (pixel units): its unit in the last place
    there, eps * 2^e for a magnitude in [2^e, 2^(e+1)) (torch.finfo(dtype).eps at 1; 2^-7 for bfloat16)."""
    info = torch.finfo(dtype)
    _, exponent = math.frexp(max(magnitude, info.tiny))
    return math.ldexp(info.eps, exponent - 1)


def model_input_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype in which a model sees `x`: x's own, or under torch.autocast for x's device the autocast dtype, to
    which autocast rounds float32 inputs of its matrix products and convolutions."""
    device = x.device.type
    if x.dtype == torch.float32 and torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def clip_tolerance(clip: tuple[float, float], dtype: torch.dtype) -> float:
    """How far, in pixel units, images of `dtype` may lie outside `clip` and still count as inside it:
    CLIP_TOLERANCE_ULPS units in the last place of `dtype` at the larger magnitude of the bounds."""
    return CLIP_TOLERANCE_ULPS * spacing(max(abs(clip[0]), abs(clip[1])), dtype)
