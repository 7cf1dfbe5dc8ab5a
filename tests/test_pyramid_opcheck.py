"""torch.library.opcheck on every registered op (the native ones and the _triton ones) in every dtype the op takes,
with both requires_grad settings, on the layouts its fake kernel must describe: a gradient and an output of
different layouts for bounded_relu_backward, empty tensors, non-dense inputs, uint8 images with the default output
dtype for gaussian_augment. The opcheck tests beside each op (test_*_ops.py, test_jsma_saliency_search.py) run
float32 only, and give the backward op a gradient with the output's layout."""

from __future__ import annotations

import pytest
import torch
from _bounded_relu_cases import CASES, TABLES, masked_pair
from _support import require_backend

from nemesis_fast._backends import gaussian_augment as ga_backends
from nemesis_fast._backends import jsma_saliency_search as jsma_backends
from nemesis_fast._checks import FLOAT_DTYPES
from nemesis_fast.reference.gaussian_augment import SUPPORTED_INPUT_DTYPES

KERNEL_CASES = [case for case in CASES if case.values[0] != "torch"]
OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
# Triton's interpreter runs kernels as Python, which AOTAutograd cannot trace (as in the per-op opcheck tests).
OPCHECK_NO_AOT = OPCHECK_ALL[:3]


def checks_for(backend: str, device: str) -> tuple[str, ...]:
    return OPCHECK_NO_AOT if (backend, device) == ("triton", "cpu") else OPCHECK_ALL


def op(name: str, backend: str):
    return getattr(torch.ops.nemesis_fast, name + ("_triton" if backend == "triton" else ""))


def randn(*shape, dtype, device, requires_grad=False):
    g = torch.Generator().manual_seed(sum(shape) + len(shape))
    return (torch.randn(*shape, generator=g) * 2).to(device=device, dtype=dtype).requires_grad_(requires_grad)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_opcheck_bounded_relu_pair(backend, device, dtype):
    require_backend(TABLES["output"], backend, device)
    checks = checks_for(backend, device)
    forward, backward = op("bounded_relu", backend), op("bounded_relu_backward", backend)
    for requires_grad in (False, True):

        def leaf(*shape, requires_grad=requires_grad):
            return randn(*shape, dtype=dtype, device=device, requires_grad=requires_grad)

        for x in (leaf(5, 7), leaf(9, 5).t(), leaf(5, 14)[:, ::2], leaf(0, 3), leaf(1, 7).expand(5, 7)):
            torch.library.opcheck(forward, (x, 0.8), test_utils=checks)
        out = forward(randn(5, 7, dtype=dtype, device=device), 0.8)
        out_t = forward(randn(7, 5, dtype=dtype, device=device), 0.8).t()
        for grad, saved in (
            (leaf(7, 5).t(), out),  # the gradient transposed, the output contiguous
            (leaf(5, 14)[:, 1::2], out),
            (leaf(5, 7), out_t),  # the output transposed, the gradient contiguous
            (leaf(5, 7), forward(randn(5, 14, dtype=dtype, device=device), 0.8)[:, ::2]),
            (leaf(0, 3), forward(randn(0, 3, dtype=dtype, device=device), 0.8)),
        ):
            torch.library.opcheck(backward, (grad, saved, 0.8), test_utils=checks)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_opcheck_bounded_relu_masked_pair(backend, device, dtype):
    require_backend(TABLES["mask"], backend, device)
    checks = checks_for(backend, device)
    forward, backward = masked_pair(backend)
    for requires_grad in (False, True):
        for x in (randn(5, 7, dtype=dtype, device=device), randn(9, 5, dtype=dtype, device=device).t()):
            torch.library.opcheck(forward, (x.detach().requires_grad_(requires_grad), 0.8), test_utils=checks)
            out, mask = forward(x, 0.8)
            grad = torch.empty_like(out).copy_(randn(*out.shape, dtype=dtype, device=device))  # out's strides
            torch.library.opcheck(backward, (grad.requires_grad_(requires_grad), mask), test_utils=checks)
        empty = randn(0, 3, dtype=dtype, device=device)
        torch.library.opcheck(forward, (empty.requires_grad_(requires_grad), 0.8), test_utils=checks)
        _, mask = forward(empty.detach(), 0.8)
        grad = randn(0, 3, dtype=dtype, device=device, requires_grad=requires_grad)
        torch.library.opcheck(backward, (grad, mask), test_utils=checks)


@pytest.mark.parametrize("dtype", SUPPORTED_INPUT_DTYPES)
@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_opcheck_gaussian_augment(backend, device, dtype):
    require_backend(ga_backends.BACKENDS, backend, device)
    ga = op("gaussian_augment", backend)
    interpreted = (backend, device) == ("triton", "cpu")
    g = torch.Generator().manual_seed(0)
    base = torch.rand(4, 3, 10, generator=g)
    base = (base * 255).round().to(torch.uint8) if dtype == torch.uint8 else base.to(dtype)
    for requires_grad in (False, True) if dtype.is_floating_point else (False,):
        # With requires_grad, AOTAutograd would trace the backward, which raises by design.
        checks = OPCHECK_NO_AOT if interpreted or requires_grad else OPCHECK_ALL
        x = base.to(device).requires_grad_(requires_grad)
        for args in (
            (x, 2, 0.3, 0.0, 1.0, True, 11, 4, None),  # the default output dtype (float32 for uint8)
            (x[:, ::2, 1:], 1, 0.2, None, 0.5, False, -2, 0, None),  # not dense
            (x[::2], 2, 0.3, -1.0, None, True, 5, 3, torch.float64),
            (x.transpose(0, 2), 1, 0.0, None, None, True, 1, 0, torch.bfloat16),
            (x[:0], 3, 0.3, None, None, True, 1, 0, None),
            (x[:, :0], 2, 0.3, 0.0, 1.0, False, 1, 0, torch.float16),
        ):
            torch.library.opcheck(ga, args, test_utils=checks)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend,device", KERNEL_CASES)
def test_opcheck_jsma_saliency_search(backend, device, dtype):
    require_backend(jsma_backends.BACKENDS, backend, device)
    search = op("jsma_saliency_search", backend)
    checks = checks_for(backend, device)
    g = torch.Generator().manual_seed(3)
    t = torch.randn(4, 21, generator=g).mul(1.5).round().to(device=device, dtype=dtype)
    o = torch.randn(4, 21, generator=g).mul(1.5).round().to(device=device, dtype=dtype)
    d = (torch.rand(4, 21, generator=g) < 0.8).to(device)
    for requires_grad in (False, True):
        tg = t.clone().requires_grad_(requires_grad)
        for increase in (True, False):
            for args in (
                (tg, o, d),
                (tg[::2], o[1::2], d[::2]),  # rows strided, features contiguous
                (tg[:1].expand(3, 21), o[:1].expand(3, 21), d[:1].expand(3, 21)),  # one sample, stride 0
                (tg.t().contiguous().t(), o, d.t().contiguous().t()),
                (tg[:0], o[:0], d[:0]),
                (tg[:, :1], o[:, :1], d[:, :1]),
            ):
                torch.library.opcheck(search, (*args, increase), test_utils=checks)
