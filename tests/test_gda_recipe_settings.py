"""GDA's recipe settings reach the augmentation: `clip` reaches the fixed set's copies, `include_original` the
per-batch augmentation."""

from __future__ import annotations

import torch

from nemesis_fast.defenses import FixedNoisyCopies, make_recipe


def test_fixed_set_copies_are_clipped_as_the_settings_say():
    recipe = make_recipe("gda", {"fixed_set": True, "copies": 2, "sigma": 0.9}, seed=4)  # clip: (0, 1)
    expansion = recipe.expansion()
    assert expansion.clip == (0.0, 1.0)
    x = torch.full((6, 1, 4, 4), 0.5)
    copy, sample = torch.tensor([0, 1, 2, 1, 2, 1]), torch.arange(6)
    rows = expansion(x, copy, sample)
    assert rows.min() >= 0 and rows.max() <= 1
    torch.testing.assert_close(rows, FixedNoisyCopies(0.9, 2, (0.0, 1.0), seed=4)(x, copy, sample), rtol=0, atol=0)
    unclipped = make_recipe("gda", {"fixed_set": True, "copies": 2, "sigma": 0.9, "clip": None}, seed=4).expansion()
    raw = unclipped(x, copy, sample)
    assert raw.min() < 0 or raw.max() > 1  # sigma 0.9 around 0.5: the same noise, not clipped


def test_include_original_false_drops_the_originals_from_each_batch():
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(5)
    augment = make_recipe("gda", {"copies": 2, "include_original": False}).augment(torch.device("cpu"))
    x_aug, y_aug = augment(x, y)
    assert x_aug.shape == (10, 1, 4, 4) and torch.equal(y_aug, torch.cat([y, y]))
    assert not any(torch.equal(row, original) for row in x_aug for original in x)
    with_originals, _ = make_recipe("gda", {"copies": 2}).augment(torch.device("cpu"))(x, y)
    assert with_originals.shape[0] == 15 and torch.equal(with_originals[:5], x)
