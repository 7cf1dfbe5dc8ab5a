"""bounded_relu: fake kernels, autograd and the backend tables of its two forms.

BACKENDS saves the output for backward (save="output"); MASKED_BACKENDS saves a bit-packed mask, 1 bit per element
(save="mask"). Each entry is called as f(x, t) and returns the output.
"""

from __future__ import annotations

import torch

from .. import _extension
from .. import reference as _reference
from .. import triton as _triton
from .._dispatch import OpBackends
from ..reference.bounded_relu import check_backward, check_mask, dense_like, mask_bytes

_OUTPUT_WRITTEN_IN_PLACE_LOSES_GRADIENT = tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 13)


def _register_autograd(forward, backward) -> None:
    """Autograd of a (forward, backward) op pair: backward reads the saved output, never the input.

    The backward op is linear in `grad` with a mask that is piecewise constant in `out`, so its own gradient
    (for double backward) is the same op applied to the incoming gradient, and zero for `out`.
    """

    def setup_forward(ctx, inputs, output):
        ctx.t = inputs[1]
        ctx.save_for_backward(output)

    def backward_of_forward(ctx, grad):
        (out,) = ctx.saved_tensors
        return backward(grad, out, ctx.t), None

    def setup_backward(ctx, inputs, output):
        ctx.t = inputs[2]
        ctx.save_for_backward(inputs[1])

    def backward_of_backward(ctx, grad_grad):
        (out,) = ctx.saved_tensors
        return backward(grad_grad, out, ctx.t), None, None

    torch.library.register_autograd(forward, backward_of_forward, setup_context=setup_forward)
    torch.library.register_autograd(backward, backward_of_backward, setup_context=setup_backward)


