"""Reference bounded ReLU, and its masked variant (backward from a bit-packed mask instead of the output)."""

from __future__ import annotations

import math
import struct

import torch

from .._checks import FLOAT_DTYPES


def rounded_threshold(t: float, dtype: torch.dtype) -> float:
    """The threshold that the op uses for tensors of `dtype`: t rounded to that dtype (through float32 for
    the 16-bit types, as a C++ cast does), to nearest, ties to even.

    In plain Python, with no tensor: so that tracers (torch.export, the ONNX exporter) see a constant.
    """
    if dtype == torch.float64:
        return float(t)
    try:
        (bits,) = struct.unpack("<I", struct.pack("<f", t))  # float32, rounded to nearest even
    except OverflowError:  # beyond float32's largest finite value once rounded
        bits = 0x7F800000 if t > 0 else 0xFF800000
    if dtype == torch.bfloat16:
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    (value,) = struct.unpack("<f", struct.pack("<I", bits))
    if dtype == torch.float16:
        try:
            (value,) = struct.unpack("<e", struct.pack("<e", value))
        except OverflowError:  # beyond float16's largest finite value once rounded
            value = math.copysign(math.inf, value)
    return value


def bounded_relu(x: torch.Tensor, t: float) -> torch.Tensor:
    """min(max(x, 0), t) with t rounded to x's dtype: 0 where x < 0, t where x > t, else x itself (so NaN propagates
    and -0.0 keeps its sign, on every device: torch's clamp gives +0.0 for -0.0 on CUDA, -0.0 on the CPU).

    Gradient: 1 where 0 < x < t, 0 elsewhere (also at x = 0, x = t and NaN).
    """
    top = rounded_threshold(t, x.dtype)
    passes_gradient = (x > 0) & (x < top)
    value = x.detach()
    bounded = torch.where(value < 0, 0.0, torch.where(value > top, top, value))
    return torch.where(passes_gradient, x, bounded)


# The masked variant. Its mask holds 1 bit per element, ceil(n / 8) uint8 bytes: bit j of byte k is 1 where element
# 8k + j of the output, counted in memory order, passes the gradient (0 < x < t); the bits past the last element
# are 0. The output has x's layout when x is dense (gap-free and non-overlapping in some dimension order), else it
# is contiguous; the backward reads the gradient in the same memory order, so it must be given the output's strides.


def mask_bytes(n: int) -> int:
    """The size of the mask of n elements: ceil(n / 8) bytes."""
    return (n + 7) // 8


def is_dense(x: torch.Tensor) -> bool:
    """Whether x is gap-free and non-overlapping in some dimension order, as C++'s is_non_overlapping_and_dense
    decides it (an empty tensor is dense; dimensions of size 1 do not count): exactly when torch.empty_like keeps
    its strides."""
    if x.numel() == 0:
        return True
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(x.shape, x.stride()) if s >= 2), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def dense_like(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of x's shape and dtype: with x's strides when x is dense, else contiguous."""
    return torch.empty_like(x, memory_format=torch.preserve_format if is_dense(x) else torch.contiguous_format)


def memory_order(x: torch.Tensor) -> list[int]:
    """The dimensions of a dense tensor from the outermost in memory to the innermost: x.permute(order) is
    contiguous, so its elements in logical order are x's elements in memory order."""
    return sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)


