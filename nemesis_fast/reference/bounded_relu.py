"""Reference bounded ReLU."""

from __future__ import annotations

import torch


def rounded_threshold(t: float, dtype: torch.dtype) -> float:
    """The threshold that the op uses for tensors of `dtype`: t rounded to that dtype (through float32 for
    the 16-bit types, as a C++ cast does)."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.tensor(t, dtype=wide).to(dtype).item()


def bounded_relu(x: torch.Tensor, t: float) -> torch.Tensor:
    """min(max(x, 0), t) with t rounded to x's dtype; NaN propagates.

    Gradient: 1 where 0 < x < t, 0 elsewhere (also at x = 0, x = t and NaN).
    """
    top = rounded_threshold(t, x.dtype)
    passes_gradient = (x > 0) & (x < top)
    return torch.where(passes_gradient, x, x.detach().clamp(0, top))
