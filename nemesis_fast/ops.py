"""The public functional ops. Each checks its arguments, then runs on the backend chosen per call."""

from __future__ import annotations

import torch

from ._backends import bounded_relu as _bounded_relu
from ._checks import FLOAT_DTYPES, check_positive, check_tensor
from .reference import rounded_threshold

_SMALLEST_NORMAL = {d: torch.finfo(d).smallest_normal for d in FLOAT_DTYPES}


def bounded_relu(x: torch.Tensor, t: float = 1.0, *, backend: str | None = None) -> torch.Tensor:
    """Bounded ReLU, f_t(x) = min(max(x, 0), t), elementwise.

    Args:
        x: a float16, bfloat16, float32 or float64 tensor of any shape and strides.
        t: the upper bound, a finite number > 0 (the paper uses t = 1). It is rounded to x's dtype.
        backend: None (automatic: the compiled kernel, then Triton on CUDA, then torch), "native",
            "triton" or "torch". NEMESIS_FAST_BACKEND sets the default.

    Returns:
        A tensor of x's shape, dtype and layout. NaN propagates. The gradient is 1 where 0 < x < t and 0
        elsewhere; backward keeps only the output, which the next layer keeps anyway.
    """
    check_tensor(x, "x")
    t = check_positive(t, "t")
    if t < _SMALLEST_NORMAL[x.dtype] and rounded_threshold(t, x.dtype) == 0:
        raise ValueError(f"t={t} rounds to 0 in {x.dtype}; use a larger t")
    return _bounded_relu.BACKENDS.select(x.device, backend)(x, t)
