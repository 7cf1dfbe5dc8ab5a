"""Triton kernels of bounded_relu and its backward, as the ops nemesis_fast::bounded_relu_triton and
nemesis_fast::bounded_relu_backward_triton.

The threshold reaches the kernels as the integer bit pattern of t rounded to the element type, and the kernel
bitcasts it back: a Python float argument would reach the kernel as float32 (Triton's default signature type for
floats), which rounds a float64 threshold, and a tensor holding it would cost a fill kernel per call.
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._common import as_dense, launch

BLOCK = 4096
NUM_WARPS = 8


def threshold_bits(t: float, dtype: torch.dtype) -> int:
    """The bit pattern of t rounded to `dtype` (through float32 for the 16-bit types, as a C++ cast does), as a
    non-negative integer, for a finite t > 0. Pure Python, so that it also runs while torch.compile traces."""
    if dtype == torch.float64:
        return struct.unpack("<q", struct.pack("<d", t))[0]
    try:
        single = struct.unpack("<I", struct.pack("<f", t))[0]
    except OverflowError:  # t rounds past float32's largest value: to infinity, as the C++ cast does
        single = 0x7F800000
    if dtype == torch.float32:
        return single
    if dtype == torch.bfloat16:  # c10's conversion: round to nearest, ties to even, on the upper 16 bits
        return (single + 0x7FFF + ((single >> 16) & 1)) >> 16
    try:
        return struct.unpack("<H", struct.pack("<e", struct.unpack("<f", struct.pack("<I", single))[0]))[0]
    except OverflowError:  # beyond float16's range: infinity
        return 0x7C00


@triton.jit
def _threshold(top_bits, dtype: tl.constexpr):
    """The threshold of elements of `dtype` from its bit pattern (an integer argument, maybe a constexpr 1)."""
    if dtype == tl.float64:
        return tl.cast(tl.cast(top_bits, tl.int64), tl.float64, bitcast=True)
    elif dtype == tl.float32:
        return tl.cast(tl.cast(top_bits, tl.int32), tl.float32, bitcast=True)
    else:
        return tl.cast(tl.cast(top_bits, tl.int16), dtype, bitcast=True)


@triton.jit
def _forward_kernel(x_ptr, out_ptr, top_bits, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    top = _threshold(top_bits, x_ptr.dtype.element_ty)
    # NaN fails both comparisons and passes through.
    y = tl.where(x < 0, tl.zeros_like(x), tl.where(x > top, top, x))
    tl.store(out_ptr + offsets, y, mask=mask)


@triton.jit
def _backward_kernel(grad_ptr, out_ptr, grad_in_ptr, top_bits, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    grad = tl.load(grad_ptr + offsets, mask=mask)
    out = tl.load(out_ptr + offsets, mask=mask)
    top = _threshold(top_bits, out_ptr.dtype.element_ty)
    y = tl.where((out > 0) & (out < top), grad, tl.zeros_like(grad))
    tl.store(grad_in_ptr + offsets, y, mask=mask)


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


@triton_op("nemesis_fast::bounded_relu_triton", mutates_args=())
def bounded_relu_triton(x: torch.Tensor, t: float) -> torch.Tensor:
    x = as_dense(x)
    out = torch.empty_like(x)
    n = x.numel()
    if n > 0:
        launch(_forward_kernel, _grid(n), x, out, threshold_bits(t, x.dtype), n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


@triton_op("nemesis_fast::bounded_relu_backward_triton", mutates_args=())
def bounded_relu_backward_triton(grad: torch.Tensor, out: torch.Tensor, t: float) -> torch.Tensor:
    out = as_dense(out)
    # The kernel walks both tensors in memory order, so grad must share out's layout.
    grad = grad if grad.stride() == out.stride() else torch.empty_like(out).copy_(grad)
    grad_in = torch.empty_like(out)
    n = out.numel()
    if n > 0:
        launch(
            _backward_kernel,
            _grid(n),
            grad,
            out,
            grad_in,
            threshold_bits(t, out.dtype),
            n,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
    return grad_in
