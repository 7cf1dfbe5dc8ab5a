"""Config files: the paper preset's DeepFool searches every class (ART's 2017 default), defense.squeeze_bits is a
budget of the data set the file names, a file naming a data set but leaving its budgets empty fits any data set,
and a cycle of bases through several files is refused by name."""

from __future__ import annotations

import pytest

from nemesis_fast.evaluation import ConfigError, load_config, preset_path


def test_the_paper_presets_deepfool_takes_every_class_as_a_candidate():
    for preset in ("paper", "paper_table", "paper_gpu_check", "paper_weak_source"):
        assert load_config(preset_path(preset)).attack.deepfool_candidates == 10, preset


def test_squeeze_bits_set_for_mnist_is_refused_on_cifar10(tmp_path):
    own = tmp_path / "bits.toml"
    own.write_text('base = "quick"\ndataset = "mnist"\n[defense]\nsqueeze_bits = 1\n')
    assert load_config(own).squeeze_bits == 1
    with pytest.raises(ConfigError, match=r"sets budgets for mnist \(defense.squeeze_bits\)"):
        load_config(own, {"dataset": "cifar10", "synthetic": True})


def test_a_file_naming_mnist_with_no_budgets_fits_cifar10(tmp_path):
    own = tmp_path / "empty.toml"
    own.write_text('base = "quick"\ndataset = "mnist"\nwhitebox_eps = []\nblackbox_eps = []\n')
    config = load_config(own, {"dataset": "cifar10", "synthetic": True})
    assert config.dataset == "cifar10" and config.whitebox_eps == [] and config.blackbox_eps == []


def test_a_cycle_of_bases_through_two_files_is_refused(tmp_path):
    (tmp_path / "a.toml").write_text('base = "b.toml"\nseed = 1\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\nseed = 2\n')
    with pytest.raises(ConfigError, match="leads back to a config already read"):
        load_config(tmp_path / "a.toml")
