"""bounded_relu's backward ops (bounded_relu_backward, bounded_relu_backward_triton) when the incoming gradient and
the saved output have different layouts, in every dtype: called directly, and through autograd, which hands the
backward whatever layout the next operation's gradient has (an expanded gradient from out.sum(), a transposed one
from a transposed consumer, a contiguous one for a channels_last output). The comparisons of test_bounded_relu.py
give the backward a gradient shaped like the output (randn_like) only, where the kernels take their fast path."""

from __future__ import annotations

import pytest
import torch
from _bounded_relu_cases import CASES, TABLES, assert_same
from _support import require_backend

import nemesis_fast as nf
from nemesis_fast import reference
from nemesis_fast._checks import FLOAT_DTYPES
from nemesis_fast.ops import SAVES

KERNEL_CASES = [case for case in CASES if case.values[0] != "torch"]
THRESHOLDS = (1.0, 0.3)


def passing(out: torch.Tensor, t: float) -> torch.Tensor:
    """Where the gradient passes: 0 < out < t rounded to out's dtype (never at NaN)."""
    return (out > 0) & (out < reference.rounded_threshold(t, out.dtype))


def expected_backward(grad: torch.Tensor, out: torch.Tensor, t: float) -> torch.Tensor:
    return torch.where(passing(out, t), grad, torch.zeros((), dtype=grad.dtype, device=grad.device))


def with_specials(x: torch.Tensor) -> torch.Tensor:
    """x with NaN, the infinities, 0 and a value at each threshold as its first elements (x not empty)."""
    x = x.clone()
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, 1.0, 0.3], dtype=x.dtype)
    if x.numel() >= len(specials):
        x.view(-1)[: len(specials)] = specials.to(x.device)
    return x


def layout_pairs(forward, dtype: torch.dtype, t: float, device: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(grad, out) pairs of one shape whose layouts differ; out made by the forward op under test."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return (torch.randn(*shape, generator=g) * 2).to(device=device, dtype=dtype)

    def fwd(x):
        return forward(with_specials(x), t)

    out = fwd(randn(7, 13))
    return {
        "grad transposed": (randn(13, 7).t(), out),
        "grad sliced": (randn(7, 39)[:, 1::3], out),
        "grad expanded": (randn(1, 13).expand(7, 13), out),
        "grad scalar expanded": (randn(1, 1).expand(7, 13), out),
        "out transposed": (randn(7, 13), fwd(randn(13, 7)).t()),
        "out sliced": (randn(7, 13), fwd(randn(7, 26))[:, ::2]),
        "out channels_last": (randn(2, 3, 5, 7), fwd(randn(2, 5, 7, 3)).permute(0, 3, 1, 2)),
        "both sliced, other strides": (randn(14, 13)[::2], fwd(randn(7, 26))[:, 1::2]),
        "grad nan where blocked": (torch.full((7, 13), float("nan"), dtype=dtype, device=device), out),
        "empty": (randn(3, 0).t(), fwd(randn(0, 3))),
    }


@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_backward_op_takes_grad_and_out_in_any_layout(backend, device):
    require_backend(TABLES["output"], backend, device)
    suffix = "_triton" if backend == "triton" else ""
    forward = getattr(torch.ops.nemesis_fast, f"bounded_relu{suffix}")
    backward = getattr(torch.ops.nemesis_fast, f"bounded_relu_backward{suffix}")
    for dtype in FLOAT_DTYPES:
        for t in THRESHOLDS:
            for name, (grad, out) in layout_pairs(forward, dtype, t, device).items():
                assert grad.shape == out.shape, name
                if not name.startswith(("grad nan", "empty")):
                    assert grad.stride() != out.stride(), name
                got = backward(grad, out, t)
                expected = expected_backward(grad, out, t)
                assert_same(got, expected)
                assert got.stride() == torch.empty_like(out).stride(), (name, dtype)


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_gradient_when_autograd_gives_another_layout(backend, device, save):
    """The public op's gradient (both forms) when the incoming gradient's layout is not the output's."""
    require_backend(TABLES[save], backend, device)
    g = torch.Generator().manual_seed(1)
    for dtype in FLOAT_DTYPES:
        x = with_specials(torch.randn(7, 13, generator=g) * 2).to(device=device, dtype=dtype).requires_grad_(True)
        weights = torch.randn(13, 7, generator=g).to(device=device, dtype=dtype)
        channels_last = torch.randn(2, 3, 5, 7, generator=g).to(device=device, dtype=dtype)
        channels_last = channels_last.to(memory_format=torch.channels_last).requires_grad_(True)
        for t in THRESHOLDS:
            y = nf.bounded_relu(x, t, save=save, backend=backend)
            (grad,) = torch.autograd.grad(y.sum(), x)  # an expanded gradient (stride 0)
            assert_same(grad, passing(x, t).to(dtype))
            y = nf.bounded_relu(x, t, save=save, backend=backend)
            (grad,) = torch.autograd.grad((y.t() * weights).sum(), x)  # a transposed gradient
            assert_same(grad, expected_backward(weights.t(), x, t))
            y = nf.bounded_relu(channels_last, t, save=save, backend=backend)
            incoming = torch.randn(y.shape, generator=g).to(device=device, dtype=dtype)  # contiguous
            (grad,) = torch.autograd.grad(y, channels_last, incoming)
            assert_same(grad, expected_backward(incoming, channels_last, t))
