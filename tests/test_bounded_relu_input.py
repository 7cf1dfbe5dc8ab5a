"""bounded_relu's bad input: bad arguments, input tensors and thresholds, a backend that cannot run on the device,
and the direct calls of both forms' ops (and of the fake kernel torch.compile uses)."""

from __future__ import annotations

import pytest
import torch
from _bounded_relu_cases import masked_pair
from _support import backend_device_cases, require_backend

import nemesis_fast as nf
from nemesis_fast._backends.bounded_relu import BACKENDS, MASKED_BACKENDS


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"t": 0.0}, ValueError, "t must be > 0"),
        ({"t": -1.0}, ValueError, "t must be > 0"),
        ({"t": float("nan")}, ValueError, "t must be finite"),
        ({"t": float("inf")}, ValueError, "t must be finite"),
        ({"t": "1"}, TypeError, "t must be a real number"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"save": "input"}, ValueError, "save must be one of 'output', 'mask'"),
        ({"save": None}, ValueError, "save must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nf.bounded_relu(torch.ones(3), **kwargs)


@pytest.mark.parametrize("x", [torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.complex64), [1.0]])
def test_bad_input_tensor(x):
    with pytest.raises(TypeError, match="x must"):
        nf.bounded_relu(x)


def test_threshold_that_rounds_to_zero():
    with pytest.raises(ValueError, match="rounds to 0"):
        nf.bounded_relu(torch.ones(3, dtype=torch.float16), 1e-9)


def test_backend_unavailable_for_the_device_names_the_argument():
    with pytest.raises(ValueError, match="backend='native' cannot run bounded_relu on meta tensors"):
        nf.bounded_relu(torch.ones(3, device="meta"), backend="native")


def test_a_backend_that_is_no_backend_is_refused_under_transforms_too():
    """Under vmap (and the other paths that take the torch backend) a misspelt backend was accepted silently."""
    x = torch.rand(2, 3)
    for call in (
        lambda r: nf.bounded_relu(r, 1.0, backend="bogus"),
        lambda r: nf.gaussian_augment(r, copies=1, seed=0, backend="bogus"),
    ):
        with pytest.raises(ValueError, match="backend must be one of"):
            call(x)
        with pytest.raises(ValueError, match="backend must be one of"):
            torch.func.vmap(call)(x)


