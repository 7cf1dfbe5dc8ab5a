"""bounded_relu's registered ops and backends: opcheck of both forms, torch.compile with fullgraph, the default
backend from the environment, the Triton ops' threshold bits and single kernel launch, and import with the
native extension or Triton missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _bounded_relu_cases import BITS, CASES, TABLES, masked_pair
from _support import assert_graphs_call, compile_recording_graphs, fast_backend_cases, require_backend

import nemesis_fast as nf
from nemesis_fast import reference
from nemesis_fast import triton as nf_triton
from nemesis_fast._backends.bounded_relu import BACKENDS, MASKED_BACKENDS
from nemesis_fast.ops import SAVES

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


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", fast_backend_cases())
def test_torch_compile_fullgraph(backend, device, save, monkeypatch):
    require_backend(TABLES[save], backend, device)
    torch._dynamo.reset()
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", backend)  # also covers the default backend under tracing
    compiled, graphs = compile_recording_graphs(lambda x: nf.bounded_relu(x * 2.0, 0.9, save=save) + 1.0)
    x = torch.randn(33, 17, device=device, requires_grad=True)
    expected = reference.bounded_relu(x * 2.0, 0.9) + 1.0
    actual = compiled(x)
    torch.testing.assert_close(actual, expected)
    (grad,) = torch.autograd.grad(actual.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad)
    assert_graphs_call(graphs, backend, {"output": "bounded_relu", "mask": "bounded_relu_masked"}[save])


@pytest.mark.triton
def test_torch_compile_of_the_interpreted_triton_backend_raises():
    """Under TRITON_INTERPRET=1 a traced graph would hold no kernel, and its outputs uninitialised memory."""
    require_backend(TABLES["output"], "triton", "cpu")
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: nf.bounded_relu(x, 1.0, backend="triton"), fullgraph=True)
    with pytest.raises(Exception, match="cannot trace the Triton backend under TRITON_INTERPRET=1"):
        compiled(torch.full((2, 3), 0.25))


@pytest.mark.parametrize("backend", [None, "native", "torch"])
@pytest.mark.parametrize("save", SAVES)
def test_forward_mode_ad_gives_clamps_tangent(backend, save):
    """The kernels' registrations have reverse-mode rules only; a tangent sends the call to the torch backend
    instead of being dropped (torch.func.jvp gave a zero tangent, with no error)."""
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, float("nan"), 0.25], dtype=torch.float64)
    tangent = torch.arange(1.0, 8.0, dtype=torch.float64)
    expected = torch.func.jvp(lambda v: v.clamp(0, 1), (x,), (tangent,))
    got = torch.func.jvp(lambda v: nf.bounded_relu(v, save=save, backend=backend), (x,), (tangent,))
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(got[1], torch.tensor([0, 0, 3, 0, 0, 0, 7], dtype=torch.float64), rtol=0, atol=0)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, tangent)
        out = torch.autograd.forward_ad.unpack_dual(nf.bounded_relu(dual, save=save, backend=backend)).tangent
    torch.testing.assert_close(out, got[1], rtol=0, atol=0)


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", [pytest.param(None, "cpu"), *fast_backend_cases()])
def test_torch_func_transforms_give_clamps_derivatives(backend, device, save):
    """torch.func.grad, jacrev and vmap over them: the kernels' registrations are in a form those transforms
    refuse (torch's "must override the setup_context" error), so for inputs they track or batch the call runs the
    torch backend."""
    if backend is not None:
        require_backend(TABLES[save], backend, device)
    x = torch.tensor([[-1.0, 0.0, 0.5, 1.0], [2.0, 0.25, 0.75, -0.5]], dtype=torch.float64, device=device)
    mask = torch.tensor([[0, 0, 1, 0], [0, 1, 1, 0]], dtype=torch.float64, device=device)

    def total(v):
        return nf.bounded_relu(v, save=save, backend=backend).sum()

    torch.testing.assert_close(torch.func.grad(total)(x), mask, rtol=0, atol=0)
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(total))(x), mask, rtol=0, atol=0)
    jacobian = torch.func.jacrev(lambda v: nf.bounded_relu(v, save=save, backend=backend))(x[1])
    torch.testing.assert_close(jacobian, torch.diag(mask[1]), rtol=0, atol=0)
    batched = torch.func.vmap(lambda v: nf.bounded_relu(v, 0.5, save=save, backend=backend))(x)
    torch.testing.assert_close(batched, x.clamp(0, 0.5), rtol=0, atol=0)


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", fast_backend_cases())
def test_batched_gradients_through_the_kernels(backend, device, save):
    """autograd's is_grads_batched (the attacks' Jacobians) vmaps the backward op: the output pair has batching
    rules (one call per batch, where torch's fallback called the op per slice), and the masked backward works for
    a channels_last output (its gradient was brought to the output's strides with an in-place copy, which vmap
    refuses)."""
    require_backend(TABLES[save], backend, device)
    x = torch.randn(4, 3, 5, 6, device=device).to(memory_format=torch.channels_last).requires_grad_(True)
    weights = torch.randn(3, 4, 3, 5, 6, device=device)
    y = nf.bounded_relu(x * 2, 0.75, save=save, backend=backend)
    (grads,) = torch.autograd.grad(y, x, weights, is_grads_batched=True)
    expected = torch.where((x * 2 > 0) & (x * 2 < 0.75), weights * 2, 0.0)
    torch.testing.assert_close(grads, expected, rtol=0, atol=0)
    if save == "output":
        op = BACKENDS.native if backend == "native" else BACKENDS.triton
        rows = torch.randn(5, 7, device=device)
        torch.testing.assert_close(torch.func.vmap(lambda r: op(r, 0.5), in_dims=1)(rows), rows.T.clamp(0, 0.5))


def test_the_output_pair_has_batching_rules():
    for name in ("bounded_relu", "bounded_relu_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"nemesis_fast::{name}", "FuncTorchBatched"), name


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


def test_backend_info_per_op_agrees_with_the_backends_devices():
    """Without a GPU the per-op map said every op ran on CUDA while the backends said no GPU was visible."""
    info = nf.backend_info()
    for op, backends in info["ops"].items():
        for backend, devices in backends.items():
            for device, runs in devices.items():
                assert not runs or device in info[backend]["devices"], (op, backend, device, info[backend])
    if not torch.cuda.is_available():
        assert not any(d["cuda"] for backends in info["ops"].values() for d in backends.values())
