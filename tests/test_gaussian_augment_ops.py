"""gaussian_augment's registered ops: opcheck on every backend, torch.compile with fullgraph, and bad input to the
public function and to the ops called directly."""

from __future__ import annotations

import pytest
import torch
from _gaussian_augment_cases import CASES, assert_matches, call, expected, op_for
from _support import (
    assert_graphs_call,
    backend_device_cases,
    compile_recording_graphs,
    fast_backend_cases,
    require_backend,
)
from torch._dynamo.utils import counters

import nemesis_fast as nf
from nemesis_fast._backends.gaussian_augment import BACKENDS

OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
# Triton's interpreter runs kernels as Python, which AOTAutograd cannot trace; on a GPU all checks run.
# With requires_grad inputs, AOTAutograd would trace the backward, which raises by design.
OPCHECK_NO_AOT = OPCHECK_ALL[:3]


@pytest.mark.parametrize("backend,device", [c for c in CASES if c.values[0] != "torch"])
def test_opcheck(backend, device):
    require_backend(BACKENDS, backend, device)
    op = op_for(backend)
    interpreted = (backend, device) == ("triton", "cpu")
    for requires_grad in (False, True):
        checks = OPCHECK_NO_AOT if interpreted or requires_grad else OPCHECK_ALL
        x = torch.rand(3, 2, 5, device=device, requires_grad=requires_grad)
        for args in (
            (x, 2, 0.3, 0.0, 1.0, True, 11, 4, None),
            (x.transpose(1, 2), 1, 0.0, None, 0.5, False, -2, 0, torch.float64),
            (x.detach()[:0], 3, 0.3, None, None, True, 1, 0, None),
        ):
            torch.library.opcheck(op, args, test_utils=checks)
        u8 = torch.randint(0, 255, (2, 6), dtype=torch.uint8, device=device)
        torch.library.opcheck(op, (u8, 2, 0.1, 0.0, 1.0, True, 3, 0, torch.float16), test_utils=checks)


@pytest.mark.parametrize("backend,device", fast_backend_cases(reference=False))
def test_torch_compile_fullgraph(backend, device, monkeypatch):
    require_backend(BACKENDS, backend, device)
    torch._dynamo.reset()
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", backend)
    # A graph from the on-disk caches of an earlier run can come specialised to the offset it was compiled for.
    with torch._inductor.config.patch(force_disable_caches=True):
        check_compiled_gaussian_augment(backend, device)


def check_compiled_gaussian_augment(backend: str, device: str) -> None:
    def augment_and_normalise(x, offset):
        return (nf.gaussian_augment(x * 0.5, 3, 0.2, seed=21, offset=offset) - 0.5) * 2.0

    compiled, traced = compile_recording_graphs(augment_and_normalise)
    x = torch.rand(6, 3, 4, 4, device=device)
    torch.testing.assert_close(compiled(x, 5), augment_and_normalise(x, 5))
    torch.testing.assert_close(compiled(x, 6), (expected(x * 0.5, sigma=0.2, seed=21, offset=6) - 0.5) * 2.0)
    # The second offset made it a symbolic int: a third runs the same graph, not a recompiled one.
    graphs = counters["stats"]["unique_graphs"]
    torch.testing.assert_close(compiled(x, 9), (expected(x * 0.5, sigma=0.2, seed=21, offset=9) - 0.5) * 2.0)
    assert counters["stats"]["unique_graphs"] == graphs
    # The op alone, compiled: the same bits as the reference, though inductor launches a Triton kernel with FP
    # fusion on (the kernel rounds each operation itself).
    augment, augment_traced = compile_recording_graphs(
        lambda v: nf.gaussian_augment(v, 3, 0.2, None, seed=21, offset=6)
    )
    assert_matches(augment(x).cpu(), expected(x.cpu(), sigma=0.2, clip_min=None, clip_max=None, seed=21, offset=6))
    assert_graphs_call(traced + augment_traced, backend, "gaussian_augment")

    with pytest.raises(Exception, match="explicit seed"):
        torch.compile(lambda v: nf.gaussian_augment(v, 2), fullgraph=True)(x)


def test_torch_compile_of_the_torch_backend_holds_no_kernel():
    """The graph check of test_torch_compile_fullgraph can fail: the torch backend's graph calls none of the
    package's ops. Traced by Dynamo alone (inductor takes many minutes over the reference's Philox rounds)."""
    torch._dynamo.reset()
    compiled, traced = compile_recording_graphs(
        lambda v: nf.gaussian_augment(v, 3, 0.2, None, seed=21, offset=6, backend="torch"), backend="eager"
    )
    x = torch.rand(2, 3)
    assert_matches(compiled(x), expected(x, sigma=0.2, clip_min=None, clip_max=None, seed=21, offset=6))
    assert_graphs_call(traced, "torch", "gaussian_augment")


