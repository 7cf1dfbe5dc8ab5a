"""Outputs compared bit for bit: what the Triton tiles script and the kernels' exactness tests call equal."""

from __future__ import annotations

import torch

# The integer dtype of each float dtype's width: a float tensor viewed so compares bit for bit.
SAME_WIDTH_INTEGER: dict[torch.dtype, torch.dtype] = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def same_bits(a: object, b: object) -> bool:
    """Whether two outputs (tensors, or sequences of them) hold the same bits: -0.0 is not 0.0, a NaN equals
    itself. Tensors of another dtype compare by value."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        bits = SAME_WIDTH_INTEGER.get(a.dtype)
        if bits is None:
            return torch.equal(a, b)
        return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))
    if isinstance(b, torch.Tensor):
        return False
    return len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b))
