"""Triton kernels of bounded_relu and its backward, as the ops nemesis_fast::bounded_relu_triton and
nemesis_fast::bounded_relu_backward_triton; and of the masked pair, nemesis_fast::bounded_relu_masked_triton and
nemesis_fast::bounded_relu_masked_backward_triton (see nemesis_fast.reference.bounded_relu for the mask's layout).

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

from .._checks import check_tensor
from ..reference.bounded_relu import (
    check_backward,
    check_mask,
    check_threshold,
    is_dense,
    mask_bytes,
    rounded_threshold,
)
from . import INTERPRET
from ._common import as_dense, launch

BLOCK = 4096  # elements per program of the plain pair
BYTES = 512  # mask bytes per program of the masked pair (8 * BYTES elements)
NUM_WARPS = 8
# The CPU interpreter holds bfloat16 values as their 16-bit patterns and compares those as unsigned integers (-0.0
# and NaN above 1.0); there the kernels compare bfloat16 values in float32 (exact: each is a float32). On a GPU the
# flag is off and the kernels are as before.
COMPARE_BFLOAT16_IN_FLOAT32: tl.constexpr = tl.constexpr(INTERPRET)


_BIT_FORMATS = {torch.float64: ("<d", "<q"), torch.float32: ("<f", "<I"), torch.float16: ("<e", "<H")}


def threshold_bits(t: float, dtype: torch.dtype) -> int:
    """The bit pattern of t rounded to `dtype` (the reference's :func:`rounded_threshold`), as a non-negative
    integer, for a finite t > 0. Pure Python, so that it also runs while torch.compile traces."""
    value = rounded_threshold(t, dtype)
    if dtype == torch.bfloat16:  # a bfloat16 value: the upper half of its float32 bits
        return struct.unpack("<I", struct.pack("<f", value))[0] >> 16
    pack, unpack = _BIT_FORMATS[dtype]
    return struct.unpack(unpack, struct.pack(pack, value))[0]


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
def _comparable(v):
    """`v` as the kernels compare it: itself, or in float32 for bfloat16 under the interpreter."""
    if COMPARE_BFLOAT16_IN_FLOAT32 and (v.dtype == tl.bfloat16):
        return v.to(tl.float32)
    return v


# Each kernel takes its program's block through one of two paths: a whole block with no bounds mask, or the last,
# partial block with one. Where n is not a multiple of 16 the mask is not provably uniform over 16-byte groups, and
# a kernel with a mask on every block would move all its data in 4-byte accesses; the unmasked path keeps the
# 16-byte ones (tests/test_triton_compile.py compiles both cases).


@triton.jit
def _load(ptr, inside, FULL: tl.constexpr):
    """The values at `ptr`: all of them in a whole block, else where `inside` holds (0 elsewhere)."""
    if FULL:
        return tl.load(ptr)
    else:
        return tl.load(ptr, mask=inside, other=0)


@triton.jit
def _store(ptr, value, inside, FULL: tl.constexpr):
    """Stores `value` at `ptr`: all of it in a whole block, else where `inside` holds."""
    if FULL:
        tl.store(ptr, value)
    else:
        tl.store(ptr, value, mask=inside)


@triton.jit
def _forward_block(x_ptr, out_ptr, top_bits, offsets, n, FULL: tl.constexpr):
    x = _load(x_ptr + offsets, offsets < n, FULL)
    top = _threshold(top_bits, x_ptr.dtype.element_ty)
    x_, top_ = _comparable(x), _comparable(top)
    # NaN fails both comparisons and passes through.
    y = tl.where(x_ < 0, tl.zeros_like(x), tl.where(x_ > top_, top, x))
    _store(out_ptr + offsets, y, offsets < n, FULL)


@triton.jit
def _forward_kernel(x_ptr, out_ptr, top_bits, n, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    if start + BLOCK <= n:
        _forward_block(x_ptr, out_ptr, top_bits, offsets, n, True)
    else:
        _forward_block(x_ptr, out_ptr, top_bits, offsets, n, False)


@triton.jit
def _backward_block(grad_ptr, out_ptr, grad_in_ptr, top_bits, offsets, n, FULL: tl.constexpr):
    grad = _load(grad_ptr + offsets, offsets < n, FULL)
    out = _comparable(_load(out_ptr + offsets, offsets < n, FULL))
    top = _comparable(_threshold(top_bits, out_ptr.dtype.element_ty))
    y = tl.where((out > 0) & (out < top), grad, tl.zeros_like(grad))
    _store(grad_in_ptr + offsets, y, offsets < n, FULL)


@triton.jit
def _backward_kernel(grad_ptr, out_ptr, grad_in_ptr, top_bits, n, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    if start + BLOCK <= n:
        _backward_block(grad_ptr, out_ptr, grad_in_ptr, top_bits, offsets, n, True)
    else:
        _backward_block(grad_ptr, out_ptr, grad_in_ptr, top_bits, offsets, n, False)


@triton.jit
def _masked_forward_block(x_ptr, out_ptr, mask_ptr, top_bits, byte, n, FULL: tl.constexpr):
    # A (BYTES, 8) tile of elements in memory order: row k is mask byte k's 8 elements.
    bit = tl.arange(0, 8)
    offsets = byte[:, None] * 8 + bit[None, :]
    x = _load(x_ptr + offsets, offsets < n, FULL)
    top = _threshold(top_bits, x_ptr.dtype.element_ty)
    x_, top_ = _comparable(x), _comparable(top)
    y = tl.where(x_ < 0, tl.zeros_like(x), tl.where(x_ > top_, top, x))
    _store(out_ptr + offsets, y, offsets < n, FULL)
    # NaN and the padding (0) fail the test, so the bits past the last element are 0.
    passes = (x_ > 0) & (x_ < top_)
    packed = tl.sum(passes.to(tl.int32) << bit[None, :], axis=1).to(tl.uint8)
    _store(mask_ptr + byte, packed, byte * 8 < n, FULL)


@triton.jit
def _masked_forward_kernel(x_ptr, out_ptr, mask_ptr, top_bits, n, BYTES: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BYTES
    byte = start + tl.arange(0, BYTES)
    if (start + BYTES) * 8 <= n:
        _masked_forward_block(x_ptr, out_ptr, mask_ptr, top_bits, byte, n, True)
    else:
        _masked_forward_block(x_ptr, out_ptr, mask_ptr, top_bits, byte, n, False)


@triton.jit
def _masked_backward_block(grad_ptr, mask_ptr, grad_in_ptr, byte, n, FULL: tl.constexpr):
    bit = tl.arange(0, 8)
    offsets = byte[:, None] * 8 + bit[None, :]
    packed = _load(mask_ptr + byte, byte * 8 < n, FULL).to(tl.int32)
    passes = ((packed[:, None] >> bit[None, :]) & 1) != 0
    grad = _load(grad_ptr + offsets, offsets < n, FULL)
    _store(grad_in_ptr + offsets, tl.where(passes, grad, tl.zeros_like(grad)), offsets < n, FULL)


@triton.jit
def _masked_backward_kernel(grad_ptr, mask_ptr, grad_in_ptr, n, BYTES: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BYTES
    byte = start + tl.arange(0, BYTES)
    if (start + BYTES) * 8 <= n:
        _masked_backward_block(grad_ptr, mask_ptr, grad_in_ptr, byte, n, True)
    else:
        _masked_backward_block(grad_ptr, mask_ptr, grad_in_ptr, byte, n, False)


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


@triton_op("nemesis_fast::bounded_relu_triton", mutates_args=())
def bounded_relu_triton(x: torch.Tensor, t: float) -> torch.Tensor:
    check_tensor(x, "x")
    check_threshold(t, x.dtype)
    x = as_dense(x)
    out = torch.empty_like(x)
    n = x.numel()
    if n > 0:
        launch(_forward_kernel, _grid(n), x, out, threshold_bits(t, x.dtype), n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


@triton_op("nemesis_fast::bounded_relu_backward_triton", mutates_args=())
def bounded_relu_backward_triton(grad: torch.Tensor, out: torch.Tensor, t: float) -> torch.Tensor:
    check_backward(grad, out)
    check_threshold(t, out.dtype)
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


@triton_op("nemesis_fast::bounded_relu_masked_triton", mutates_args=())
def bounded_relu_masked_triton(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor(x, "x")
    check_threshold(t, x.dtype)
    x = x if is_dense(x) else x.contiguous()  # the layout rule of the native op
    out = torch.empty_like(x)
    n = x.numel()
    mask = torch.empty(mask_bytes(n), dtype=torch.uint8, device=x.device)
    if n > 0:
        grid = (triton.cdiv(n, 8 * BYTES),)
        launch(
            _masked_forward_kernel, grid, x, out, mask, threshold_bits(t, x.dtype), n, BYTES=BYTES, num_warps=NUM_WARPS
        )
    return out, mask


@triton_op("nemesis_fast::bounded_relu_masked_backward_triton", mutates_args=())
def bounded_relu_masked_backward_triton(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    check_mask(grad, mask)
    mask = mask.contiguous()
    grad_in = torch.empty_like(grad)
    n = grad.numel()
    if n > 0:
        grid = (triton.cdiv(n, 8 * BYTES),)
        launch(_masked_backward_kernel, grid, grad, mask, grad_in, n, BYTES=BYTES, num_warps=NUM_WARPS)
    return grad_in