BAD_CALLS = [
    ({"copies": -1}, ValueError, "copies must be >= 0"),
    ({"copies": 2.0}, TypeError, "copies must be an int"),
    ({"sigma": -0.1}, ValueError, "sigma must be >= 0"),
    ({"sigma": float("nan")}, ValueError, "sigma must be finite"),
    ({"sigma": float("inf")}, ValueError, "sigma must be finite"),
    ({"sigma": 1e39}, ValueError, "sigma must be finite in float32"),
    ({"clip": (1.0, 0.0)}, ValueError, "clip must have low <= high"),
    ({"clip": (0.0, float("nan"))}, ValueError, r"clip\[1\] must be finite"),
    ({"clip": 1.0}, TypeError, "clip must be None or a pair"),
    ({"out_dtype": torch.uint8}, TypeError, "out_dtype=uint8 cannot hold noisy values"),
    ({"out_dtype": torch.int32}, TypeError, "out_dtype=int32 cannot hold"),
    ({"out_dtype": "float32"}, TypeError, "out_dtype must be a torch.dtype"),
    ({"out_dtype": torch.float16, "clip": (0.0, 1e6)}, ValueError, "out_dtype=float16 cannot hold clip_max"),
    ({"include_original": "no"}, TypeError, "include_original must be a bool, got str"),
    ({"offset": -1}, ValueError, "offset must be >= 0"),
    ({"seed": 2**64}, ValueError, "seed must be <="),
    ({"seed": 1.5}, TypeError, "seed must be an int"),
    ({"backend": "gpu"}, ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD_CALLS)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nf.gaussian_augment(torch.rand(2, 3), **kwargs)


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_a_forward_mode_tangent_raises_as_backward_does(backend):
    x, tangent = torch.rand(2, 3), torch.ones(2, 3)
    with pytest.raises(RuntimeError, match="has no gradient; pass x.detach"):
        torch.func.jvp(lambda v: nf.gaussian_augment(v, 1, 0.1, seed=0, backend=backend), (x,), (tangent,))


@pytest.mark.parametrize("backend,device", fast_backend_cases())
def test_torch_func_transforms_refuse_a_gradient_and_keep_the_noise(backend, device):
    """Under torch.func.grad the op's gradient raises its own error (it gave torch's "must override the
    setup_context" one). Data that needs no gradient keeps working: a constant under grad, and vmap, which
    augments each slice as a call on that slice alone does."""
    require_backend(BACKENDS, backend, device)
    x = torch.rand(3, 1, 2, 2, device=device)

    def augment(v):
        return nf.gaussian_augment(v, 2, 0.1, seed=5, backend=backend)

    for transform in (torch.func.grad, torch.func.jacrev):
        with pytest.raises(RuntimeError, match="has no gradient; pass x.detach"):
            transform(lambda v: augment(v).sum())(x)
    with torch.profiler.profile() as profile:  # a constant under grad keeps the kernel
        scale = torch.func.grad(lambda w: (w * augment(x)).sum())(torch.tensor(2.0, device=device))
    kernel_ran = any(event.name.startswith("nemesis_fast::gaussian_augment") for event in profile.events())
    assert kernel_ran == (backend != "torch")
    torch.testing.assert_close(scale, augment(x).sum())
    batched = torch.func.vmap(lambda v: augment(v[None]))(x)
    assert torch.equal(batched, torch.stack([augment(v[None]) for v in x]))
    assert not torch.equal(batched[0], batched[1])


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_a_clip_bound_the_default_output_dtype_cannot_hold_is_refused_on_every_backend(backend):
    with pytest.raises(ValueError, match=r"the output dtype float16 \(out_dtype=None: x's\) cannot hold clip_max"):
        nf.gaussian_augment(torch.rand(2, 3).half(), clip=(0.0, 1e10), backend=backend)


@pytest.mark.parametrize("backend,device", backend_device_cases())
def test_an_output_of_more_rows_than_int64_holds_is_refused(backend, device):
    """(copies + 1) * B rows wrapped to 0 in the kernels' int64: an empty output instead of an error."""
    require_backend(BACKENDS, backend, device)
    x = torch.zeros(1, 1, device=device).expand(2**33, 1)  # B = 2**33 images of one value, in 4 bytes
    with pytest.raises(ValueError, match=r"\(copies \+ include_original\) \* B = 2147483648 \* 8589934592 rows do not"):
        nf.gaussian_augment(x, 2**31 - 1, 0.3, seed=0, backend=backend)


@pytest.mark.parametrize(
    "x,error,match",
    [
        (torch.ones(3, dtype=torch.int32), TypeError, "x must have dtype"),
        (torch.ones(3, dtype=torch.bool), TypeError, "x must have dtype"),
        (torch.ones(3, dtype=torch.complex64), TypeError, "x must have dtype"),
        (torch.tensor(0.5), ValueError, "x must have at least 1 dimension"),
        ([0.5], TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_input_tensor(x, error, match):
    with pytest.raises(error, match=match):
        nf.gaussian_augment(x)


@pytest.mark.parametrize("backend", ["native", pytest.param("triton", marks=pytest.mark.triton)])
def test_direct_op_calls_check_their_arguments(backend):
    require_backend(BACKENDS, backend, "cpu")
    x = torch.rand(2, 3)
    good = {"copies": 1, "sigma": 0.1, "clip_min": 0.0, "clip_max": 1.0, "seed": 0}
    for kwargs, error, name in [
        ({"copies": -1}, ValueError, "copies"),
        ({"sigma": -1.0}, ValueError, "sigma"),
        ({"sigma": float("nan")}, ValueError, "sigma"),
        ({"clip_min": 2.0}, ValueError, "clip_min"),
        ({"clip_max": float("inf")}, ValueError, "clip_max"),
        ({"offset": -5}, ValueError, "offset"),
        ({"offset": 2**63 - 2}, ValueError, "offset"),  # the last sample index, offset + 1, would not fit in int64
        ({"sigma": 2.0**128}, ValueError, "sigma"),  # finite, but infinite in float32
        ({"out_dtype": torch.int64}, TypeError, "out_dtype"),
        ({"clip_max": 1e6, "out_dtype": torch.float16}, ValueError, "clip_max"),  # beyond float16
    ]:
        with pytest.raises(error, match=name):
            call(backend, x, **{**good, **kwargs})
    with pytest.raises(TypeError, match="x must"):
        call(backend, x.to(torch.int16), **good)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        call(backend, torch.tensor(1.0), **good)
