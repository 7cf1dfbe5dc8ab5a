"""The noise of gaussian_augment: its statistics (native, and on every backend), clipping, the rounding to 16-bit
outputs, uint8 input scaled to [0, 1], the public function's defaults and seed, and its absent gradient."""

from __future__ import annotations

import math

import pytest
import torch
from _gaussian_augment_cases import CASES, assert_matches, available_backends, call
from _support import require_backend
from scipy import stats

import nemesis_fast as nf
from nemesis_fast._backends.gaussian_augment import BACKENDS, NO_GRADIENT


def raw_noise(backend: str = "native", device: str = "cpu", copies: int = 8, batch: int = 64, features: int = 256):
    """Noise before clipping, (copies, batch, features), from x = 0 and sigma = 1."""
    x = torch.zeros(batch, features, device=device)
    out = call(backend, x, copies=copies, sigma=1.0, clip_min=None, clip_max=None, include_original=False)
    return out.view(copies, batch, features).double().cpu()


def test_noise_statistics():
    require_backend(BACKENDS, "native", "cpu")
    z = raw_noise()
    n = z.numel()
    assert abs(z.mean().item()) < 4 / math.sqrt(n)
    assert abs(z.std().item() - 1) < 4 / math.sqrt(2 * n)
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    assert z.abs().max().item() <= math.sqrt(48 * math.log(2)) + 1e-5
    # Each of the four words of a Philox call feeds its own normal: check every position within a group too.
    for j in range(4):
        assert stats.kstest(z[..., j::4].flatten().numpy(), "norm").pvalue > 1e-4, j

    def uncorrelated(a: torch.Tensor, b: torch.Tensor) -> None:
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(r) < 4.5 / math.sqrt(a.numel()), r

    uncorrelated(z[0], z[1])  # copies
    uncorrelated(z[:, :-1], z[:, 1:])  # samples
    uncorrelated(z[..., :-1], z[..., 1:])  # neighbouring features (the two normals of one Box-Muller pair too)
    uncorrelated(z[..., :-4], z[..., 4:])  # the same word of neighbouring Philox calls
    uncorrelated(z[..., 0::2] ** 2, z[..., 1::2] ** 2)  # a Box-Muller pair shares its radius: not in its squares


@pytest.mark.parametrize("backend,device", CASES)
def test_noise_statistics_on_every_backend(backend, device):
    """A smaller sample per backend: same law (the exact values are covered by the reference tests)."""
    require_backend(BACKENDS, backend, device)
    z = raw_noise(backend, device, copies=2, batch=8, features=256)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("backend,device", CASES)
def test_clipping(backend, device):
    require_backend(BACKENDS, backend, device)
    x = torch.full((16, 64), 0.5, device=device)
    x[0, :3] = torch.tensor([-1.0, 2.0, float("nan")])
    out = call(backend, x, copies=4, sigma=0.5, clip_min=0.0, clip_max=1.0).cpu()
    finite = out[~out.isnan()]
    assert finite.min() >= 0 and finite.max() <= 1
    assert out[0, :2].tolist() == [0.0, 1.0]  # originals are clipped too
    assert out.view(5, 16, 64)[:, 0, 2].isnan().all()  # NaN propagates, into every copy
    noisy = out[16:].flatten()[~out[16:].flatten().isnan()]
    at_bound = (noisy == 1.0).double().mean().item()
    assert abs(at_bound - stats.norm.sf(1.0)) < 0.03  # P(0.5 + 0.5 z > 1) = P(z > 1)
    one_sided = call(backend, x.nan_to_num(0.5), copies=2, sigma=2.0, clip_min=None, clip_max=0.6).cpu()
    assert one_sided.max() == pytest.approx(0.6) and one_sided.min() < -1


@pytest.mark.parametrize("backend,device", CASES)
def test_float64_to_float16_rounds_through_float32(backend, device):
    """float64 results are rounded to 16 bits through float32, as torch's casts do: 1 + 2**-11 + 2**-40 rounds
    to 1 + 2**-11 in float32, a tie that goes to 1.0 in float16 (a direct rounding would give 1 + 2**-10)."""
    require_backend(BACKENDS, backend, device)
    x = torch.full((2, 4), 1 + 2**-11 + 2**-40, dtype=torch.float64, device=device)
    out = call(backend, x, copies=1, sigma=0.0, clip_min=None, clip_max=None, out_dtype=torch.float16)
    assert torch.equal(out, torch.ones(4, 4, dtype=torch.float16, device=device))


@pytest.mark.parametrize("backend,device", CASES)
def test_uint8_input_is_scaled_to_the_unit_interval(backend, device):
    require_backend(BACKENDS, backend, device)
    x = torch.randint(0, 256, (4, 3, 5), dtype=torch.uint8, device=device)
    out = call(backend, x, sigma=0.2)
    assert out.dtype == torch.float32
    # x / 255 correctly rounded: on the CPU (on CUDA torch multiplies by the reciprocal 1/255, one ulp off at times).
    scaled = (x.cpu().float() / 255).to(device)
    assert_matches(out, call(backend, scaled, sigma=0.2))
    assert torch.equal(out[:4], scaled)
    if not (backend == "triton" and device == "cpu"):
        half = call(backend, x, sigma=0.2, out_dtype=torch.bfloat16)
        assert torch.equal(half, out.to(torch.bfloat16))


def test_public_function_defaults_and_seed():
    x = torch.rand(3, 4)
    out = nf.gaussian_augment(x, seed=0)
    assert out.shape == (33, 4) and torch.equal(out[:3], x)
    torch.manual_seed(1234)
    a = nf.gaussian_augment(x)
    b = nf.gaussian_augment(x)
    torch.manual_seed(1234)
    again = nf.gaussian_augment(x)
    assert torch.equal(a, again) and not torch.equal(a, b)
    assert torch.equal(
        nf.gaussian_augment(x, 2, 0.3, None, seed=2**64 - 1), nf.gaussian_augment(x, 2, 0.3, None, seed=-1)
    )
    for backend in available_backends("cpu"):
        out = nf.gaussian_augment(x, 2, 0.1, (0.2, None), include_original=False, seed=5, backend=backend)
        assert out.shape == (6, 4) and out.min() >= 0.2


@pytest.mark.parametrize("backend,device", CASES)
def test_backward_says_there_is_no_gradient(backend, device):
    require_backend(BACKENDS, backend, device)
    x = torch.rand(2, 5, device=device, requires_grad=True)
    out = nf.gaussian_augment(x, 2, seed=3, backend=backend)
    assert out.requires_grad
    with pytest.raises(RuntimeError, match="no gradient; pass x.detach"):
        out.sum().backward()
    assert not nf.gaussian_augment(x.detach(), 2, seed=3, backend=backend).requires_grad
    assert NO_GRADIENT.startswith("gaussian_augment")
