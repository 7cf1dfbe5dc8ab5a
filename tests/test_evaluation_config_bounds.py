"""Config bounds checked at load time (before any work), and the validation split's rounding."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.data.loader import split_validation
from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.config import ConfigError


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"defense": {"vat_eps": -0.1}}, "defense.vat_eps"),
        ({"defense": {"label_smoothing": 0.0}}, "defense.label_smoothing"),
        ({"defense": {"label_smoothing": 1.5}}, "defense.label_smoothing"),
        ({"attack": {"rfgsm_eps": 0.1, "rfgsm_alpha": 0.2}}, "attack.rfgsm_alpha"),
    ],
)
def test_out_of_range_settings_are_refused_when_loaded(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=overrides)


def test_split_validation_rounds_the_count_to_nearest():
    images, labels = torch.zeros(19, 1, 2, 2, dtype=torch.uint8), torch.arange(19) % 10
    (train, _), (val, val_labels) = split_validation(images, labels, 0.1, seed=0)  # 1.9 -> 2
    assert len(val_labels) == 2 and len(train) == 17
