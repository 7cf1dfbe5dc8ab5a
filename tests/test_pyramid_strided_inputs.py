"""gaussian_augment and jsma_saliency_search on inputs that are not dense, or not laid out row by row, in every
dtype each op takes, on every kernel against the reference: samples taken with a step (x[::2]: rows with gaps
between them, each row contiguous), sliced features, a batch expanded from one sample (stride 0), views of another
dimension order. The reference comparisons of test_gaussian_augment.py and test_jsma_saliency_search.py use
contiguous and transposed inputs in every dtype, and strided ones in float32 only (jsma)."""

from __future__ import annotations

import pytest
import torch
from _gaussian_augment_cases import assert_matches, call, expected
from _support import reference_comparison_cases, require_backend

import nemesis_fast as nf
from nemesis_fast._backends import gaussian_augment as ga_backends
from nemesis_fast._backends import jsma_saliency_search as jsma_backends
from nemesis_fast._checks import FLOAT_DTYPES
from nemesis_fast.reference import jsma_saliency_search as jsma_reference
from nemesis_fast.reference.gaussian_augment import SUPPORTED_INPUT_DTYPES

VERSUS_REFERENCE = reference_comparison_cases()


def gaussian_inputs(dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(6, 3, 9, generator=g) * 1.2 - 0.1  # some values beyond the clip bounds
    base = (base.clamp(0, 1) * 255).round().to(torch.uint8) if dtype == torch.uint8 else base.to(dtype)
    base = base.to(device)
    return {
        "samples with a step": base[::2],
        "features sliced": base[:, ::2, 1:],
        "one sample expanded": base[:1].expand(4, 3, 9),
        "one feature row expanded": base[:, :1].expand(6, 3, 9),
        "permuted and sliced": base.permute(2, 0, 1)[1:, :, ::2],
        "negative-free offset view": base[1:, 1:, 2:],
    }


@pytest.mark.parametrize("dtype", SUPPORTED_INPUT_DTYPES)
@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_gaussian_augment_non_dense_inputs_match_reference(backend, device, dtype):
    require_backend(ga_backends.BACKENDS, backend, device)
    for name, x in gaussian_inputs(dtype, device).items():
        assert not x.is_contiguous(), name
        for kwargs in ({"offset": 5}, {"copies": 2, "sigma": 1.0, "clip_min": None, "clip_max": None, "seed": -9}):
            got = call(backend, x, **kwargs)
            assert got.is_contiguous()
            assert_matches(got.cpu(), expected(x.cpu().contiguous(), **kwargs))


def jsma_inputs(dtype: torch.dtype, device: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    # Small integers (many tied scores) plus a little noise that float16 and bfloat16 round differently.
    t = torch.randn(8, 70, generator=g).mul(1.5).round() + torch.rand(8, 70, generator=g) * 0.01
    o = torch.randn(8, 70, generator=g).mul(1.5).round()
    d = torch.rand(8, 70, generator=g) < 0.8
    t, o, d = t.to(device=device, dtype=dtype), o.to(device=device, dtype=dtype), d.to(device)
    return {
        "samples with a step": (t[::2], o[1::2], d[::2]),
        "one sample expanded": (t[:1].expand(5, 70), o[2:3].expand(5, 70), d[:1].expand(5, 70)),
        "one feature expanded": (t[:, :1].expand(8, 33), o[:, 1:2].expand(8, 33), d[:, :33]),
        "column-major": (t.t().contiguous().t(), o.t().contiguous().t(), d.t().contiguous().t()),
        "features with a step": (t[:, ::3][:, :23], o[:, 1::3], d[:, 2::3]),
        "mixed": (t[1::3, 5:], o.t().contiguous().t()[::3, 5:], d[:3, :65]),
    }


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_jsma_saliency_search_strided_inputs_match_reference(backend, device, dtype):
    require_backend(jsma_backends.BACKENDS, backend, device)
    for name, args in jsma_inputs(dtype, device).items():
        assert args[0].shape == args[1].shape == args[2].shape, name
        for increase in (True, False):
            expected_pqf = jsma_reference(*(a.cpu().contiguous() for a in args), increase)
            got = nf.jsma_saliency_search(*args, increase, backend=backend)
            for a, e in zip(got, expected_pqf):
                assert a.dtype == e.dtype and torch.equal(a.cpu(), e), (name, increase, a.tolist(), e.tolist())