def test_direct_op_calls_check_their_arguments():
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        torch.ops.nemesis_fast.bounded_relu(torch.ones(3), -1.0)
    with pytest.raises(TypeError, match="x must be a float16"):
        torch.ops.nemesis_fast.bounded_relu(torch.ones(3, dtype=torch.int32), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        torch.ops.nemesis_fast.bounded_relu_backward(torch.ones(3), torch.ones(4), 1.0)


def test_direct_op_calls_refuse_an_infinite_threshold():
    """The public function refuses t = inf and NaN in Python; the ops must refuse them too (an infinite t clamped
    nothing from above and passed the gradient of every positive element)."""
    require_backend(BACKENDS, "native", "cpu")
    ops = torch.ops.nemesis_fast
    x = torch.ones(3)
    for t in (float("inf"), float("nan")):
        for op, args in (
            (ops.bounded_relu, (x, t)),
            (ops.bounded_relu_masked, (x, t)),
            (ops.bounded_relu_backward, (x, x, t)),
        ):
            with pytest.raises(ValueError, match="t must be a finite number > 0"):
                op(*args)


def test_direct_backward_call_refuses_a_grad_of_another_shape_with_as_many_elements():
    """grad and out must have one shape, not only one number of elements."""
    require_backend(BACKENDS, "native", "cpu")
    for grad, out in ((torch.ones(3, 4), torch.ones(4, 3)), (torch.ones(12), torch.ones(3, 4))):
        with pytest.raises(ValueError, match="grad and out must have the same shape"):
            torch.ops.nemesis_fast.bounded_relu_backward(grad, out, 1.0)


@pytest.mark.parametrize("backend", ["native", pytest.param("triton", marks=pytest.mark.triton)])
def test_direct_calls_of_each_backends_op_pair_check_their_arguments(backend):
    """The Triton pair checked nothing: t = -1 gave wrong values, and a smaller grad was read past its end."""
    require_backend(BACKENDS, backend, "cpu")
    suffix = "_triton" if backend == "triton" else ""
    forward = getattr(torch.ops.nemesis_fast, f"bounded_relu{suffix}")
    backward = getattr(torch.ops.nemesis_fast, f"bounded_relu_backward{suffix}")
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        forward(torch.ones(4), -1.0)
    with pytest.raises(TypeError, match="x must (be a float16|have dtype float16)"):
        forward(torch.ones(4, dtype=torch.int32), 1.0)
    out = torch.ones(4)
    for args, error, match in [
        ((torch.ones(1), out, 1.0), ValueError, "grad and out must have the same shape"),
        ((torch.ones(4, dtype=torch.float64), out, 1.0), TypeError, "grad and out must have the same dtype"),
        ((torch.ones(4), out, 0.0), ValueError, "t must be a finite number > 0"),
        ((out.half(), out.half(), 1e-30), ValueError, r"t=1e-30 rounds to 0 in (torch.float16|Half)"),
    ]:
        with pytest.raises(error, match=match):
            backward(*args)


@pytest.mark.parametrize("backend,device", [case for case in backend_device_cases() if case.values[0] != "torch"])
@pytest.mark.parametrize("dtype,t", [(torch.float16, 1e-30), (torch.bfloat16, 1e-50), (torch.float32, 1e-50)])
def test_direct_calls_with_a_threshold_that_rounds_to_zero_are_refused(backend, device, dtype, t):
    """A t > 0 that is 0 in x's dtype: the 16-bit mask test wrapped around and passed the gradient of every nonzero
    element (NaN and negatives too) while the output was all zeros."""
    require_backend(BACKENDS, backend, device)
    suffix = "_triton" if backend == "triton" else ""
    x = torch.tensor([-2.0, 0.5, 2.0, float("nan")], dtype=dtype, device=device)
    for op in (f"bounded_relu{suffix}", f"bounded_relu_masked{suffix}"):
        with pytest.raises(ValueError, match="rounds to 0 in"):
            getattr(torch.ops.nemesis_fast, op)(x, t)


@pytest.mark.parametrize(
    "backend", ["native", pytest.param("triton", marks=pytest.mark.triton), "torch", pytest.param("fake")]
)
def test_direct_masked_op_calls_check_their_arguments(backend):
    if backend != "torch":
        require_backend(MASKED_BACKENDS, "native" if backend == "fake" else backend, "cpu")
    forward, backward = masked_pair("native" if backend == "fake" else backend)
    grad, mask = torch.ones(3, 7), torch.zeros(3, dtype=torch.uint8)
    if backend != "torch":
        with pytest.raises(ValueError, match="t must be a finite number > 0"):
            forward(grad, 0.0)
        with pytest.raises(TypeError, match="x must"):
            forward(torch.ones(3, dtype=torch.int32), 1.0)
    cases = [
        ((grad, mask.float()), TypeError, "mask must be a uint8 tensor"),
        ((grad, mask[:2]), ValueError, r"mask must be 1-D with ceil\(21 / 8\) = 3 bytes"),
        ((grad, mask.view(3, 1)), ValueError, "mask must be 1-D"),
        ((grad[:, ::2], mask[:2]), ValueError, "grad must be dense"),
        ((grad.long(), mask), TypeError, "grad must be a float16"),
        ((grad, mask.to("meta")), ValueError, "mask and grad must be on the same device"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            if backend == "fake":  # the fake kernel checks as the real one does, for torch.compile
                with torch._subclasses.fake_tensor.FakeTensorMode(allow_non_fake_inputs=True):
                    backward(*args)
            else:
                backward(*args)