def _with_strides(grad: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """grad itself when it has these (dense) strides, else a copy of it in their memory order.

    The masked backward reads grad in the memory order of the forward's output, which autograd does not keep:
    the incoming gradient may be contiguous for a channels_last output, or expanded (out.sum().backward()).
    """
    if grad.stride() == stride:
        return grad
    order = sorted(range(grad.dim()), key=lambda d: stride[d], reverse=True)  # outermost first
    # Out of place (no copy_ into a new tensor), so that it also works under vmap (is_grads_batched).
    return grad.permute(order).contiguous().permute([order.index(d) for d in range(grad.dim())])


def _register_masked_autograd(forward, backward) -> None:
    """Autograd of a masked (forward, backward) op pair: only the mask is saved, with the output's strides.

    The backward op is linear in `grad` with a fixed mask, so its own gradient (for double backward) is the same op
    applied to the incoming gradient, brought to the strides that the mask follows.
    """

    def setup_forward(ctx, inputs, output):
        out, mask = output
        ctx.stride = out.stride()
        ctx.save_for_backward(mask)
        ctx.set_materialize_grads(False)  # else autograd fills a zero gradient for the (integer) mask each time

    def backward_of_forward(ctx, grad, _grad_mask):
        if grad is None:
            return None, None
        (mask,) = ctx.saved_tensors
        return backward(_with_strides(grad, ctx.stride), mask), None

    def setup_backward(ctx, inputs, output):
        ctx.stride = inputs[0].stride()
        ctx.save_for_backward(inputs[1])

    def backward_of_backward(ctx, grad_grad):
        (mask,) = ctx.saved_tensors
        return backward(_with_strides(grad_grad, ctx.stride), mask), None

    torch.library.register_autograd(forward, backward_of_forward, setup_context=setup_forward)
    torch.library.register_autograd(backward, backward_of_backward, setup_context=setup_backward)


def _register_vmap(forward, backward) -> None:
    """Batching rules of a (forward, backward) op pair, for torch.func.vmap and autograd's is_grads_batched (the
    attacks' Jacobians), where torch's fallback calls the op once per slice. The forward is elementwise on any
    strides: one call covers the batch. The backward of batched gradients and one saved output: on CUDA one call
    with the output broadcast (expanded, not copied); on a CPU one call per slice, which measured faster there
    (the broadcast takes the kernel's strided loop, a copy of the output the allocator's fresh pages)."""

    def forward_rule(info, in_dims, x, t):
        return forward(x, t), in_dims[0]

    def backward_rule(info, in_dims, grad, out, t):
        grad_dim, out_dim = in_dims[:2]  # (t, a float, has none)
        if grad_dim is not None and out_dim is None and grad.device.type == "cuda":
            return backward(grad, out.unsqueeze(grad_dim).expand_as(grad), t), grad_dim
        grads = grad.unbind(grad_dim) if grad_dim is not None else [grad] * info.batch_size
        outs = out.unbind(out_dim) if out_dim is not None else [out] * info.batch_size
        return torch.stack([backward(g, o, t) for g, o in zip(grads, outs)]), 0

    torch.library.register_vmap(forward, forward_rule)
    torch.library.register_vmap(backward, backward_rule)


def _output_of(masked_forward):
    """The public form of a masked forward op: f(x, t) -> out, with the mask kept by autograd alone."""

    def forward(x: torch.Tensor, t: float) -> torch.Tensor:
        return masked_forward(x, t)[0]

    forward.op = masked_forward
    return forward


class _ReferenceMasked(torch.autograd.Function):
    """The reference's masked pair under autograd, as the "torch" backend of save="mask"."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: float) -> torch.Tensor:
        out, mask = _reference.bounded_relu_masked(x, t)
        ctx.stride = out.stride()
        ctx.save_for_backward(mask)
        # torch 2.11 (pytorch#180642, fixed in 2.12) compiles a zero gradient for a Function whose output was written
        # in place (out.copy_): a copy of it is given back there
        return out.clone(memory_format=torch.preserve_format) if _OUTPUT_WRITTEN_IN_PLACE_LOSES_GRADIENT else out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        # Built from differentiable torch ops, so double backward goes through it.
        return _reference.bounded_relu_masked_backward(_with_strides(grad, ctx.stride), mask), None


def _reference_masked(x: torch.Tensor, t: float) -> torch.Tensor:
    return _ReferenceMasked.apply(x, t)


native = triton = masked_native = masked_triton = None
if _extension.LOADED:

    @torch.library.register_fake("nemesis_fast::bounded_relu")
    def _(x: torch.Tensor, t: float) -> torch.Tensor:
        return torch.empty_like(x)

    @torch.library.register_fake("nemesis_fast::bounded_relu_backward")
    def _(grad: torch.Tensor, out: torch.Tensor, t: float) -> torch.Tensor:
        check_backward(grad, out)  # as the kernel checks them (t, maybe symbolic under torch.compile, is not read)
        return torch.empty_like(out)

    @torch.library.register_fake("nemesis_fast::bounded_relu_masked")
    def _(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        return dense_like(x), x.new_empty(mask_bytes(x.numel()), dtype=torch.uint8)

    @torch.library.register_fake("nemesis_fast::bounded_relu_masked_backward")
    def _(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_mask(grad, mask)
        return torch.empty_like(grad)

    native = torch.ops.nemesis_fast.bounded_relu.default
    _register_autograd(native, torch.ops.nemesis_fast.bounded_relu_backward.default)
    _register_vmap(native, torch.ops.nemesis_fast.bounded_relu_backward.default)
    masked_native = _output_of(torch.ops.nemesis_fast.bounded_relu_masked.default)
    _register_masked_autograd(masked_native.op, torch.ops.nemesis_fast.bounded_relu_masked_backward.default)

if _triton.AVAILABLE:
    from ..triton.bounded_relu import (
        bounded_relu_backward_triton,
        bounded_relu_masked_backward_triton,
        bounded_relu_masked_triton,
        bounded_relu_triton,
    )

    triton = bounded_relu_triton
    _register_autograd(bounded_relu_triton, bounded_relu_backward_triton)
    _register_vmap(bounded_relu_triton, bounded_relu_backward_triton)
    masked_triton = _output_of(bounded_relu_masked_triton)
    _register_masked_autograd(bounded_relu_masked_triton, bounded_relu_masked_backward_triton)

BACKENDS = OpBackends("bounded_relu", native=native, triton=triton, torch=_reference.bounded_relu)
MASKED_BACKENDS = OpBackends("bounded_relu_masked", native=masked_native, triton=masked_triton, torch=_reference_masked)
