"""The evaluation's certified section: its settings, its cache entries (and that they leave the keys of the models
and attacks alone), the table, the figure and the per-image CSV."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from nemesis_fast.evaluation import ConfigError, evaluate, load_config, preset_path
from nemesis_fast.evaluation.cache import ResultCache, settings_key
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.parallel import Workers

TINY = """
dataset = "mnist"
test_samples = 12
batch_size = 6
defenses = ["standard", "gda_brelu"]
blackbox_attacks = []
whitebox_attacks = []

[training]
epochs = 1
train_samples = 300

[defense]
gda_copies = 1

[certify]
images = 9
n0 = 8
n = 60
alpha = 0.01
"""


def _evaluation(config) -> Evaluation:
    return Evaluation(config, Workers(), log=lambda message: None, progress=False)


def _all_keys(evaluation: Evaluation) -> dict[str, str]:
    """The cache file name of every model, training state and attack unit of the run."""
    keys: dict[str, str] = {}
    models, attacks = evaluation.models, evaluation.attacks
    for name in [*evaluation.config.defenses, SOURCE]:
        keys[f"model {name}"] = settings_key("model", models.key(name))
        keys[f"training {name}"] = settings_key("training", models.key(name))
    chunk = evaluation.chunks()[0]
    for attack in ("fgsm", "rfgsm", "deepfool", "jsma", "cw"):
        keys[f"blackbox {attack}"] = settings_key("blackbox", attacks.blackbox_key(attack, None, chunk))
        for defense in evaluation.config.defenses:
            keys[f"whitebox {defense} {attack}"] = settings_key(
                "whitebox", attacks.whitebox_key(defense, attack, chunk, eps=0.1)
            )
    for unit in evaluation._work():
        if unit.kind != "certify":
            keys[f"unit {unit}"] = "listed"
    return keys


@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_certify_settings_never_reach_the_keys_of_models_training_or_attacks(tmp_path, preset):
    base = load_config(preset_path(preset), {"out_dir": str(tmp_path)})
    assert base.certify.images > 0
    changed = copy.deepcopy(base)
    changed.certify.images, changed.certify.sigma, changed.certify.n0, changed.certify.n = 3, 0.71, 7, 77
    changed.certify.alpha, changed.certify.batch_size, changed.certify.radii = 0.2, 3, [0.5]
    changed.certify.defenses = ["gda"]
    off = copy.deepcopy(base)
    off.certify = type(base.certify)()  # the section at its defaults: no certification
    keys = [_all_keys(_evaluation(c)) for c in (base, changed, off)]
    assert keys[0] == keys[1] == keys[2]
    assert len([k for k in keys[0] if k.startswith("model")]) == len(base.defenses) + 1


def test_certify_settings_are_checked_before_any_work(tmp_path):
    path = tmp_path / "c.toml"
    for line, key in [
        ("n0 = 0", "certify.n0"),
        ("n = -5", "certify.n "),
        ("alpha = 1.5", "certify.alpha"),
        ("sigma = -0.3", "certify.sigma"),
        ("batch_size = 0", "certify.batch_size"),
        ('defenses = ["vat"]', "certify.defenses"),
        ("radii = [0.5, -0.25]", r"certify.radii\[1\]"),
        ("images = -1", "certify.images"),
        ("sigma = 0", "certify.sigma must be > 0"),
        ("colour = 1", "unknown setting certify.colour"),
        ('n = "many"', "certify.n must be an integer"),
    ]:
        path.write_text(TINY.split("[certify]")[0] + f"[certify]\n{line}\n")
        with pytest.raises(ConfigError, match=key):
            load_config(path)


def test_presets_certify_every_defense_at_the_gda_sigma():
    quick, paper = load_config(preset_path("quick")), load_config(preset_path("paper"))
    assert quick.certify.defenses is None and paper.certify.defenses is None
    assert quick.certify.images * (quick.certify.n0 + quick.certify.n) * 7 <= 60_000  # a few seconds on a CPU
    assert (paper.certify.images, paper.certify.n, paper.certify.sigma) == (200, 10_000, 0.3)


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["certified"]


@pytest.mark.slow
def test_certified_section_is_reported_cached_and_independent_of_chunking(tmp_path, monkeypatch):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    cache = str(tmp_path / "cache")
    evaluate(config, out_dir=str(tmp_path / "a"), cache_dir=cache, log=False)
    out = tmp_path / "a"
    rows = _rows(out)
    assert [r["defense"] for r in rows] == ["standard", "gda_brelu"]
    for r in rows:
        assert r["samples"] == 9 and len(r["accuracy"]) == 5 and r["n"] == 60 and r["sigma"] == 0.3
        assert r["accuracy"] == sorted(r["accuracy"], reverse=True)  # certified accuracy falls with the radius
    assert (out / "certified.png").stat().st_size > 0
    assert "Certified accuracy (%) within L2 radius" in (out / "results.md").read_text()
    with open(out / "certified.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 18 and set(lines[0]) == {"defense", "index", "label", "prediction", "radius", "correct"}

    saves: list[str] = []
    real_save = ResultCache.save
    monkeypatch.setattr(ResultCache, "save", lambda self, k, s, p: saves.append(k) or real_save(self, k, s, p))
    text = TINY.replace("batch_size = 6", "batch_size = 4").replace("alpha = 0.01", "alpha = 0.01\nbatch_size = 7")
    config.write_text(text)  # other chunks of test images, another certify.batch_size
    evaluate(config, out_dir=str(tmp_path / "b"), cache_dir=cache, log=False)
    assert "model" not in saves and saves.count("certify") == 2 * 3  # new chunk bounds: recertified ...
    for mine, theirs in zip(rows, _rows(tmp_path / "b")):  # ... to the same numbers, image by image
        assert mine["prediction"] == theirs["prediction"] and mine["radius"] == theirs["radius"]
    saves.clear()
    evaluate(config, out_dir=str(tmp_path / "c"), cache_dir=cache, log=False)
    assert saves == []  # all cached
