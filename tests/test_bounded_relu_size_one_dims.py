"""A dimension of size 1 has no stride that matters: the reference's is_dense ignores it, as C++'s
is_non_overlapping_and_dense does (the docstring: "exactly when torch.empty_like keeps its strides"), so the
masked reference keeps such a layout like the kernels."""

from __future__ import annotations

import torch

import nemesis_fast as nf
from nemesis_fast._backends.bounded_relu import MASKED_BACKENDS
from nemesis_fast.reference.bounded_relu import bounded_relu_masked, is_dense


def layouts() -> list[torch.Tensor]:
    base = torch.randn(64, generator=torch.Generator().manual_seed(0))
    return [
        base[:6].as_strided((3, 1, 2), (2, 100, 1)),  # size-1 dimension with an arbitrary stride
        base[:6].as_strided((1, 3, 2), (7, 2, 1)),
        base[:6].as_strided((2, 1, 3), (1, 5, 2)),  # column-major with a size-1 dimension between
        base[:12].view(1, 3, 4).transpose(0, 1),
        base[:12].view(3, 4)[:, 1:3],  # not dense
        base[:12].view(3, 4).t(),
    ]


def test_is_dense_is_when_empty_like_keeps_the_strides():
    for x in layouts():
        assert is_dense(x) == (torch.empty_like(x).stride() == x.stride()), (x.shape, x.stride())


def test_the_masked_reference_keeps_a_layout_with_a_size_one_dimension_like_the_kernel():
    for x in layouts():
        out, mask = bounded_relu_masked(x, 0.5)
        assert torch.equal(out, x.clamp(0, 0.5))
        if is_dense(x):
            assert out.stride() == x.stride(), (x.shape, x.stride())
        if MASKED_BACKENDS.native is not None:
            native = MASKED_BACKENDS.native.op(x, 0.5)
            assert native[0].stride() == out.stride() and torch.equal(native[1], mask), (x.shape, x.stride())
        x = x.detach().requires_grad_()
        y = nf.bounded_relu(x, 0.5, save="mask", backend="torch")
        (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
        assert torch.equal(grad, ((x > 0) & (x < 0.5)).to(x.dtype))
