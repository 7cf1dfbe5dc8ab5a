"""bounded_relu: fake kernels, autograd (which saves only the output), and the backend table."""

from __future__ import annotations

import torch

from .. import _extension
from .. import reference as _reference
from .. import triton as _triton
from .._dispatch import OpBackends


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


native = triton = None
if _extension.LOADED:

    @torch.library.register_fake("nemesis_fast::bounded_relu")
    def _(x: torch.Tensor, t: float) -> torch.Tensor:
        return torch.empty_like(x)

    @torch.library.register_fake("nemesis_fast::bounded_relu_backward")
    def _(grad: torch.Tensor, out: torch.Tensor, t: float) -> torch.Tensor:
        return torch.empty_like(out)

    native = torch.ops.nemesis_fast.bounded_relu.default
    _register_autograd(native, torch.ops.nemesis_fast.bounded_relu_backward.default)

if _triton.AVAILABLE:
    from ..triton.bounded_relu import bounded_relu_backward_triton, bounded_relu_triton

    triton = bounded_relu_triton
    _register_autograd(bounded_relu_triton, bounded_relu_backward_triton)

BACKENDS = OpBackends("bounded_relu", native=native, triton=triton, torch=_reference.bounded_relu)
