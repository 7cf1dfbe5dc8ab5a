"""A config's misspelt or misplaced key, and a preset's name given where a config file is expected, are refused
with a message that points to the fix (found reviewing the README as a new user)."""

from __future__ import annotations

import re

import pytest

import nemesis_fast as nf
from nemesis_fast.evaluation import ConfigError, load_config, preset_path


def _write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_a_section_key_at_the_top_level_names_its_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown setting epochs; .*epochs is a setting of \[training\]"):
        load_config(_write(tmp_path, "epochs = 3\n"))


def test_a_misspelt_key_suggests_the_known_one(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown setting training\.epoch; .*did you mean epochs\?"):
        load_config(_write(tmp_path, "[training]\nepoch = 3\n"))
    with pytest.raises(ConfigError, match=r"unknown setting test_sample; .*did you mean test_samples\?"):
        load_config(_write(tmp_path, "test_sample = 3\n"))


def test_an_override_of_a_section_key_names_its_section():
    with pytest.raises(ConfigError, match=r"epochs is a setting of \[training\].*training=\{'epochs': \.\.\.\}"):
        nf.evaluate(None, epochs=3)


def test_a_preset_name_as_config_points_to_preset_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file called quick here
    with pytest.raises(ConfigError, match=r"config file quick does not exist; .*preset_path\('quick'\)"):
        nf.evaluate("quick")
    with pytest.raises(ConfigError, match="config file nope does not exist$"):
        nf.evaluate("nope")


def test_an_evalconfigs_overrides_get_the_same_hints():
    """evaluate(an EvalConfig, **overrides) checks the overrides apart from a file's keys, with the same hints."""
    config = load_config(preset_path("quick"))
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) epochs; .*epochs is a setting of \[training\]"):
        nf.evaluate(config, epochs=3)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) test_sample; .*did you mean test_samples\?$"):
        nf.evaluate(config, test_sample=3)


def test_a_config_path_less_its_suffix_is_not_called_a_preset():
    """Only a bare name is taken for a preset's: a path whose .toml exists (here the quick preset's own file, less
    its suffix) was told to pass it to preset_path, as though a preset."""
    path = preset_path("quick").with_suffix("")
    with pytest.raises(ConfigError, match=f"^config file {re.escape(str(path))} does not exist$"):
        nf.evaluate(path)


def test_a_config_in_the_home_folder_is_read(tmp_path, monkeypatch):
    """ "~/config.toml" is the home folder's file, as data_dir, out_dir and cache_dir are read (`--config=~/...`: no
    shell expands a ~ after "=")."""
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path, "test_samples = 3\n")
    assert load_config("~/config.toml").test_samples == 3
