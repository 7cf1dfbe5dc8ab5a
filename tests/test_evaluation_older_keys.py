"""The evaluation cache's keys: their older forms worked out by hand (not through the function that reads them back,
which could not see a wrong form), the package version in the key, a key
that does not depend on the order of the settings, and an entry whose stored settings are not its key's."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch

from nemesis_fast.evaluation.attack import all_attack_settings, attack_settings
from nemesis_fast.evaluation.cache import ResultCache, settings_key
from nemesis_fast.evaluation.config import EvalConfig
from nemesis_fast.evaluation.older_keys import older_form
from nemesis_fast.evaluation.train import SOURCE

DATA = SimpleNamespace(identity={"train": "digest-of-train"}, legacy_identity={"data_dir": "/d", "train": 60000})


def config() -> EvalConfig:
    c = EvalConfig()
    c.defense.brelu_t = 0.7
    c.training.source_architecture, c.training.source_depth = "resnet", 8
    return c


def test_an_attack_units_older_key_drops_the_chunks_digest_and_holds_every_attack_setting():
    c = config()
    assert attack_settings(c, "cw") != all_attack_settings(c, "cw")  # cw_test_samples was in the older keys
    unit = {
        "attack": "cw",
        "settings": attack_settings(c, "cw"),
        "chunk": [0, 8],
        "test_images": "abc",
        "data": DATA.identity,
    }
    assert older_form(unit, c, DATA) == {
        "attack": "cw",
        "settings": all_attack_settings(c, "cw"),
        "chunk": [0, 8],
        "data": DATA.legacy_identity,
    }


def test_a_models_older_key_holds_the_source_settings_and_a_relus_t():
    c = config()
    training = {"epochs": 3}
    key = {"model": "gda", "training": training, "architecture_kwargs": {"activation": "relu"}, "data": DATA.identity}
    assert older_form(key, c, DATA) == {
        "model": "gda",
        "training": {"epochs": 3, "source_architecture": "resnet", "source_depth": 8},
        "architecture_kwargs": {"activation": "relu", "t": 0.7},
        "data": DATA.legacy_identity,
    }
    brelu = {"model": SOURCE, "training": training, "architecture_kwargs": {"activation": "brelu", "t": 0.5}}
    assert older_form(brelu, c, DATA) == brelu  # the source's own settings; a BReLU's t was always there
    defense = {"defense_name": "squeeze", "test_images": "abc"}
    assert older_form(defense, c, DATA) == {"defense_name": "squeeze", "squeeze_bits": c.squeeze_bits}


def test_the_key_names_the_package_version(monkeypatch):
    import nemesis_fast._version as version

    before = settings_key("model", {"a": 1})
    monkeypatch.setattr(version, "__version__", version.__version__ + ".post1")
    assert settings_key("model", {"a": 1}) != before  # an entry of another release is not read back


def test_the_key_does_not_depend_on_the_order_of_the_settings():
    assert settings_key("model", {"a": 1, "b": {"x": 1, "y": 2}}) == settings_key(
        "model", {"b": {"y": 2, "x": 1}, "a": 1}
    )


def test_an_entry_whose_settings_are_not_its_keys_is_discarded(tmp_path):
    cache = ResultCache(tmp_path)
    cache.save("model", {"a": 1}, {"value": torch.arange(3)})
    shutil.copy(cache.path("model", {"a": 1}), cache.path("model", {"a": 2}))  # a file under another entry's name
    with pytest.warns(RuntimeWarning, match="its settings do not match"):
        assert cache.load("model", {"a": 2}) is None
    assert not cache.path("model", {"a": 2}).exists() and cache.load("model", {"a": 1})["settings"] == {"a": 1}
