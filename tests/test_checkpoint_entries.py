"""Checkpoint entries read back: the gda recipe's default sigma as the training noise, a squeezer recorded before
bpda was (BPDA, the default then), and a squeezer entry with keys of another kind refused."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.checkpoints import checkpoint_noise_sigma, load_checkpoint, save_checkpoint, training_noise_sigma
from nemesis_fast.defenses import FeatureSqueezing
from nemesis_fast.defenses.recipes import GDASettings
from nemesis_fast.models import mnist_cnn


def test_a_gda_model_trained_at_the_default_sigma_records_that_sigma(tmp_path):
    default = GDASettings().sigma
    assert default > 0
    assert training_noise_sigma("gda", None) == default
    assert training_noise_sigma("gda", {"copies": 3}) == default
    assert training_noise_sigma("gda", {"sigma": 0.1}) == 0.1 and training_noise_sigma("vat", {}) is None
    path = save_checkpoint(tmp_path / "m.pt", mnist_cnn(), recipe="gda", settings={"copies": 3})
    _, info = load_checkpoint(path)
    assert info["noise_sigma"] == default and checkpoint_noise_sigma(info) == default


def _rewrite_squeezer(path, squeezer):
    payload = torch.load(path, weights_only=True)
    payload["squeezer"] = squeezer
    torch.save(payload, path)


def test_a_squeezer_recorded_without_bpda_loads_with_bpda(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", FeatureSqueezing(mnist_cnn(), 4, bpda=False), recipe="standard")
    loaded, _ = load_checkpoint(path)
    assert loaded.settings() == {"bit_depth": 4, "median_size": None, "bpda": False}
    _rewrite_squeezer(path, {"bit_depth": 4, "median_size": None})  # written before bpda was recorded
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded, FeatureSqueezing) and loaded.settings()["bpda"] is True


@pytest.mark.parametrize(
    "squeezer",
    [{"bit_depth": 4}, {"bit_depth": 4, "median_size": None, "levels": 16}, {"median_size": 2, "bpda": True}],
)
def test_a_squeezer_with_other_keys_is_refused(tmp_path, squeezer):
    path = save_checkpoint(tmp_path / "m.pt", FeatureSqueezing(mnist_cnn(), 4), recipe="standard")
    _rewrite_squeezer(path, squeezer)
    with pytest.raises(ValueError, match="not a nemesis_fast checkpoint \\(its squeezer is"):
        load_checkpoint(path)
