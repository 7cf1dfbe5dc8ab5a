"""gaussian_augment at its edges: the last sample index that fits int64, sigma at float32's limit, seeds from
2**63, a clip range of one value, the sign of zero at a clip bound, and the reference noise of given indices."""

from __future__ import annotations

import pytest
import torch

import nemesis_fast as nf
from nemesis_fast import reference
from nemesis_fast._backends.gaussian_augment import BACKENDS, resolve_seed
from nemesis_fast.reference.gaussian_augment import noise, pair_noise

# The limits of gaussian_augment's arguments at their edges: the last sample index (offset + B - 1) must fit in
# int64, and sigma must be finite once rounded to float32.

INT64_MAX = 2**63 - 1
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103  # the smallest number that float32 rounds to infinity


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_the_last_sample_index_must_fit_in_int64(backend):
    x = torch.zeros(3, 2)
    out = nf.gaussian_augment(x, 1, 1.0, None, seed=1, offset=INT64_MAX - 3, backend=backend)
    assert out.shape == (6, 2) and torch.isfinite(out).all()
    for offset in (INT64_MAX - 2, INT64_MAX):
        with pytest.raises(ValueError, match=f"offset must be <= {INT64_MAX - 3}, got {offset}"):
            nf.gaussian_augment(x, 1, 1.0, None, seed=1, offset=offset, backend=backend)


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_sigma_must_stay_finite_in_float32(backend):
    x = torch.zeros(1, 4)
    below = 2.0**128 - 2.0**104  # float32's largest finite value: allowed
    assert nf.gaussian_augment(x, 1, below, None, seed=1, backend=backend).shape == (2, 4)  # (sigma * z may overflow)
    for sigma in (FLOAT32_OVERFLOW, 2.0**128):
        with pytest.raises(ValueError, match="sigma must be finite in float32"):
            nf.gaussian_augment(x, 1, sigma, None, seed=1, backend=backend)


# The public gaussian_augment's argument edges: a seed of 2**63 (the documented range is [-2**63, 2**64)) is the
# int64 seed -2**63, and a clip range of one value (low == high) is allowed.


def test_seeds_from_2_63_wrap_to_their_int64_twos_complement():
    assert resolve_seed(2**63) == -(2**63) and resolve_seed(2**64 - 1) == -1 and resolve_seed(2**63 - 1) == 2**63 - 1
    x = torch.zeros(2, 5)
    for backend in ("native", "torch"):
        wrapped = nf.gaussian_augment(x, 2, 1.0, None, seed=2**63, backend=backend)
        assert torch.equal(wrapped, nf.gaussian_augment(x, 2, 1.0, None, seed=-(2**63), backend=backend))


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_a_clip_range_of_one_value_gives_that_value(backend):
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    out = nf.gaussian_augment(x, 2, 0.5, (0.25, 0.25), seed=1, backend=backend)
    assert torch.equal(out, torch.full((9, 4), 0.25))


# The reference's clip keeps a value equal to a bound as it is (torch.where(v < low, low, v)): -0.0 at a bound of
# +0.0 stays -0.0 and +0.0 at a bound of -0.0 stays +0.0, as the compiled kernels keep them.


def test_values_equal_to_a_clip_bound_keep_their_sign_of_zero():
    sigma = 0.0  # the copies are the clipped originals
    x = torch.tensor([[-0.0, 0.0, -0.0, 0.0, 0.5]])
    for low, high in ((0.0, 1.0), (-1.0, -0.0), (-0.0, 0.0), (0.0, -0.0)):
        got = reference.gaussian_augment(x, 2, sigma, low, high, True, 3, 0, None)
        # Between the bounds (in value) nothing moves, so every zero keeps its sign; 0.5 goes to `high`.
        wanted = x.clone()
        wanted[0, 4] = min(0.5, high) if high != 0 else high
        assert torch.equal(torch.signbit(got), torch.signbit(wanted.repeat(3, 1))), (low, high)
        if BACKENDS.native is not None:
            native = BACKENDS.native(x, 2, sigma, low, high, True, 3, 0, None)
            assert torch.equal(torch.signbit(native), torch.signbit(got)), (low, high)


# The reference noise of given global sample indices (a tensor) is the noise of those rows of the whole stream,
# with `offset` added to the indices like to a count's; pair_noise picks (copy, sample) pairs of the same stream.


def test_indexed_noise_is_the_streams_rows_shifted_by_the_offset():
    stream = noise(7, 2, 12, 6)  # copies 0..1 of samples 0..11
    indices = torch.tensor([5, 0, 8])
    assert torch.equal(noise(7, 2, indices, 6), stream[:, indices])
    assert torch.equal(noise(7, 2, indices, 6, offset=3), stream[:, indices + 3])
    assert torch.equal(noise(7, 2, 4, 6, offset=3), stream[:, 3:7])
    copy, sample = torch.tensor([1, 0, 1]), torch.tensor([11, 2, 2])
    assert torch.equal(pair_noise(7, copy, sample, 6), stream[copy, sample])
