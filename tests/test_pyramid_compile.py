"""torch.compile(fullgraph=True) over the public ops (nemesis_fast.ops) beyond the float32 contiguous calls of the
per-op compile tests: float arguments that torch.compile makes symbolic (a threshold t, sigma or a clip bound passed
to the compiled function, one that changes between calls, every float under dynamic=True, the default clip
included), which the argument checks broke with math.isfinite; and every dtype and layout each op takes, with
gradients: bounded_relu through inductor (whose code after the op trusts the strides of the fake kernel's output),
gaussian_augment and jsma_saliency_search traced by Dynamo and AOTAutograd through their fake kernels (the
"aot_eager" backend: inductor adds little there and costs seconds per dtype)."""

from __future__ import annotations

import pytest
import torch
from _support import assert_graphs_call, compile_recording_graphs, fast_backend_cases, require_backend

import nemesis_fast as nf
from nemesis_fast import reference
from nemesis_fast._backends import bounded_relu as brelu_backends
from nemesis_fast._backends import gaussian_augment as ga_backends
from nemesis_fast._backends import jsma_saliency_search as jsma_backends
from nemesis_fast._checks import FLOAT_DTYPES
from nemesis_fast.ops import SAVES

KERNEL_CASES = fast_backend_cases(reference=False)
OP = {"output": "bounded_relu", "mask": "bounded_relu_masked"}


def computing(graphs: list) -> list:
    """The graphs that compute something: with a symbolic float, Dynamo first records an empty graph (no node
    calls a function), then specialises the float on the guards the argument checks put on it and traces again."""
    return [g for g in graphs if any(n.op == "call_function" for n in g.graph.nodes)]


def _table(save: str):
    return brelu_backends.MASKED_BACKENDS if save == "mask" else brelu_backends.BACKENDS


def _compile_for(backend: str, device: str, monkeypatch, *tables) -> None:
    """Fails the test where `backend` is unavailable on `device` for any of the ops' `tables`; then makes it the
    default backend and starts Dynamo afresh."""
    for table in tables:
        require_backend(table, backend, device)
    torch._dynamo.reset()
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", backend)


@pytest.mark.parametrize("dynamic", [None, True])
@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_bounded_relu_with_a_threshold_argument(backend, device, save, dynamic, monkeypatch):
    _compile_for(backend, device, monkeypatch, _table(save))
    compiled, graphs = compile_recording_graphs(
        lambda x, t: nf.bounded_relu(x, t, save=save), backend="aot_eager", dynamic=dynamic
    )
    x = torch.randn(6, 9, device=device, requires_grad=True)
    for t in (0.5, 0.75, 2.0):  # the second value makes t symbolic (automatic dynamic)
        out = compiled(x, t)
        torch.testing.assert_close(out, reference.bounded_relu(x, t), rtol=0, atol=0)
        (grad,) = torch.autograd.grad(out.sum(), x)
        torch.testing.assert_close(grad, ((x > 0) & (x < t)).float(), rtol=0, atol=0)
    assert_graphs_call(computing(graphs), backend, OP[save])


@pytest.mark.parametrize("dynamic", [None, True])
@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_gaussian_augment_with_float_arguments(backend, device, dynamic, monkeypatch):
    _compile_for(backend, device, monkeypatch, ga_backends.BACKENDS)
    x = torch.rand(4, 2, 5, device=device)
    for fn, calls in (
        (lambda v, s: nf.gaussian_augment(v, 2, s, None, seed=3), [(0.3,), (0.5,), (0.0,)]),
        (lambda v, c: nf.gaussian_augment(v, 2, 0.3, (0.0, c), seed=3), [(0.9,), (0.6,)]),
        (lambda v: nf.gaussian_augment(v, 2, 0.3, seed=3), [()]),  # the default clip (0.0, 1.0)
    ):
        torch._dynamo.reset()
        compiled, graphs = compile_recording_graphs(fn, backend="aot_eager", dynamic=dynamic)
        for args in calls:
            torch.testing.assert_close(compiled(x, *args), fn(x, *args), rtol=0, atol=0)
        assert_graphs_call(computing(graphs), backend, "gaussian_augment")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_bounded_relu_in_every_dtype_and_layout(backend, device, save, dtype, monkeypatch):
    _compile_for(backend, device, monkeypatch, _table(save))
    compiled, graphs = compile_recording_graphs(lambda x: nf.bounded_relu(x, 0.7, save=save) * 2)  # inductor
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(4, 6, 5, 7, generator=g) * 2).to(device=device, dtype=dtype)
    for name, x in {
        "contiguous": base,
        "channels_last": base.to(memory_format=torch.channels_last),
        "transposed": base.transpose(1, 3),
        "sliced": base[:, ::2, 1:],
        "empty": base[:0],
    }.items():
        x = x.detach().requires_grad_(True)
        out = compiled(x)
        eager = nf.bounded_relu(x, 0.7, save=save) * 2
        torch.testing.assert_close(out, eager, rtol=0, atol=0, equal_nan=True)
        assert out.stride() == eager.stride(), name
        incoming = torch.randn(out.shape, generator=g).to(device=device, dtype=dtype)
        (grad,) = torch.autograd.grad(out, x, incoming)
        (expected,) = torch.autograd.grad(eager, x, incoming)
        torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    assert_graphs_call(computing(graphs), backend, OP[save])


@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_gaussian_augment_and_jsma_search_in_every_dtype(backend, device, monkeypatch):
    _compile_for(backend, device, monkeypatch, ga_backends.BACKENDS, jsma_backends.BACKENDS)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(5, 3, 8, generator=g)
    for dtype, out_dtype in ((torch.uint8, None), (torch.float16, torch.float32), (torch.bfloat16, None),
                             (torch.float64, torch.float16)):  # fmt: skip
        x = (images * 255).round().to(torch.uint8) if dtype == torch.uint8 else images.to(dtype)
        x = x.to(device)[:, ::2]  # not contiguous
        torch._dynamo.reset()

        def augment(v, out_dtype=out_dtype):
            return nf.gaussian_augment(v, 2, 0.3, seed=5, offset=7, out_dtype=out_dtype)

        compiled, graphs = compile_recording_graphs(augment, backend="aot_eager")
        torch.testing.assert_close(compiled(x), augment(x), rtol=0, atol=0)
        assert_graphs_call(graphs, backend, "gaussian_augment")
    t = torch.randn(6, 40, generator=g).mul(1.5).round()
    o = torch.randn(6, 40, generator=g).mul(1.5).round()
    d = torch.rand(6, 40, generator=g) < 0.8
    for dtype in FLOAT_DTYPES:
        torch._dynamo.reset()
        args = (t.to(device=device, dtype=dtype)[::2], o.to(device=device, dtype=dtype)[1::2], d.to(device)[::2])
        compiled, graphs = compile_recording_graphs(
            lambda a, b, m: nf.jsma_saliency_search(a, b, m, False), backend="aot_eager"
        )
        for got, expected in zip(compiled(*args), reference.jsma_saliency_search(*args, False)):
            assert torch.equal(got, expected), dtype
        assert_graphs_call(graphs, backend, "jsma_saliency_search")
