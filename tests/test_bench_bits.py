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


def test_same_bits_tells_the_zeros_apart_and_matches_nan_in_every_float_dtype():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        a = torch.tensor([0.0, 1.0, float("nan")], dtype=dtype)
        assert same_bits(a, a.clone()), dtype  # NaN is its own bits, where torch.equal finds it unequal
        assert not same_bits(a, torch.tensor([-0.0, 1.0, float("nan")], dtype=dtype)), dtype


def test_same_bits_needs_the_same_dtype_and_compares_other_dtypes_by_value():
    a = torch.tensor([1.0, -2.0])
    assert not same_bits(a, a.view(torch.int32))  # the same bits, another dtype
    assert not same_bits(a.half(), a.half().view(torch.bfloat16))
    ints = torch.tensor([3, 4])
    assert same_bits(ints, ints.clone()) and not same_bits(ints, torch.tensor([3, 5]))
    assert not same_bits(ints > 3, ints > 2)


def test_same_bits_sequences_match_only_sequences_of_the_same_length():
    a = torch.tensor([0.0, 1.0])
    assert not same_bits((a,), (a, a)) and not same_bits((a, a), (a,))
    assert not same_bits((a,), a[None])  # a sequence is not a tensor of the same rows
