"""bounded_relu on every backend against the reference, in both forms (save="output" and save="mask"), its
autograd, compile support, and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from _support import backend_device_cases, dtypes_for, fast_backend_cases, require_backend
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import nemesis_fast as nf
from nemesis_fast import reference
from nemesis_fast import triton as nf_triton
from nemesis_fast._backends.bounded_relu import BACKENDS, MASKED_BACKENDS
from nemesis_fast.bench.harness import saved_tensor_bytes
from nemesis_fast.nn import BoundedReLU, replace_relu, with_relu_gradient
from nemesis_fast.ops import SAVES
from nemesis_fast.reference.bounded_relu import mask_bytes

CASES = backend_device_cases()
TABLES = {"output": BACKENDS, "mask": MASKED_BACKENDS}
BITS = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}


def layouts(device: str) -> dict[str, torch.Tensor]:
    """Inputs of odd sizes and awkward layouts; values straddle 0 and the thresholds used below."""
    base = torch.randn(7, 13, 5, device=device) * 2
    return {
        "contiguous": base,
        "scalar": torch.tensor(0.7, device=device),
        "empty": torch.empty(0, 3, device=device),
        "transposed": base.transpose(0, 2),
        "sliced": base[:, ::3, 1:],
        "channels_last": torch.randn(2, 3, 5, 7, device=device).to(memory_format=torch.channels_last),
        "expanded": torch.randn(1, 5, device=device).expand(4, 5),
    }


def special_values(device: str) -> torch.Tensor:
    return torch.tensor([-float("inf"), -1.0, 0.0, 0.3, 0.5, 1.0, 2.0, float("inf"), float("nan")], device=device)


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def assert_same_bits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.equal(actual.contiguous().view(BITS[actual.dtype]), expected.contiguous().view(BITS[actual.dtype]))


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_forward_and_gradient_match_reference(backend, device, save):
    require_backend(TABLES[save], backend, device)
    for dtype in dtypes_for(backend, device):
        for name, x in [*layouts(device).items(), ("special", special_values(device))]:
            for t in (1.0, 0.3, 6.0):
                x = x.to(dtype).detach().requires_grad_(True)
                out = nf.bounded_relu(x, t, save=save, backend=backend)
                expected = reference.bounded_relu(x, t)
                assert_same(out, expected)
                grad_out = torch.randn_like(out)
                (grad,) = torch.autograd.grad(out, x, grad_out)
                (expected_grad,) = torch.autograd.grad(expected, x, grad_out)
                assert_same(grad, expected_grad), (name, dtype, t)
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


def neighbours(top: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The values of `dtype` just below, at and just above `top` (a value of that dtype)."""
    bits = torch.tensor([top], dtype=torch.float64).to(dtype).view(BITS[dtype])
    return torch.cat([bits - 1, bits, bits + 1]).view(dtype).to(device)


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_threshold_keeps_the_precision_of_the_dtype(backend, device, save):
    """t is rounded to x's dtype and no further: float64 thresholds that float32 cannot hold stay exact."""
    require_backend(TABLES[save], backend, device)
    for dtype in dtypes_for(backend, device):
        for t in (0.1, 1 / 3, 1 + 2**-40, 6.0, 1e-300, 3e38):
            top = reference.rounded_threshold(t, dtype)
            if top == 0 or math.isinf(top):
                continue
            x = neighbours(top, dtype, device).requires_grad_(True)
            out = nf.bounded_relu(x, t, save=save, backend=backend)
            assert_same(out, torch.stack([x[0], x[1], x[1]]).detach())
            (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
            assert grad.tolist() == [1.0, 0.0, 0.0], (dtype, t)


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", CASES)
def test_output_keeps_the_input_layout(backend, device, save):
    require_backend(TABLES[save], backend, device)
    for name, x in layouts(device).items():
        out = nf.bounded_relu(x.requires_grad_(True), save=save, backend=backend)
        if name in ("transposed", "channels_last", "contiguous"):
            assert out.stride() == x.stride(), name
        elif save == "mask" and name in ("sliced", "expanded"):
            assert out.is_contiguous(), name  # the masked kernels make a non-dense x contiguous


class CopyCounter(TorchDispatchMode):
    """Counts the ATen copies made under it."""

    def __init__(self):
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.copy_, torch.ops.aten.clone, torch.ops.aten._to_copy):
            self.copies += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend", ["native", pytest.param("triton", marks=pytest.mark.triton)])