def pack_mask(bits: torch.Tensor) -> torch.Tensor:
    """A 1-D bool tensor of n bits as ceil(n / 8) uint8 bytes, bit j of byte k from bits[8k + j]; 0 past the end."""
    n = bits.numel()
    padded = torch.zeros(8 * mask_bytes(n), dtype=torch.uint8, device=bits.device)
    padded[:n] = bits
    weights = torch.tensor([1 << j for j in range(8)], dtype=torch.uint8, device=bits.device)
    return (padded.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def unpack_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    """The first n bits of a mask as a 1-D bool tensor, the inverse of pack_mask."""
    shifts = torch.arange(8, dtype=torch.uint8, device=mask.device)
    return ((mask.view(-1, 1) >> shifts) & 1).view(-1)[:n].bool()


_SMALLEST_NORMAL = {d: torch.finfo(d).smallest_normal for d in FLOAT_DTYPES}


def rounds_to_zero(t: float, dtype: torch.dtype) -> bool:
    """Whether a threshold t > 0 is 0 once rounded to `dtype` (only a t below its smallest normal can be: the
    rounding itself is then computed, so that calls with an ordinary t cost a comparison)."""
    return t < _SMALLEST_NORMAL[dtype] and rounded_threshold(t, dtype) == 0


def check_threshold(t: float, dtype: torch.dtype) -> None:
    """ValueError unless t is a finite number > 0 that stays > 0 rounded to `dtype`, with the compiled kernels'
    messages (a t traced symbolically is checked where it is known)."""
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"nemesis_fast: t must be a finite number > 0, got {t}")
    if isinstance(t, float) and rounds_to_zero(t, dtype):
        raise ValueError(f"nemesis_fast: t={t} rounds to 0 in {dtype}; use a larger t")


def check_backward(grad: torch.Tensor, out: torch.Tensor) -> None:
    """The checks of the backward's tensors (grad and the forward's output), with the compiled kernels' messages."""
    for name, tensor in (("grad", grad), ("out", out)):
        if tensor.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"nemesis_fast: {name} must be a float16, bfloat16, float32 or float64 tensor, got {tensor.dtype}"
            )
    if grad.dtype != out.dtype:
        raise TypeError(f"nemesis_fast: grad and out must have the same dtype, got {grad.dtype} and {out.dtype}")
    if grad.device != out.device:
        raise ValueError(f"nemesis_fast: grad and out must be on the same device, got {grad.device} and {out.device}")
    if grad.shape != out.shape:
        raise ValueError(
            f"nemesis_fast: grad and out must have the same shape, got {tuple(grad.shape)} and {tuple(out.shape)}"
        )


def check_mask(grad: torch.Tensor, mask: torch.Tensor) -> None:
    """The checks of the masked backward's arguments, with the messages of the compiled kernels."""
    if grad.dtype not in FLOAT_DTYPES:
        raise TypeError(f"nemesis_fast: grad must be a float16, bfloat16, float32 or float64 tensor, got {grad.dtype}")
    if not is_dense(grad):
        raise ValueError(
            "nemesis_fast: grad must be dense (gap-free and non-overlapping, with the strides of the forward's "
            f"output, whose memory order the mask follows); got shape {tuple(grad.shape)} and strides {grad.stride()}"
        )
    if mask.dtype != torch.uint8:
        raise TypeError(f"nemesis_fast: mask must be a uint8 tensor, got {mask.dtype}")
    if mask.device != grad.device:
        raise ValueError(f"nemesis_fast: mask and grad must be on the same device, got {mask.device} and {grad.device}")
    expected = mask_bytes(grad.numel())
    if mask.dim() != 1 or mask.numel() != expected:
        raise ValueError(
            f"nemesis_fast: mask must be 1-D with ceil({grad.numel()} / 8) = {expected} bytes (one bit per element "
            f"of grad), got shape {tuple(mask.shape)}"
        )


def bounded_relu_masked(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, mask): out = bounded_relu(x, t) in the layout described above, and its bit-packed gradient mask."""
    top = rounded_threshold(t, x.dtype)
    out = dense_like(x)
    out.copy_(bounded_relu(x.detach(), t))
    passes = (x.detach() > 0) & (x.detach() < top)
    return out, pack_mask(passes.permute(memory_order(out)).reshape(-1))


def bounded_relu_masked_backward(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """grad where the mask's bit is set, else 0 (also where grad is NaN), read in grad's memory order.

    Differentiable in grad (it is linear in it), so that double backward works through it.
    """
    check_mask(grad, mask)
    order = memory_order(grad)
    bits = unpack_mask(mask, grad.numel()).view([grad.shape[d] for d in order])
    bits = bits.permute([order.index(d) for d in range(grad.dim())])  # back to logical order, grad's strides
    return torch.where(bits, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
