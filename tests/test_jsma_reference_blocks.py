"""The reference JSMA pair search scanned in blocks (block_elements, a memory bound only) gives the answer of one
block: the row offset of a block goes into the pair's index, and ties across blocks keep the smallest (p, q).
The other tests' inputs are too small for the reference ever to split its rows (n > 4096 features at the default)."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.reference import jsma_saliency_search as reference


@pytest.mark.parametrize("increase", [True, False])
def test_blocks_of_rows_and_samples_give_the_answer_of_one_block(increase):
    generator = torch.Generator().manual_seed(0)
    t = torch.randn(6, 13, generator=generator)
    o = torch.randn(6, 13, generator=generator)
    d = torch.rand(6, 13, generator=generator) < 0.8
    whole = reference(t, o, d, increase)
    assert whole[2].all() and (whole[0] > 0).any()  # pairs are found, some beyond the first row
    for block_elements in (1, 13, 40, 13 * 13 + 1):
        split = reference(t, o, d, increase, block_elements=block_elements)
        for got, wanted in zip(split, whole):
            assert torch.equal(got, wanted), block_elements


def test_ties_across_blocks_go_to_the_smallest_pair():
    """Every pair scores (1 + 1) * (1 + 1) = 4: the answer is (0, 1) however the rows are split."""
    t, o, d = torch.ones(2, 8), -torch.ones(2, 8), torch.ones(2, 8, dtype=torch.bool)
    d[1, :3] = False  # the second sample's smallest pair is (3, 4)
    for block_elements in (1, 8, 64, 1 << 24):
        p, q, found = reference(t, o, d, True, block_elements=block_elements)
        assert p.tolist() == [0, 3] and q.tolist() == [1, 4] and found.all(), block_elements