def test_non_contiguous_input_is_copied_at_most_once(backend, save):
    require_backend(TABLES[save], backend, "cpu")
    x = torch.randn(8, 9, requires_grad=True)
    for view, most in ((x.t(), 0), (x[:, ::2], 0 if (backend, save) == ("native", "output") else 1)):
        with CopyCounter() as counter:
            nf.bounded_relu(view, save=save, backend=backend)
        assert counter.copies <= most


OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
# Triton's interpreter runs kernels as Python, which AOTAutograd cannot trace; on a GPU all checks run.
OPCHECK_UNDER_INTERPRETER = OPCHECK_ALL[:3]


@pytest.mark.parametrize("backend,device", [c for c in CASES if c.values[0] != "torch"])
def test_opcheck(backend, device):
    require_backend(BACKENDS, backend, device)
    suffix = "_triton" if backend == "triton" else ""
    checks = OPCHECK_UNDER_INTERPRETER if (backend, device) == ("triton", "cpu") else OPCHECK_ALL
    forward = getattr(torch.ops.nemesis_fast, f"bounded_relu{suffix}")
    backward = getattr(torch.ops.nemesis_fast, f"bounded_relu_backward{suffix}")
    for requires_grad in (False, True):
        x = torch.randn(5, 6, device=device, requires_grad=requires_grad)
        torch.library.opcheck(forward, (x, 0.8), test_utils=checks)
        torch.library.opcheck(forward, (x.t(), 0.8), test_utils=checks)
        out = forward(x.detach(), 0.8)
        grad = torch.randn(5, 6, device=device, requires_grad=requires_grad)
        torch.library.opcheck(backward, (grad, out, 0.8), test_utils=checks)


def masked_pair(backend: str):
    """The (forward, backward) ops of the masked form on `backend`; the reference's functions for "torch"."""
    if backend == "torch":
        return reference.bounded_relu_masked, reference.bounded_relu_masked_backward
    suffix = "_triton" if backend == "triton" else ""
    ops = torch.ops.nemesis_fast
    return getattr(ops, f"bounded_relu_masked{suffix}"), getattr(ops, f"bounded_relu_masked_backward{suffix}")


@pytest.mark.parametrize("backend,device", [c for c in CASES if c.values[0] != "torch"])
def test_opcheck_masked(backend, device):
    require_backend(MASKED_BACKENDS, backend, device)
    checks = OPCHECK_UNDER_INTERPRETER if (backend, device) == ("triton", "cpu") else OPCHECK_ALL
    forward, backward = masked_pair(backend)
    for requires_grad in (False, True):
        x = torch.randn(5, 7, device=device, requires_grad=requires_grad)
        for view in (x, x.t(), x[:, ::2], x[:0]):
            torch.library.opcheck(forward, (view, 0.8), test_utils=checks)
        channels_last = torch.randn(2, 3, 4, 5, device=device).to(memory_format=torch.channels_last)
        torch.library.opcheck(forward, (channels_last.requires_grad_(requires_grad), 0.8), test_utils=checks)
        out, mask = forward(x.detach(), 0.8)
        grad = torch.randn(5, 7, device=device, requires_grad=requires_grad)
        torch.library.opcheck(backward, (grad, mask), test_utils=checks)
        torch.library.opcheck(
            backward, (grad.detach().t().contiguous().t().requires_grad_(requires_grad), mask), test_utils=checks
        )


@pytest.mark.parametrize("backend,device", CASES)
def test_masked_ops_match_the_reference(backend, device):
    """The (out, mask) pair and the backward from the mask, element for element and bit for bit."""
    require_backend(MASKED_BACKENDS, backend, device)
    forward, backward = masked_pair(backend)
    for dtype in dtypes_for(backend, device):
        for name, x in [*layouts(device).items(), ("special", special_values(device))]:
            for t in (1.0, 0.3):
                x = x.to(dtype)
                out, mask = forward(x, t)
                expected_out, expected_mask = reference.bounded_relu_masked(x, t)
                assert_same(out, expected_out)
                assert out.stride() == expected_out.stride(), name
                assert mask.dtype == torch.uint8 and mask.shape == (mask_bytes(x.numel()),)
                assert torch.equal(mask, expected_mask), (name, dtype, t)
                grad = torch.randn_like(out)
                if grad.numel():
                    grad[(0,) * grad.dim()] = float("nan")  # where the mask blocks it, NaN becomes 0 as well
                grad_in = backward(grad, mask)
                assert grad_in.stride() == grad.stride()
                assert_same_bits(grad_in, reference.bounded_relu_masked_backward(grad, expected_mask))


