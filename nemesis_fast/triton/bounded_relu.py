"""Triton kernels of bounded_relu and its backward, as the ops nemesis_fast::bounded_relu_triton and
nemesis_fast::bounded_relu_backward_triton."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..reference.bounded_relu import rounded_threshold
from ._common import as_dense, launch

BLOCK = 4096
NUM_WARPS = 8


@triton.jit
def _forward_kernel(x_ptr, out_ptr, top_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    top = tl.load(top_ptr)
    # NaN fails both comparisons and passes through.
    y = tl.where(x < 0, tl.zeros_like(x), tl.where(x > top, top, x))
    tl.store(out_ptr + offsets, y, mask=mask)


@triton.jit
def _backward_kernel(grad_ptr, out_ptr, grad_in_ptr, top_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    grad = tl.load(grad_ptr + offsets, mask=mask)
    out = tl.load(out_ptr + offsets, mask=mask)
    top = tl.load(top_ptr)
    y = tl.where((out > 0) & (out < top), grad, tl.zeros_like(grad))
    tl.store(grad_in_ptr + offsets, y, mask=mask)


def _threshold_tensor(t: float, like: torch.Tensor) -> torch.Tensor:
    # A one-element tensor, not a kernel scalar: Triton passes Python floats as float32, which would
    # round a float64 threshold.
    return torch.full((1,), rounded_threshold(t, like.dtype), dtype=like.dtype, device=like.device)


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


@triton_op("nemesis_fast::bounded_relu_triton", mutates_args=())
def bounded_relu_triton(x: torch.Tensor, t: float) -> torch.Tensor:
    x = as_dense(x)
    out = torch.empty_like(x)
    n = x.numel()
    if n > 0:
        launch(_forward_kernel, _grid(n), x, out, _threshold_tensor(t, x), n, BLOCK=BLOCK, num_warps=NUM_WARPS)
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
            _threshold_tensor(t, out),
            n,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
    return grad_in
