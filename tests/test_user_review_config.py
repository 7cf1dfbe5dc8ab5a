"""A config's misspelt or misplaced key, and a preset's name given where a config file is expected, are refused
with a message that points to the fix (found reviewing the README as a new user)."""

from __future__ import annotations

import pytest

import nemesis_fast as nf
from nemesis_fast.evaluation import ConfigError, load_config


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