def hand_packed(values: list[float], t: float) -> list[int]:
    """The mask of `values` (in memory order) packed by hand: bit j of byte k for element 8k + j."""
    return [
        sum(1 << j for j, v in enumerate(values[8 * k : 8 * k + 8]) if 0 < v < t) for k in range((len(values) + 7) // 8)
    ]


@pytest.mark.parametrize("backend,device", CASES)
def test_mask_bit_layout(backend, device):
    """Bit j of byte k is element 8k + j in memory order; the bits past the last element are 0."""
    require_backend(MASKED_BACKENDS, backend, device)
    forward, _ = masked_pair(backend)
    values = [0.5, -1.0, 0.5, 0.5, 2.0, 0.0, 0.5, float("nan"), 0.5, 1.0, 0.25]
    assert hand_packed(values, 1.0) == [0b01001101, 0b00000101]
    _, mask = forward(torch.tensor(values, device=device), 1.0)
    assert mask.tolist() == [0b01001101, 0b00000101]
    # A transposed and a channels_last tensor: memory order is the order of the underlying storage.
    storage = torch.randn(4, 5, device=device)
    _, mask = forward(storage.t(), 0.7)
    assert mask.tolist() == hand_packed(storage.flatten().tolist(), 0.7)
    x = torch.randn(2, 3, 5, 7, device=device).to(memory_format=torch.channels_last)
    _, mask = forward(x, 0.7)
    assert mask.tolist() == hand_packed(x.permute(0, 2, 3, 1).flatten().tolist(), 0.7)
    # A non-dense view is read in its logical order (it is made contiguous).
    view = storage[:, ::2]
    _, mask = forward(view, 0.7)
    assert mask.tolist() == hand_packed(view.flatten().tolist(), 0.7)


@pytest.mark.parametrize("backend,device", CASES)
def test_masked_backward_takes_the_gradient_in_any_layout(backend, device):
    """Autograd brings the incoming gradient to the output's strides, which the mask follows."""
    require_backend(MASKED_BACKENDS, backend, device)
    x = torch.randn(2, 3, 5, 7, device=device).to(memory_format=torch.channels_last).requires_grad_(True)
    out = nf.bounded_relu(x, 0.7, save="mask", backend=backend)
    expected = reference.bounded_relu(x, 0.7)
    for grad_out in (torch.randn(out.shape, device=device), torch.ones(1, device=device).expand(out.shape)):
        (grad,) = torch.autograd.grad(out, x, grad_out, retain_graph=True)
        (expected_grad,) = torch.autograd.grad(expected, x, grad_out, retain_graph=True)
        assert_same(grad, expected_grad)
    (grad,) = torch.autograd.grad(out.sum(), x)  # an expanded gradient, stride 0
    assert_same(grad, ((x > 0) & (x < 0.7)).to(x.dtype))


def saved_tensors(fn) -> list[torch.Tensor]:
    """The tensors autograd saves for backward while `fn` runs."""
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return saved


@pytest.mark.parametrize("backend,device", CASES)
def test_mask_saves_one_bit_per_element(backend, device):
    require_backend(MASKED_BACKENDS, backend, device)
    x = torch.randn(3, 5, 7, device=device, requires_grad=True)  # 105 elements: 14 bytes, the last one partial
    outputs = []
    (mask,) = saved_tensors(lambda: outputs.append(nf.bounded_relu(x, 0.7, save="mask", backend=backend)))
    assert mask.dtype == torch.uint8 and mask.shape == (14,) and mask.untyped_storage().nbytes() == 14
    for tensor in (x, outputs[0]):
        assert mask.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr()
    assert saved_tensor_bytes(lambda: nf.bounded_relu(x, 0.7, save="mask", backend=backend)) == math.ceil(105 / 8)
    if backend != "torch":  # the reference keeps what torch.where and clamp keep
        assert saved_tensor_bytes(lambda: nf.bounded_relu(x, 0.7, backend=backend)) == 105 * 4
    # Without a gradient to compute, no mask is made.
    with torch.no_grad():
        assert saved_tensors(lambda: nf.bounded_relu(x, 0.7, save="mask", backend=backend)) == []


class OpCounter(TorchDispatchMode):
    """The nemesis_fast ops called under it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "nemesis_fast":
            self.ops.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_save_mask_without_a_gradient_runs_the_plain_op():
    require_backend(MASKED_BACKENDS, "native", "cpu")
    x = torch.randn(3, 9)
    for context, requires_grad, expected in (
        (torch.no_grad, True, "bounded_relu.default"),
        (torch.enable_grad, False, "bounded_relu.default"),
        (torch.enable_grad, True, "bounded_relu_masked.default"),
    ):
        with context(), OpCounter() as counter:
            nf.bounded_relu(x.clone().requires_grad_(requires_grad), save="mask", backend="native")
        assert counter.ops == [expected]


MASKED_CHECKSUM = (
    "import hashlib\n"
    "x = torch.linspace(-2, 3, 1001)\n"
    "x = torch.cat([x, torch.tensor([0.0, -0.0, 1.0, float('nan'), -float('nan'), float('inf'), -float('inf')])])\n"
    "parts = []\n"
    "for dtype, bits in ((torch.float32, torch.int32), (torch.float64, torch.int64), (torch.float16, torch.int16)):\n"
    "    for n in (1008, 1000, 17, 15, 7):\n"
    "        out, mask = torch.ops.nemesis_fast.bounded_relu_masked(x[-n:].to(dtype), 1.0)\n"
    "        parts.append((out.view(bits).tolist(), mask.tolist()))\n"
    "checksum = hashlib.sha256(repr(parts).encode()).hexdigest()\n"
)


def test_native_masked_simd_widths_agree():
    """The AVX2 and the portable masked forward loops give the same bits (NEMESIS_FAST_CPU_SIMD=scalar selects the
    portable one), over sizes that leave each loop a remainder."""
    require_backend(MASKED_BACKENDS, "native", "cpu")
    namespace = {"torch": torch, "nf": nf}
    exec(MASKED_CHECKSUM, namespace)
    script = "import torch, nemesis_fast as nf\n" + MASKED_CHECKSUM + "print(checksum)\n"
    env = {**os.environ, "NEMESIS_FAST_CPU_SIMD": "scalar"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == namespace["checksum"]


def test_native_masked_result_does_not_depend_on_threads():
    """Several threads, each writing whole mask bytes, give what one thread gives (odd size, many tiles)."""
    require_backend(MASKED_BACKENDS, "native", "cpu")
    x = torch.randn(2 * 65536 + 13)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.nemesis_fast.bounded_relu_masked(x, 0.5)
        torch.set_num_threads(max(2, threads))
        many = torch.ops.nemesis_fast.bounded_relu_masked(x, 0.5)
    finally:
        torch.set_num_threads(threads)
    expected = reference.bounded_relu_masked(x, 0.5)
    for a, b, c in zip(one, many, expected):
        assert torch.equal(a, c) and torch.equal(b, c)
    grad = torch.randn_like(x)
    assert torch.equal(
        torch.ops.nemesis_fast.bounded_relu_masked_backward(grad, one[1]),
        reference.bounded_relu_masked_backward(grad, expected[1]),
    )


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


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", fast_backend_cases())
def test_torch_compile_fullgraph(backend, device, save, monkeypatch):
    require_backend(TABLES[save], backend, device)
    torch._dynamo.reset()
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", backend)  # also covers the default backend under tracing
    compiled = torch.compile(lambda x: nf.bounded_relu(x * 2.0, 0.9, save=save) + 1.0, fullgraph=True)
    x = torch.randn(33, 17, device=device, requires_grad=True)
    expected = reference.bounded_relu(x * 2.0, 0.9) + 1.0
    actual = compiled(x)
    torch.testing.assert_close(actual, expected)
    (grad,) = torch.autograd.grad(actual.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad)


def test_default_backend_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", "torch")
    assert BACKENDS.select(torch.device("cpu"), None) is reference.bounded_relu
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", "native")
    assert BACKENDS.select(torch.device("cpu"), None) is BACKENDS.native
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match="NEMESIS_FAST_BACKEND"):
        nf.bounded_relu(torch.ones(2))
    monkeypatch.delenv("NEMESIS_FAST_BACKEND")
    assert BACKENDS.select(torch.device("cpu"), None) is BACKENDS.native


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


def test_direct_op_calls_check_their_arguments():
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        torch.ops.nemesis_fast.bounded_relu(torch.ones(3), -1.0)
    with pytest.raises(TypeError, match="x must be a float16"):
        torch.ops.nemesis_fast.bounded_relu(torch.ones(3, dtype=torch.int32), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        torch.ops.nemesis_fast.bounded_relu_backward(torch.ones(3), torch.ones(4), 1.0)


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


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Sequential(nn.ReLU(), nn.Flatten()),
        nn.Linear(8 * 8 * 8, 10),
    )


def swap_relu_for_module(model: nn.Module, make: Callable[[], nn.Module]) -> nn.Module:
    """`model` with each nn.ReLU replaced by `make()`, in place."""
    for name, child in model.named_children():
        if isinstance(child, nn.ReLU):
            setattr(model, name, make())
        else:
            swap_relu_for_module(child, make)
    return model


def test_replace_relu_matches_a_hardtanh_model():
    torch.manual_seed(0)
    model = small_cnn()
    twin = swap_relu_for_module(small_cnn(), lambda: nn.Hardtanh(0.0, 0.5))
    twin.load_state_dict(model.state_dict())
    assert replace_relu(model, 0.5) is model
    assert sum(isinstance(m, BoundedReLU) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model(x), twin(x))
    model(x).square().sum().backward()
    twin(x).square().sum().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    assert isinstance(replace_relu(nn.ReLU(), 2.0), BoundedReLU)
    with pytest.raises(ValueError, match="t must be > 0"):
        replace_relu(small_cnn(), 0.0)


class StraightThroughBound(nn.Module):
    """min(relu(x), t) with ReLU's gradient, written with detach: the reference for BPDA through BReLU."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = torch.relu(x)
        return relu - (relu - relu.clamp_max(self.t)).detach()


def test_relu_gradient_copy_keeps_the_outputs_and_passes_relus_gradient():
    torch.manual_seed(0)
    model = replace_relu(small_cnn(), 0.5)
    bpda = with_relu_gradient(model)
    assert bpda is not model and all(m.gradient == "exact" for m in model.modules() if isinstance(m, BoundedReLU))
    assert "gradient='relu'" in repr(bpda)
    reference = swap_relu_for_module(small_cnn(), lambda: StraightThroughBound(0.5))
    reference.load_state_dict(model.state_dict())
    x = (3 * torch.randn(4, 1, 8, 8)).requires_grad_(True)  # large enough for many units to saturate
    assert torch.equal(bpda(x), model(x))
    probe = torch.randn(4, 10)
    (got,) = torch.autograd.grad((bpda(x) * probe).sum(), x)
    (expected,) = torch.autograd.grad((reference(x) * probe).sum(), x)
    (own,) = torch.autograd.grad((model(x) * probe).sum(), x)
    torch.testing.assert_close(got, expected)
    assert (got - own).abs().max() > 1e-3  # the saturated units pass gradient only through BPDA
    with pytest.raises(ValueError, match="no BoundedReLU"):
        with_relu_gradient(small_cnn())
    with pytest.raises(ValueError, match="gradient must be one of"):
        BoundedReLU(1.0, gradient="straight")


def test_backward_saves_nothing_beyond_what_relu_saves():
    activation_cases = {
        "relu": nn.ReLU(),
        "bounded": BoundedReLU(1.0),
        "bounded mask": BoundedReLU(1.0, save="mask"),
        "hardtanh": nn.Hardtanh(0.0, 1.0),
    }
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    saved = {}
    for name, activation in activation_cases.items():
        model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), activation, nn.Conv2d(8, 8, 3, padding=1))
        saved[name] = saved_tensor_bytes(lambda model=model: model(x))
    assert saved["bounded"] == saved["relu"]
    assert saved["bounded mask"] == saved["relu"] + 2 * 8 * 16 * 16 // 8  # the next conv keeps the output anyway
    assert saved["hardtanh"] == saved["relu"] + 2 * 8 * 16 * 16 * 4  # hardtanh also keeps its whole input


