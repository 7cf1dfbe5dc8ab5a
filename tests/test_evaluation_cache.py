"""The evaluation's cache: the keys of the models and attack units (what they hold and what they leave out), reuse
by a larger or moved run, older keys, damaged entries, `--cached-only` looks, and the chunks' random draws."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from _evaluation_cases import TINY, cell_values, write_config
from _support import damage_tensor_bytes

from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR
from nemesis_fast.evaluation import evaluate, load_config
from nemesis_fast.evaluation.cache import ResultCache
from nemesis_fast.evaluation.config import ConfigError
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.parallel import Workers


def _cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.pt"))


@pytest.mark.slow
def test_more_test_images_moved_files_and_older_keys_reuse_the_cache(tmp_path, monkeypatch):
    """The keys hold the data's content: a run on more test images, or on a copy of the files elsewhere, trains no
    model again and attacks only its new chunks; a cache written under the older keys (the data's path and both
    sets' sizes) is read, and moved to the current keys."""
    for folder in ("a", "b"):
        shutil.copytree(MNIST_SAMPLE_DIR, tmp_path / folder)
    cache = tmp_path / "cache"
    text = TINY.replace("test_samples = 24", "test_samples = 16")
    first = write_config(
        tmp_path, text, out_dir=str(tmp_path / "o1"), data_dir=str(tmp_path / "a"), cache_dir=str(cache)
    )
    evaluate(first, log=False)
    written, cells = _cache_files(cache), cell_values(tmp_path / "o1" / "results.json")

    # The same cache as the keys were before they held the data's content.
    older_form = Evaluation(load_config(first), Workers(), log=lambda m: None, progress=False)._legacy_settings
    for path in cache.rglob("*.pt"):
        entry = torch.load(path, weights_only=True)
        settings = entry.pop("settings")
        older = older_form(settings)
        assert older != settings  # every entry's key names the data
        ResultCache(cache).save(path.parent.name, older, entry)
        path.unlink()
    assert not set(_cache_files(cache)) & set(written)

    def no_training(*args, **kwargs):
        raise AssertionError("a model was trained again")

    monkeypatch.setattr("nemesis_fast.evaluation.train.train", no_training)
    evaluate(first, log=False)
    # Every entry read is moved to its current key (of the adversarial images, only those the report shows are read:
    # their verdicts are cached).
    now = _cache_files(cache)
    assert [f for f in now if not f.startswith("blackbox/")] == [f for f in written if not f.startswith("blackbox/")]
    assert len(now) == len(written)
    assert cell_values(tmp_path / "o1" / "results.json") == cells

    saves: list[tuple[str, list]] = []
    real_save = ResultCache.save
    monkeypatch.setattr(
        ResultCache, "save", lambda self, k, s, p: saves.append((k, s["chunk"])) or real_save(self, k, s, p)
    )
    second = write_config(tmp_path, out_dir=str(tmp_path / "o2"), data_dir=str(tmp_path / "b"), cache_dir=str(cache))
    evaluate(second, log=False)
    assert saves and {tuple(chunk) for _, chunk in saves} == {(16, 24)}  # the new chunk only


def test_an_entry_under_its_older_key_is_read_once_and_moved(tmp_path, monkeypatch):
    plain = ResultCache(tmp_path)
    cache = ResultCache(tmp_path, legacy=lambda settings: {k: v for k, v in settings.items() if k != "new"})
    current, older = {"a": 1, "new": 2}, {"a": 1}
    plain.save("x", older, {"value": torch.arange(3)})
    assert cache.has("x", current) and not plain.has("x", current)
    entry = cache.load("x", current)
    assert torch.equal(entry["value"], torch.arange(3)) and entry["settings"] == current
    assert not plain.path("x", older).exists() and plain.load("x", current)["settings"] == current
    plain.save("x", older, {"value": 0})  # both forms: the current one wins, discard removes both
    assert cache.load("x", current)["value"].tolist() == [0, 1, 2]
    cache.discard("x", current)
    assert not cache.has("x", current) and list(tmp_path.rglob("*.pt")) == []
    assert cache.load("x", {"a": 5, "new": 6}) is None
    plain.save("x", older, {"value": 1})  # a cache this process cannot write to: the entry is read, not moved

    def refused(*args, **kwargs):
        raise PermissionError("read-only cache")

    monkeypatch.setattr(ResultCache, "save", refused)
    assert cache.load("x", current)["value"] == 1 and plain.path("x", older).is_file()


def test_a_look_at_a_run_not_started_trains_nothing(tmp_path, monkeypatch):
    saves: list[str] = []
    monkeypatch.setattr(ResultCache, "save", lambda self, kind, settings, payload: saves.append(kind))
    config = write_config(tmp_path, out_dir=str(tmp_path / "out"))
    results = evaluate(config, log=False, cached_only=True)
    assert saves == [] and results.cells == [] and results.clean_accuracy == {}
    assert list((tmp_path / "out" / "partial" / "models").iterdir()) == []
    assert results.pending == 2 * 3 + 3 * (3 * 2 + 2 * 2)  # black-box and white-box chunks (BPDA-free rows too)


def test_a_look_at_a_cache_this_process_cannot_write_reads_it(tmp_path, monkeypatch):
    """A shared, read-only cache: a run refuses it before any work, a look at it (cached_only) reads it; a damaged
    entry there is skipped, not removed (the removal's error is no crash)."""
    cache = tmp_path / "shared"
    (cache / "x").mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != cache and real_access(path, mode))
    config = write_config(tmp_path, out_dir=str(tmp_path / "out"), cache_dir=str(cache))
    with pytest.raises(ConfigError, match="cache_dir: the folder .*shared' is not writable"):
        evaluate(config, log=False)
    assert evaluate(config, log=False, cached_only=True).pending > 0
    (cache / "x" / "damaged.pt").write_bytes(b"half a file")
    store = ResultCache(cache)
    monkeypatch.setattr(store, "path", lambda kind, settings: cache / "x" / "damaged.pt")

    def refused(self, missing_ok=False):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(Path, "unlink", refused)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert store.load("x", {"a": 1}) is None


