"""A defense's certified row from its chunks' entries, by hand: abstentions are prediction -1 only (class 0 is a
class), and the mean radius is over the images certified correct."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.evaluation.certified import certified_stats


def test_certified_row_by_hand():
    parts = [
        {"prediction": torch.tensor([0, 1, -1]), "radius": torch.tensor([0.5, 0.2, 0.0]), "seconds": 1.0},
        {"prediction": torch.tensor([3, 2]), "radius": torch.tensor([1.0, 0.3]), "seconds": 2.0},
    ]
    labels = torch.tensor([0, 2, 1, 3, 0, 9])  # one more label than images: cut
    settings = {"sigma": 0.25, "n0": 10, "n": 100, "alpha": 0.001}
    row = certified_stats("standard", settings, [0.0, 0.6], labels, parts)
    assert row.samples == 5 and row.seconds == 3.0
    assert row.abstained == pytest.approx(20.0)  # the -1 alone; the first image's class 0 is an answer
    assert row.mean_radius == pytest.approx(0.75)  # images 0 and 3, correct: (0.5 + 1.0) / 2
    assert row.accuracy == pytest.approx([40.0, 20.0])