def test_bounded_relu_module():
    module = BoundedReLU(2.0)
    assert "t=2.0" in repr(module) and "save" not in repr(module)
    torch.testing.assert_close(module(torch.tensor([-1.0, 1.0, 3.0])), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="t must be > 0"):
        BoundedReLU(-1.0)
    masked = BoundedReLU(2.0, save="mask")
    assert "save='mask'" in repr(masked)
    x = torch.tensor([-1.0, 1.0, 3.0], requires_grad=True)
    masked(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="save must be one of"):
        BoundedReLU(1.0, save="bits")
    model = replace_relu(small_cnn(), 0.5, save="mask")
    assert all(m.save == "mask" for m in model.modules() if isinstance(m, BoundedReLU))
    with pytest.raises(ValueError, match="save must be one of"):
        replace_relu(small_cnn(), 0.5, save="outputs")


@pytest.mark.triton
def test_threshold_bits_round_like_torch():
    """The Triton ops' threshold, an integer bit pattern computed in Python, is torch's rounding of t."""
    if not nf_triton.AVAILABLE:
        pytest.skip(nf_triton.REASON)
    from nemesis_fast.triton.bounded_relu import threshold_bits

    generator = torch.Generator().manual_seed(0)
    random = (torch.rand(200, generator=generator, dtype=torch.float64) * 80 - 40).exp2().tolist()
    special = [1.0, 0.1, 1 / 3, 1 + 2**-40, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 65504.0, 65519.9, 65520.0, 1e5,
               2**-24, 2**-25, 1.5 * 2**-25, 1e-40, 1e-45, 5e-324, 3.4028234663852886e38, 3.4028235677973366e38,
               3.5e38, 1e300]  # fmt: skip
    for dtype in BITS:
        wide = torch.float64 if dtype == torch.float64 else torch.float32
        for t in special + random:
            expected = torch.tensor(t, dtype=wide).to(dtype).view(BITS[dtype]).item()
            assert threshold_bits(t, dtype) == expected, (dtype, t)