def test_a_damaged_cache_entry_is_recomputed(tmp_path):
    cache = ResultCache(tmp_path)
    cache.save("x", {"a": 1}, {"value": 3})
    assert cache.load("x", {"a": 1})["value"] == 3
    cache.path("x", {"a": 1}).write_bytes(b"half a file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert cache.load("x", {"a": 1}) is None
    assert not cache.path("x", {"a": 1}).exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    correct = torch.tensor([True, False] * 32)  # bytes changed inside a tensor: readable, other numbers
    cache.save("x", {"a": 1}, {"correct": correct})
    damage_tensor_bytes(cache.path("x", {"a": 1}), correct)
    with pytest.warns(RuntimeWarning, match=r"unreadable cache entry .* \(its record '.*/data/0' fails its CRC-32\)"):
        assert cache.load("x", {"a": 1}) is None


def test_adversarial_images_are_crafted_once_and_shared_with_the_verdicts(tmp_path, monkeypatch):
    config = load_config(write_config(tmp_path, out_dir=str(tmp_path / "o")))
    attacks = Evaluation(config, Workers(), log=lambda m: None, progress=False).attacks
    entry = attacks.adversarial("fgsm", None, (0, 8))
    assert entry["x_adv"].shape == (8, 1, 28, 28) and entry["l2"].shape == (8,)

    def craft_again(*args, **kwargs):
        raise AssertionError("crafted again instead of read from the cache")

    monkeypatch.setattr(attacks, "make", craft_again)
    torch.testing.assert_close(attacks.adversarial("fgsm", None, (0, 8))["x_adv"], entry["x_adv"])
    verdict = attacks.blackbox("fgsm", None, (0, 8))  # judged on the cached images, not new ones
    torch.testing.assert_close(verdict["l2"], entry["l2"])
    assert set(verdict["correct"]) == set(config.defenses)


def test_chunks_cover_the_test_images(tmp_path):

    config = load_config(write_config(tmp_path, out_dir=str(tmp_path / "o")))
    evaluation = Evaluation(config, Workers(), log=lambda m: None, progress=False)
    assert evaluation.chunks() == [(0, 8), (8, 16), (16, 24)]
    assert evaluation.chunks(12) == [(0, 8), (8, 12)]


def test_random_draws_are_keyed_by_the_chunks_bounds_not_its_index(tmp_path):

    config = load_config(write_config(tmp_path, out_dir=str(tmp_path / "o")))
    attacks = Evaluation(config, Workers(), log=lambda m: None, progress=False).attacks
    assert attacks.seed("rfgsm", (8, 16)) == attacks.seed("rfgsm", (8, 16))
    assert attacks.seed("rfgsm", (8, 16)) != attacks.seed("rfgsm", (0, 8))
    config.batch_size = 4  # another chunking: a chunk with other bounds draws, and is cached, under its own key
    other = Evaluation(config, Workers(), log=lambda m: None, progress=False).attacks
    assert other.seed("rfgsm", (8, 16)) == attacks.seed("rfgsm", (8, 16))
    assert attacks.blackbox_key("rfgsm", None, (8, 12)) != attacks.blackbox_key("rfgsm", None, (8, 16))


def test_how_many_images_an_attack_takes_stays_out_of_its_units_keys(tmp_path):
    """cw_test_samples and pgd_test_samples choose the chunks, not what a chunk computes: a run attacking more
    images reuses the chunks it shares with the earlier run; the keys' older form (read from caches written before)
    holds them as it did."""
    keys = []
    for samples in (8, 16):
        config = load_config(write_config(tmp_path, out_dir=str(tmp_path / "o")))
        config.attack.cw_test_samples = config.attack.pgd_test_samples = samples
        evaluation = Evaluation(config, Workers(), log=lambda m: None, progress=False)
        attacks = evaluation.attacks
        unit = {
            "blackbox": attacks.verdict_key("cw", None, (0, 8)),
            "whitebox": attacks.whitebox_key("standard", "pgd", (0, 8), eps=0.2),
            "perturbation": attacks.perturbation_key("standard", "cw", (0, 8)),
        }
        keys.append(unit)
        for key in unit.values():
            older = evaluation._legacy_settings(key)["settings"]
            assert older[f"{key['attack']}_test_samples"] == samples and older.items() > key["settings"].items()
    assert keys[0] == keys[1]
    assert "pgd_steps" in keys[0]["whitebox"]["settings"]  # the settings that change a chunk's outcome stay


def test_settings_a_model_or_unit_does_not_depend_on_stay_out_of_its_key(tmp_path):
    """BReLU's t is not in the keys of the ReLU models, the source's architecture not in those of the other models,
    the squeeze bits not in those of the other defenses' units; their keys' older form holds them as it did."""
    evaluations = []
    for t, depth, bits in ((1.0, 8, 1), (0.5, 14, 3)):
        config = load_config(write_config(tmp_path, out_dir=str(tmp_path / "o")))
        config.defense.brelu_t, config.training.source_depth, config.defense.squeeze_bits = t, depth, bits
        evaluations.append(Evaluation(config, Workers(), log=lambda m: None, progress=False))

    def keys(evaluation: Evaluation, kind: str) -> dict[str, Any]:
        attacks, chunk = evaluation.attacks, (0, 8)
        if kind == "model":
            return {d: evaluation.models.key(d) for d in ("standard", "gda_brelu", SOURCE)}
        return {d: attacks.whitebox_key(d, "fgsm", chunk, eps=0.2) for d in ("standard", "feature_squeezing")}

    first, second = (keys(e, "model") for e in evaluations)
    assert first["standard"] == second["standard"]  # t, depth: a ReLU model of its own recipe
    assert (
        first["gda_brelu"]["architecture_kwargs"]["t"] == 1.0 and second["gda_brelu"]["architecture_kwargs"]["t"] == 0.5
    )
    assert first[SOURCE] != second[SOURCE]
    first, second = (keys(e, "whitebox") for e in evaluations)
    assert first["standard"] == second["standard"] and first["feature_squeezing"] != second["feature_squeezing"]
    older = evaluations[1]._legacy_settings(second["standard"])
    assert older["squeeze_bits"] == 3 and older["defense"]["architecture_kwargs"]["t"] == 0.5
    assert older["defense"]["training"]["source_depth"] == 14
    verdicts = evaluations[1].attacks.verdict_key("fgsm", None, (0, 8))["defenses"]
    assert "squeeze_bits" not in verdicts["standard"] and verdicts["feature_squeezing"]["squeeze_bits"] == 3
    assert evaluations[1]._legacy_settings(verdicts)["standard"]["squeeze_bits"] == 3


def test_a_model_validated_on_a_keras_count_of_last_rows_other_than_rounding_has_a_key_of_its_own(tmp_path):
    """Models validated on their last rows held out round(total * fraction) rows before they held out Keras' count;
    where the two differ, the key holds the count, so that no model trained the older way is read for it."""
    text = TINY.replace("gda_copies = 2", "gda_copies = 10\ngda_fixed_set = true\ngda_clip = false")
    text = text.replace("[training]", '[training]\naugmented_validation = "last_rows"')
    held = {}
    for samples in (55, 60):  # 605 rows: 61 held out, 60 by rounding; 660 rows: 66 either way
        config = load_config(write_config(tmp_path, text.replace("train_samples = 600", f"train_samples = {samples}")))
        models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
        held[samples] = models.key("gda_brelu")["training"].get("held_out_rows")
        assert "held_out_rows" not in models.key("standard")["training"]  # validated on images: no last rows
    assert held == {55: 61, 60: None}


def test_a_builder_put_in_place_of_a_built_in_one_has_a_key_of_its_own(tmp_path, monkeypatch):
    """A model of one's own under a built-in's name (`MODELS["mnist_cnn"] = ...`) is not handed the cached weights
    of the built-in model of the same shapes: its key holds its code's digest; the package's own builders' keys are
    as they were (no digest), so the caches written before stay valid."""
    from nemesis_fast import models as models_module

    config = load_config(write_config(tmp_path, out_dir=str(tmp_path / "o")))

    def keys() -> dict[str, Any]:
        models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
        return {d: models.key(d) for d in ("standard", "gda_brelu", SOURCE)}

    built_in = keys()
    assert all("builder" not in key for key in built_in.values())
    original = models_module.MODELS["mnist_cnn"]

    def same_shapes(**kwargs: Any) -> torch.nn.Module:
        return original(**kwargs)

    def other_code(**kwargs: Any) -> torch.nn.Module:
        return original(**{**kwargs, "activation": "brelu"})

    digests = []
    for builder in (same_shapes, other_code):
        monkeypatch.setitem(models_module.MODELS, "mnist_cnn", builder)
        replaced = keys()
        assert replaced["standard"] != built_in["standard"] and replaced[SOURCE] == built_in[SOURCE]
        digests.append(replaced["standard"]["builder"])
        assert digests[-1].startswith(f"{__name__}.{builder.__qualname__}:")
    assert digests[0].split(":")[1] != digests[1].split(":")[1]
    monkeypatch.setitem(models_module.MODELS, "mnist_cnn", original)
    assert keys() == built_in
