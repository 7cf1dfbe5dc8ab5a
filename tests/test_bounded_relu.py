"""bounded_relu on every backend against the reference, in both forms (save="output" and save="mask"): outputs and
gradients bit for bit, the threshold's rounding, the output's layout, the copies made, gradcheck. (The mask form's
own ops: test_bounded_relu_mask.py; opcheck, compile support and the backends: test_bounded_relu_ops.py; bad
input: test_bounded_relu_input.py; the nn modules: test_bounded_relu_modules.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _bounded_relu_cases import BITS, CASES, TABLES, assert_same, assert_same_bits, layouts, special_values
from _support import require_backend

import nemesis_fast as nf
from nemesis_fast import reference
from nemesis_fast._checks import FLOAT_DTYPES
from nemesis_fast.ops import SAVES


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_forward_and_gradient_match_reference(backend, device, save):
    require_backend(TABLES[save], backend, device)
    if (backend, save) == ("torch", "output"):  # the reference itself: nothing else to compare
        assert TABLES[save].torch is reference.bounded_relu
        return
    for dtype in FLOAT_DTYPES:
        for x in [*layouts(device).values(), special_values(device)]:
            for t in (1.0, 0.3, 6.0):
                x = x.to(dtype).detach().requires_grad_(True)
                out = nf.bounded_relu(x, t, save=save, backend=backend)
                expected = reference.bounded_relu(x, t)
                assert_same(out, expected)
                grad_out = torch.randn_like(out)
                (grad,) = torch.autograd.grad(out, x, grad_out)
                (expected_grad,) = torch.autograd.grad(expected, x, grad_out)
                assert_same(grad, expected_grad)
                if save == "mask":  # the same gradient as save="output", bit for bit
                    (output_grad,) = torch.autograd.grad(nf.bounded_relu(x, t, backend=backend), x, grad_out)
                    assert_same_bits(grad, output_grad)


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_boundaries_follow_the_subgradient_convention(backend, device, save):
    require_backend(TABLES[save], backend, device)
    x = special_values(device).requires_grad_(True)
    out = nf.bounded_relu(x, 1.0, save=save, backend=backend)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.3, 0.5, 1.0, 1.0, 1.0, float("nan")], device=device)
    assert_same(out, expected)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert grad.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_negative_zero_keeps_its_sign(backend, device, save):
    """-0.0 is neither below 0 nor above t, so it passes through as -0.0, as in the reference, in every dtype, in
    the kernels' vector loops and their tails (21 elements); a negative x gives +0.0; no zero passes the gradient
    (save="mask": its bit is 0). Compared by bits: assert_same takes -0.0 for +0.0, and the 16-bit kernels clamped
    -0.0 to +0.0 unseen. The expected value is the reference's on the CPU (the reference on CUDA is backend "torch",
    one of the cases: it once took torch's clamp, which gives +0.0 for -0.0 on CUDA)."""
    require_backend(TABLES[save], backend, device)
    values = [-0.0, 0.0] * 9 + [-0.0, -1.0, 0.5]
    for dtype in FLOAT_DTYPES:
        x = torch.tensor(values, dtype=dtype, device=device, requires_grad=True)
        out = nf.bounded_relu(x, 1.0, save=save, backend=backend)
        expected = reference.bounded_relu(x.detach().cpu(), 1.0)
        assert torch.signbit(expected).tolist() == [True, False] * 9 + [True, False, False]
        assert_same_bits(out.detach().cpu(), expected)
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
        assert grad.tolist() == [0.0] * 20 + [1.0], (dtype, save)


def test_the_reference_keeps_negative_zero_whatever_clamp_does(monkeypatch):
    """The reference is the specification on every device: torch's clamp and clamp_min give +0.0 for -0.0 on CUDA
    (torch 2.11), -0.0 on the CPU. Made to behave as on CUDA here, they must not change the reference's bits."""
    originals = {name: getattr(torch.Tensor, name) for name in ("clamp", "clamp_min", "clamp_max")}
    for name, method in originals.items():
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _m=method, **k: _m(self, *a, **k) + 0.0)
    x = torch.tensor([-0.0, 0.0, -1.0, 0.5, 2.0, math.nan])
    assert torch.signbit(torch.Tensor.clamp(x, 0.0, 1.0))[0].item() is False  # the stand-in turns -0.0 into +0.0
    out = reference.bounded_relu(x, 1.0)
    assert torch.signbit(out).tolist() == [True, False, False, False, False, torch.signbit(x[5]).item()]
    assert out[:5].tolist() == [0.0, 0.0, 0.0, 0.5, 1.0] and out[5].isnan()


