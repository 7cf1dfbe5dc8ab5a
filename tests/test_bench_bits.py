"""nemesis_fast.bench.bits: the bit-for-bit comparison of the tiles script and the kernels' exactness tests."""

from __future__ import annotations

import torch

from nemesis_fast.bench.bits import SAME_WIDTH_INTEGER, same_bits


def test_same_bits_compares_bits_not_values():
    a = torch.tensor([0.0, 1.0, float("nan")])
    assert same_bits((a, a.bool()), (a.clone(), a.bool()))  # a NaN is its own bits
    assert same_bits(a[::2], torch.tensor([0.0, float("nan")]))  # a strided view by its values' bits
    assert not same_bits(a, torch.tensor([-0.0, 1.0, float("nan")]))  # the sign of zero
    assert not same_bits(a, torch.tensor([1e-45, 1.0, float("nan")]))  # one ulp
    assert not same_bits(a, a.double())  # the dtype too
    assert not same_bits((a, a), (a, a + 1))
    assert not same_bits(a, (a,)) and not same_bits((a,), a)
    for dtype, bits in SAME_WIDTH_INTEGER.items():
        assert dtype.itemsize == bits.itemsize and dtype.is_floating_point and not bits.is_floating_point