@pytest.mark.cuda
@pytest.mark.triton
def test_triton_ops_launch_one_kernel_per_call():
    """No fill kernel for the threshold: each op (contiguous tensors) is one kernel launch."""
    require_backend(MASKED_BACKENDS, "triton", "cuda")
    ops = torch.ops.nemesis_fast
    x = torch.randn(1000, device="cuda", dtype=torch.float64)
    out, mask = ops.bounded_relu_masked_triton(x, 0.3)
    calls = {
        "forward": lambda: ops.bounded_relu_triton(x, 0.3),
        "backward": lambda: ops.bounded_relu_backward_triton(x, out, 0.3),
        "masked forward": lambda: ops.bounded_relu_masked_triton(x, 0.3),
        "masked backward": lambda: ops.bounded_relu_masked_backward_triton(x, mask),
    }
    for name, call in calls.items():
        call()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
            call()
            torch.cuda.synchronize()
        kernels = [e for e in profile.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        assert len(kernels) == 1, (name, [e.name for e in kernels])


def test_nan_propagates_like_hardtanh():
    x = torch.tensor([float("nan"), 0.5])
    assert_same(nf.bounded_relu(x), F.hardtanh(x, 0.0, 1.0))


@pytest.mark.parametrize(
    "blocker,key,reason",
    [
        ("nemesis_fast._C", "native", "failed to load"),
        ("triton", "triton", "triton"),
    ],
)
def test_import_survives_a_missing_component(blocker, key, reason):
    script = f"""
import sys, warnings
sys.modules[{blocker!r}] = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch, nemesis_fast as nf
info = nf.backend_info()
assert not info[{key!r}]["available"], info[{key!r}]
assert {reason!r} in info[{key!r}]["unavailable"]["cpu"], info[{key!r}]
if {key!r} == "native":
    assert sum("native kernels unavailable" in str(w.message) for w in caught) == 1, caught
print(nf.bounded_relu(torch.tensor([-1.0, 0.5, 3.0])).tolist())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0.0, 0.5, 1.0]"