def test_the_reference_with_a_threshold_beyond_the_dtypes_range_bounds_nothing():
    """A t past the dtype's largest finite value rounds to inf: the reference is then ReLU, inf and NaN kept (it
    bounds by the rounded threshold, never converting t itself, which overflows float32)."""
    for dtype, t in ((torch.float16, 1e5), (torch.bfloat16, 1e39), (torch.float32, 1e39)):
        assert math.isinf(reference.rounded_threshold(t, dtype))
        x = torch.tensor([-1.0, -0.0, 0.5, 6e4, math.inf, math.nan], dtype=dtype)
        expected = torch.tensor([0.0, -0.0, 0.5, 6e4, math.inf, math.nan], dtype=dtype)
        assert_same_bits(reference.bounded_relu(x, t), expected)


def neighbours(top: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The values of `dtype` just below, at and just above `top` (a value of that dtype)."""
    bits = torch.tensor([top], dtype=torch.float64).to(dtype).view(BITS[dtype])
    return torch.cat([bits - 1, bits, bits + 1]).view(dtype).to(device)


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_threshold_keeps_the_precision_of_the_dtype(backend, device, save):
    """t is rounded to x's dtype and no further: float64 thresholds that float32 cannot hold stay exact."""
    require_backend(TABLES[save], backend, device)
    for dtype in FLOAT_DTYPES:
        for t in (0.1, 1 / 3, 1 + 2**-40, 6.0, 1e-300, 3e38):
            top = reference.rounded_threshold(t, dtype)
            if top == 0 or math.isinf(top):
                continue
            x = neighbours(top, dtype, device).requires_grad_(True)
            out = nf.bounded_relu(x, t, save=save, backend=backend)
            assert_same(out, torch.stack([x[0], x[1], x[1]]).detach())
            (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
            assert grad.tolist() == [1.0, 0.0, 0.0], (dtype, t)


def test_native_result_does_not_depend_on_threads():
    """The dense forward and backward loops split the elements over threads, in chunks of at least 2**15: with
    several threads each chunk must read its own part of x (forward) and of out (backward). Odd size, every dtype."""
    require_backend(TABLES["output"], "native", "cpu")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * 65536 + 13, generator=generator) * 2
    grad = torch.randn(x.shape, generator=generator)
    threads = torch.get_num_threads()
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            for dtype in FLOAT_DTYPES:
                xd, gd = x.to(dtype), grad.to(dtype)
                out = torch.ops.nemesis_fast.bounded_relu(xd, 0.5)
                assert_same_bits(out, reference.bounded_relu(xd, 0.5))
                passes = (xd > 0) & (xd < reference.rounded_threshold(0.5, dtype))
                grad_in = torch.ops.nemesis_fast.bounded_relu_backward(gd, out, 0.5)
                assert_same_bits(grad_in, torch.where(passes, gd, torch.zeros((), dtype=dtype))), (count, dtype)
    finally:
        torch.set_num_threads(threads)


def test_rounded_threshold_is_the_dtype_conversion():
    """rounded_threshold rounds in plain Python (so tracers see a constant); it must be torch's conversion through
    float32 (float64 for float64): to nearest, ties to even, overflow to inf, underflow through subnormals."""
    generator = torch.Generator().manual_seed(0)
    logs = torch.empty(4000, dtype=torch.float64).uniform_(-48.0, 39.0, generator=generator)
    values = [10.0**v for v in logs.tolist()]
    values += [1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-24, 1 + 3 * 2**-24, 0.1, 1 / 3]  # ties
    values += [65504.0, 65519.99, 65520.0, 2.0**-24, 2.0**-25, 2.0**-149, 2.0**-150, 3.4028235677973366e38, 1e300]
    for t in values + [-v for v in values]:
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            wide = torch.float64 if dtype == torch.float64 else torch.float32
            assert reference.rounded_threshold(t, dtype) == torch.tensor(t, dtype=wide).to(dtype).item(), (t, dtype)


def test_an_onnx_export_runs_the_torch_backend(monkeypatch):
    """The exporters cannot take the kernels' ops: under torch.onnx's export the op runs its torch backend."""
    x = torch.randn(3, 5, requires_grad=True)
    assert "Where" not in nf.bounded_relu(x, 0.5, backend="native").grad_fn.name()
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert "Where" not in nf.bounded_relu(x, 0.5, backend="native").grad_fn.name()  # (asked only while tracing)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)  # as the TorchScript-based exporter traces
    out = nf.bounded_relu(x, 0.5, backend="native")
    assert "Where" in out.grad_fn.name() and torch.equal(out, x.clamp(0, 0.5))


def test_a_brelu_model_exports_to_onnx_with_the_same_outputs():
    pytest.importorskip("onnxscript")
    import onnx.reference

    from nemesis_fast.models import mnist_cnn
    from nemesis_fast.nn import to_hardtanh

    torch.manual_seed(0)
    model = mnist_cnn(activation="brelu", t=0.5).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x).numpy()
    for exported_model, clip_only in ((model, False), (to_hardtanh(model), True)):
        program = torch.onnx.export(exported_model, (x,), dynamo=True, verbose=False)
        operators = {node.op_type for node in program.model_proto.graph.node}
        assert ("Clip" in operators) == clip_only and ("Where" not in operators) == clip_only, operators
        session = onnx.reference.ReferenceEvaluator(program.model_proto)
        (got,) = session.run(None, {session.input_names[0]: x.numpy()})
        assert abs(got - expected).max() < 1e-5


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_output_keeps_the_input_layout(backend, device, save):
    require_backend(TABLES[save], backend, device)
    for name, x in layouts(device).items():
        out = nf.bounded_relu(x.requires_grad_(True), save=save, backend=backend)
        assert out.shape == x.shape and out.dtype == x.dtype, name
        if name in ("sliced", "expanded"):  # not dense: the layout torch.empty_like gives such an x, contiguous
            assert out.is_contiguous() and out.stride() == torch.empty_like(x).stride(), name
        else:
            assert out.stride() == x.stride(), name


def copies_made(run) -> int:
    """The ATen copies `run()` makes, counted by the profiler: those inside a C++ kernel or a Triton op's body too,
    which a dispatch mode around the op's call does not see."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    return sum(event.name == "aten::copy_" for event in profile.events())


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend", ["native", pytest.param("triton", marks=pytest.mark.triton)])
def test_non_contiguous_input_is_copied_at_most_once(backend, save, monkeypatch):
    require_backend(TABLES[save], backend, "cpu")
    if backend == "triton":  # the op's own copies: Triton's CPU interpreter copies every argument to run a kernel
        monkeypatch.setattr("nemesis_fast.triton.bounded_relu.launch", lambda *args, **kwargs: None)
    x = torch.randn(8, 9, requires_grad=True)
    assert copies_made(lambda: x.t().contiguous()) == 1  # the count sees a copy
    for view, most in ((x.t(), 0), (x[:, ::2], 0 if (backend, save) == ("native", "output") else 1)):
        assert copies_made(lambda v=view: nf.bounded_relu(v, save=save, backend=backend)) <= most


def away_from_kinks(device: str, t: float) -> torch.Tensor:
    """float64 points at least 0.05 from 0 and t, where finite differences see a smooth function."""
    x = torch.linspace(-1.0, t + 1.0, 41, dtype=torch.float64, device=device)
    x = x[((x.abs() > 0.05) & ((x - t).abs() > 0.05))]
    return x.reshape(-1, 1).expand(-1, 3).clone().requires_grad_(True)


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_gradcheck_and_gradgradcheck_float64(backend, device, save):
    require_backend(TABLES[save], backend, device)
    x = away_from_kinks(device, 0.7)
    assert torch.autograd.gradcheck(lambda v: nf.bounded_relu(v, 0.7, save=save, backend=backend), (x,))
    assert torch.autograd.gradgradcheck(lambda v: nf.bounded_relu(v, 0.7, save=save, backend=backend), (x,))


def test_nan_propagates_like_hardtanh():
    x = torch.tensor([float("nan"), 0.5])
    assert_same(nf.bounded_relu(x), F.hardtanh(x, 0.0, 1.0))
