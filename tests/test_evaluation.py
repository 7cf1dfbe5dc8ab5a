"""The robustness evaluation run: the CLI end to end, the keys of the models and attack units, resuming an
interrupted run or training, the cache, sharding under torchrun, CIFAR-10 and synthetic data, the eps sweep and
perturbation figures. (Config checking and the presets: test_evaluation_config.py; the report's checks and
tables: test_evaluation_report.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _evaluation_cases import TINY, write_config
from _support import damage_tensor_bytes, write_cifar

from nemesis_fast.checkpoints import load_checkpoint
from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR
from nemesis_fast.defenses import FeatureSqueezing
from nemesis_fast.evaluation import evaluate, load_config
from nemesis_fast.evaluation.cache import ResultCache
from nemesis_fast.evaluation.config import ConfigError
from nemesis_fast.evaluation.dataset import load_data
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.parallel import Workers
from nemesis_fast.training import evaluate_accuracy


def evaluate_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nemesis_fast.cli", "evaluate", "--config", str(config), "--no-progress", *extra]


def cell_values(results_json: Path) -> list[tuple]:
    data = json.loads(results_json.read_text())
    return [
        (c["defense"], c["attack"], c["setting"], c["eps"], c["accuracy"], round(c["mean_l2"], 5))
        for c in data["cells"]
    ]


def test_defenses_with_a_bpda_variant_are_attacked_both_ways_under_distinct_keys(tmp_path):
    config = load_config(write_config(tmp_path, out_dir=str(tmp_path / "o")))
    evaluation = Evaluation(config, Workers(), log=lambda m: None, progress=False)
    attacks = evaluation.attacks
    assert [d for d in config.defenses if attacks.has_bpda(d)] == ["feature_squeezing", "gda_brelu"]
    whitebox = [(u.defense, u.bpda) for u in evaluation._work() if u.kind == "whitebox" and u.eps == 0.2]
    assert sorted(set(whitebox)) == [
        ("feature_squeezing", False),
        ("feature_squeezing", True),
        ("gda_brelu", False),
        ("gda_brelu", True),
        ("standard", True),
    ]
    chunk = (0, 8)
    own, bpda = (attacks.whitebox_key("gda_brelu", "fgsm", chunk, b, eps=0.2) for b in (False, True))
    # The entries of a BReLU model's own gradient keep the key they had before it had a BPDA variant.
    assert own["bpda"] is True and "brelu_gradient" not in own
    assert bpda["brelu_gradient"] == "relu" and {k: v for k, v in bpda.items() if k != "brelu_gradient"} == own
    assert attacks.whitebox_key("feature_squeezing", "fgsm", chunk, False, eps=0.2)["bpda"] is False
    assert "brelu_gradient" not in attacks.whitebox_key("standard", "fgsm", chunk, eps=0.2)
    # The perturbation figure's C&W runs at its own confidence (0: the smallest perturbation that fools).
    assert attacks.perturbation_key("standard", "cw", chunk)["confidence"] == 0.0
    assert "confidence" not in attacks.perturbation_key("standard", "deepfool", chunk)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    config.attack.cw_confidence = 5.0
    assert attacks.make("cw", model, 0).confidence == 5.0
    assert attacks.make("cw", model, 0, confidence=0.0).confidence == 0.0


@pytest.mark.slow
def test_cli_end_to_end_on_a_tiny_configuration(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "out"
    cmd = evaluate_command(config, "--out", str(out))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Black-box accuracy" in run.stdout and "GDA + BReLU" in run.stdout
    assert "Feature squeezing (gradient masking)" in run.stdout and "GDA + BReLU (gradient masking)" in run.stdout
    for name in ("results.json", "results.csv", "results.md", "whitebox.png", "examples.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert data["version"] and data["config"]["attack"]["jsma_gamma"] == 0.05
    assert len(data["cells"]) == 3 * 2 + (3 + 2) * 2  # black-box cells + white-box cells (and BPDA-free rows)
    clean = {c["defense"]: c["accuracy"] for c in data["cells"] if c["setting"] == "whitebox" and c["eps"] == 0.0}
    assert clean == pytest.approx({d: data["clean_accuracy"][d] for d in clean})
    # Every model trained, as a checkpoint (feature squeezing is the standard model behind the squeezing).
    models = out / "models"
    assert sorted(p.name for p in models.iterdir()) == ["gda_brelu.pt", "resnet_source.pt", "standard.pt"]
    model, meta = load_checkpoint(models / "gda_brelu.pt")
    assert meta["recipe"] == "gda" and meta["noise_sigma"] == 0.3
    assert meta["architecture"]["kwargs"]["activation"] == "brelu"
    assert meta["metrics"]["test_accuracy"] == pytest.approx(data["clean_accuracy"]["gda_brelu"] / 100)
    test = load_data(load_config(config))
    accuracy = evaluate_accuracy(model, test.test_images[:24], test.test_labels[:24])
    assert 100 * accuracy == pytest.approx(data["clean_accuracy"]["gda_brelu"])
    certify = [sys.executable, "-m", "nemesis_fast.cli", "certify", "--checkpoint", str(models / "gda_brelu.pt")]
    certify += ["--images", "2", "--n0", "10", "--n", "50", "--out", str(tmp_path / "c.csv"), "--no-progress"]
    run = subprocess.run(certify, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "sigma 0.3" in run.stdout + run.stderr, run.stderr[-3000:]


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    config = write_config(tmp_path, out_dir=str(tmp_path / "out"))
    saves: list[str] = []
    interrupt = [True]
    real_save = ResultCache.save

    def counting_save(self, kind, settings, payload):
        saves.append(kind)
        if interrupt[0] and kind == "whitebox" and saves.count("whitebox") == 4:
            raise Interrupted  # the process dies after three white-box chunks were written
        return real_save(self, kind, settings, payload)

    monkeypatch.setattr(ResultCache, "save", counting_save)
    with pytest.raises(Interrupted):
        evaluate(config, log=False)
    written = list(saves)
    total_whitebox = 3 * (3 * 2 + 2 * 2)  # chunks x (defenses x eps + the gradient-masking rows' eps)

    # A look at the unfinished run computes nothing and reports only what is complete, apart from its outputs.
    partial = evaluate(config, log=False, cached_only=True)
    assert saves == written
    assert partial.pending == total_whitebox - 3
    assert set(partial.clean_accuracy) == {"standard", "feature_squeezing", "gda_brelu"}
    assert len(partial.blackbox()) == 3 * 2
    assert [(c.defense, c.eps, c.samples) for c in partial.cells if c.setting != "blackbox"] == [("standard", 0.0, 24)]
    assert (tmp_path / "out" / "partial" / "results.json").is_file()
    assert not (tmp_path / "out" / "results.json").exists()
    assert "Partial report of an unfinished run" in (tmp_path / "out" / "partial" / "results.md").read_text()
    # The models trained before the interruption, as checkpoints.
    kept = sorted(p.name for p in (tmp_path / "out" / "partial" / "models").iterdir())
    assert kept == ["gda_brelu.pt", "resnet_source.pt", "standard.pt"]

    saves.clear()
    interrupt[0] = False
    evaluate(config, log=False)
    assert "model" not in saves  # no model is trained twice
    assert saves.count("blackbox") == 0  # finished black-box chunks are reused
    assert saves.count("whitebox") == total_whitebox - 3
    assert written.count("model") == 3  # standard, gda_brelu and the source, each once
    resumed = cell_values(tmp_path / "out" / "results.json")
    monkeypatch.setattr(ResultCache, "save", real_save)
    evaluate(config, out_dir=str(tmp_path / "fresh"), log=False)
    assert resumed == cell_values(tmp_path / "fresh" / "results.json")
    complete = evaluate(config, log=False, cached_only=True)
    assert complete.pending == 0
    assert cell_values(tmp_path / "out" / "partial" / "results.json") == resumed


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


@pytest.mark.slow
def test_sharded_run_equals_single_process(tmp_path):
    config = write_config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = evaluate_command(config, "--device", "cpu", "--threads", "1")  # CPU training depends on the threads
    single = subprocess.run(
        [*base, "--out", str(tmp_path / "single")], capture_output=True, text=True, env=env, timeout=900
    )
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    sharded = subprocess.run(
        [*torchrun, "nemesis_fast.cli", *base[3:], "--out", str(tmp_path / "sharded")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    data = json.loads((tmp_path / "sharded" / "results.json").read_text())
    assert data["world_size"] == 2 and data["threads"] == 1
    assert "rank 1 trains" in sharded.stderr or "rank 0 trains" in sharded.stderr
    assert cell_values(tmp_path / "sharded" / "results.json") == cell_values(tmp_path / "single" / "results.json")


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


def test_compile_with_fewer_training_images_than_a_batch_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr("nemesis_fast.evaluation.train.train", lambda *a, **k: pytest.fail("trained"))
    text = TINY.replace("train_samples = 600", "train_samples = 100").replace(
        "[training]", "[training]\ncompile = true"
    )
    with pytest.raises(ConfigError, match="training.batch_size 128 is more than the 90 images .* training.compile"):
        evaluate(write_config(tmp_path, text), out_dir=str(tmp_path / "o"), log=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cifar10_files_end_to_end(tmp_path):
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", n=40)
    text = TINY.replace("whitebox_eps = [0.0, 0.2]", "whitebox_eps = [0.0, 0.03]").replace('dataset = "mnist"\n', "")
    config = write_config(tmp_path, text)  # budgets written for no data set in particular: --dataset may choose
    results = evaluate(
        config, dataset="cifar10", data_dir=str(tmp_path / "cifar"), out_dir=str(tmp_path / "out"), log=False
    )
    assert results.config["dataset"] == "cifar10" and results.config["attack"]["fgsm_eps"] == pytest.approx(8 / 255)
    assert set(results.data) == {"train", "test"} and results.data["test"].startswith("sha256:")
    assert {c.defense for c in results.cells} == {"standard", "feature_squeezing", "gda_brelu"}
    assert all(c.samples == 24 for c in results.cells)
    assert (tmp_path / "out" / "examples.png").stat().st_size > 0


def test_synthetic_data_has_the_data_sets_shape(tmp_path):
    config = load_config(overrides={"dataset": "cifar10", "synthetic": True, "test_samples": 10})
    data = load_data(config)
    assert data.train_images.shape == (50_000, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and int(data.test_labels.max()) < 10
    assert torch.equal(load_data(config).test_images, data.test_images)  # seeded


AUTHORS_TINY = (
    TINY.replace('whitebox_attacks = ["fgsm"]', 'whitebox_attacks = ["fgsm", "pgd"]')
    .replace("whitebox_eps = [0.0, 0.2]", "whitebox_eps = [0.1, 0.6]")
    .replace("source_depth = 8", 'source_architecture = "small_resnet"')
    .replace("gda_copies = 2", "gda_copies = 2\ngda_clip = false\ngda_fixed_set = true\nsqueeze_training = true")
    .replace(
        "jsma_gamma = 0.05",
        'jsma_gamma = 0.05\njsma_use_logits = false\nfgsm_labels = "predicted"\nrfgsm_labels = "predicted"\n'
        "rfgsm_alpha_fixed = true\npgd_steps = 3\npgd_restarts = 2\npgd_test_samples = 16",
    )
)


@pytest.mark.slow
def test_eps_sweep_perturbations_and_checks_are_reported_and_reproducible(tmp_path):
    config = write_config(
        tmp_path,
        AUTHORS_TINY.replace('blackbox_attacks = ["fgsm", "jsma"]', 'blackbox_attacks = ["fgsm", "rfgsm"]'),
        blackbox_eps=[0.05, 0.3],
        perturbation_attacks=["deepfool", "jsma"],
        perturbation_samples=8,
    )
    first = evaluate(config, out_dir=str(tmp_path / "a"), log=False)
    second = evaluate(config, out_dir=str(tmp_path / "b"), log=False, save_models=False)  # a fresh cache
    assert not (tmp_path / "b" / "models").exists()
    # The model trained on squeezed images is saved behind its squeezer, and loads back so.
    squeezed, meta = load_checkpoint(tmp_path / "a" / "models" / "feature_squeezing.pt")
    assert meta["recipe"] == "standard" and meta["squeezer"] == {"bit_depth": 1, "median_size": None, "bpda": True}
    assert isinstance(squeezed, FeatureSqueezing) and squeezed.bit_depth == 1
    test = load_data(load_config(config))
    accuracy = evaluate_accuracy(squeezed, test.test_images, test.test_labels)
    assert 100 * accuracy == pytest.approx(first.clean_accuracy["feature_squeezing"])
    assert cell_values(tmp_path / "a" / "results.json") == cell_values(tmp_path / "b" / "results.json")
    assert [(p.defense, p.attack, p.setting, p.values) for p in first.perturbations] == [
        (p.defense, p.attack, p.setting, p.values) for p in second.perturbations
    ]
    for name in ("blackbox_eps.png", "perturbation.png", "whitebox.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    sweep = {(c.defense, c.attack, c.eps) for c in first.blackbox_sweep("fgsm") + first.blackbox_sweep("rfgsm")}
    assert sweep == {(d, a, e) for d in first.config["defenses"] for a in ("fgsm", "rfgsm") for e in (0.05, 0.3)}
    assert {c.eps for c in first.blackbox()} == {0.3}  # the table holds the configured eps
    assert {c.samples for c in first.whitebox("pgd")} == {16}
    masked = "whitebox-gradient-masking"  # feature squeezing and GDA + BReLU through their own gradient too
    assert {(p.defense, p.attack, p.setting) for p in first.perturbations} == {
        (d, a, s)
        for d in first.config["defenses"]
        for a in ("deepfool", "jsma")
        for s in (("whitebox", masked) if d in ("feature_squeezing", "gda_brelu") else ("whitebox",))
    }
    assert all(p.samples <= 8 and p.norm == ("l0" if p.attack == "jsma" else "l2") for p in first.perturbations)
    report = (tmp_path / "a" / "results.md").read_text()
    for title in ("against eps (the eps sweep)", "minimal perturbation", "Gradient-masking checks", "(94.46, "):
        assert title in report, title
    assert "| GDA + BReLU (gradient masking) | DeepFool | L2 |" in report
    # JSMA follows the softmax here: every model's share of class probabilities at 0 is measured and checked.
    assert set(first.softmax_underflow) == set(first.config["defenses"])
    assert all(0 <= v <= 100 for v in first.softmax_underflow.values()) and "JSMA's softmax gradient" in report
    # White-box FGSM runs: every model's share of test images with a zero FGSM gradient is measured and checked.
    assert set(first.fgsm_zero_gradient) == set(first.config["defenses"])
    assert all(0 <= v <= 100 for v in first.fgsm_zero_gradient.values()) and "FGSM's zero gradient" in report


def test_the_authors_training_options_reach_the_models_keys(tmp_path):
    from nemesis_fast.evaluation.train import SOURCE

    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    config.defense.vat_mode = "offline"
    models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
    assert models.key("vat")["recipe_settings"]["mode"] == "offline" and "source_model" in models.key("vat")
    gda = models.key("gda_brelu")["recipe_settings"]
    assert gda["fixed_set"] is True and gda["clip"] is None
    squeezed = models.key("feature_squeezing")  # trained on squeezed images: a model of its own
    assert squeezed["model"] == "feature_squeezing" and squeezed["squeeze_bits_in_training"] == 1
    assert models.architecture(SOURCE) == ("small_resnet", {"in_channels": 1, "input_size": 28})
    assert models.needed() == ["standard", "feature_squeezing", "gda_brelu", SOURCE]
    config.defense.squeeze_training = False  # at prediction only: the standard model behind the squeezer
    assert models.key("feature_squeezing") == models.key("standard")


def test_validation_on_last_rows_reaches_the_models_trained_on_an_enlarged_set_only(tmp_path):
    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    config.defenses = ["standard", "feature_squeezing", "vat", "gda_brelu"]
    config.defense.vat_mode = "offline"
    models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
    names = models.needed()
    before = {name: models.key(name) for name in names}
    assert all("augmented_validation" not in key["training"] for key in before.values())  # keys written before
    assert {models.budget(name)["val_rows"] for name in names} == {"images"}
    config.training.augmented_validation = "last_rows"
    enlarged = {"vat", "gda_brelu"}  # offline examples, GDA's fixed copies
    for name in names:
        key, val_rows = models.key(name), models.budget(name)["val_rows"]
        if name in enlarged:
            assert key["training"]["augmented_validation"] == "last_rows" and val_rows == "last", name
        else:
            assert key == before[name] and val_rows == "images", name
    config.defense.vat_mode = "online"  # trained on the images alone
    assert models.budget("vat")["val_rows"] == "images"


def test_the_sources_own_epochs_reach_its_key_and_its_training_only(tmp_path, monkeypatch):
    from nemesis_fast.evaluation import train as train_phase

    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
    names = models.needed()
    before = {name: models.key(name) for name in names}
    assert all("source_epochs" not in key["training"] for key in before.values())  # keys written before it exist
    config.training.source_epochs = config.training.epochs  # the same budget: the same models
    assert {name: models.key(name) for name in names} == before
    config.training.source_epochs = config.training.epochs + 2
    after = {name: models.key(name) for name in names}
    assert after[train_phase.SOURCE]["training"]["epochs"] == config.training.epochs + 2
    assert all(after[name] == before[name] for name in names if name != train_phase.SOURCE)

    budgets = {}

    def record(model, data, recipe, **budget):
        budgets[len(budgets)] = budget["epochs"]
        raise Interrupted

    monkeypatch.setattr(train_phase, "train", record)
    for name, epochs in ((train_phase.SOURCE, config.training.epochs + 2), ("standard", config.training.epochs)):
        with pytest.raises(Interrupted):
            models._train(name, {})
        assert budgets.popitem()[1] == epochs, name


def test_the_sources_first_images_reach_its_key_and_its_training_only(tmp_path, monkeypatch):
    from nemesis_fast.evaluation import train as train_phase

    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    evaluation = Evaluation(config, Workers(), log=lambda m: None, progress=False)
    models, data = evaluation.models, evaluation.data
    names = models.needed()
    before = {name: models.key(name) for name in names}
    assert all("first_images" not in key["training"] for key in before.values())  # keys written before it exist
    config.training.source_train_images = 200
    after = {name: models.key(name) for name in names}
    assert after[train_phase.SOURCE]["training"]["first_images"] == 200
    assert all(after[name] == before[name] for name in names if name != train_phase.SOURCE)

    calls = []

    def record(model, rows, recipe, **budget):
        calls.append((rows, budget))
        raise Interrupted

    monkeypatch.setattr(train_phase, "train", record)
    for name in (train_phase.SOURCE, "standard"):
        with pytest.raises(Interrupted):
            models._train(name, {})
    (source_rows, source_budget), (rows, budget) = calls
    # The first 200 images: the first 180 train, the last 20 validate (as Keras' validation_split held them out).
    assert torch.equal(source_rows[0], data.train_images[:180]) and torch.equal(source_rows[1], data.train_labels[:180])
    val_x, val_y = source_budget["val_data"]
    assert torch.equal(val_x, data.train_images[180:200]) and torch.equal(val_y, data.train_labels[180:200])
    assert source_budget["val_fraction"] == 0.0 and source_budget["val_rows"] == "images"
    assert rows[0] is data.train_images and "val_data" not in budget and budget["val_fraction"] == 0.1
    first_cost = models.cost(train_phase.SOURCE)
    config.training.source_train_images = 0
    assert first_cost == pytest.approx(models.cost(train_phase.SOURCE) * 180 / 540)  # 600 images less 10%: 540
    config.training.source_train_images = 200

    config.training.validation_fraction = 0.0  # nothing held out: all 200 train, nothing validates
    with pytest.raises(Interrupted):
        models._train(train_phase.SOURCE, {})
    (rows, budget) = calls[-1]
    assert len(rows[1]) == 200 and budget["val_data"] is None and budget["val_fraction"] == 0.0


@pytest.mark.parametrize("images,validation", [(10_001, 0.1), (1, 0.9)])
@pytest.mark.parametrize(
    "section,key", [("training", "source_train_images"), ("defense", "fgsm_adversarial_source_images")]
)
def test_a_model_asked_for_more_first_images_than_there_are_fails_before_any_work(
    tmp_path, images, validation, section, key
):
    # The MNIST sample's 10,000 training images (train_samples unset); 1 image less 90%: none left to train on.
    text = AUTHORS_TINY.replace("train_samples = 600", f"validation_fraction = {validation}")
    text = text.replace(f"[{section}]", f"[{section}]\n{key} = {images}")
    with pytest.raises(ConfigError, match=f"{section}.{key} must be <= the"):
        evaluate(write_config(tmp_path, text), out_dir=str(tmp_path / "o"), log=False)
    assert not (tmp_path / "o").exists()


def test_fgsm_examples_from_a_cnn_on_the_first_images_reach_fgsm_adversarial_training_only(tmp_path, monkeypatch):
    from nemesis_fast.evaluation import train as train_phase

    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    config.defenses = ["standard", "feature_squeezing", "fgsm_adversarial", "vat", "gda_brelu"]
    config.defense.vat_mode = "offline"
    evaluation = Evaluation(config, Workers(), log=lambda m: None, progress=False)
    models, data = evaluation.models, evaluation.data
    before = {name: models.key(name) for name in models.needed()}
    assert train_phase.EXAMPLES_CNN not in before  # unset: the standard CNN's examples, every key as before
    assert before["fgsm_adversarial"]["source_model"] == before["standard"]

    config.defense.fgsm_adversarial_source_images = 200
    names = models.needed()
    defenses = ["feature_squeezing", "fgsm_adversarial", "vat", "gda_brelu"]
    assert names == ["standard", train_phase.EXAMPLES_CNN, *defenses, train_phase.SOURCE]
    after = {name: models.key(name) for name in names}
    examples_cnn = after[train_phase.EXAMPLES_CNN]
    assert examples_cnn["training"]["first_images"] == 200 and "first_images" not in after["standard"]["training"]
    assert {k: v for k, v in examples_cnn.items() if k not in ("model", "training")} == {
        k: v for k, v in after["standard"].items() if k not in ("model", "training")
    }
    assert after["fgsm_adversarial"]["source_model"] == examples_cnn
    assert all(after[name] == before[name] for name in before if name != "fgsm_adversarial")  # VAT's included
    needs = {job.name: job.needs for job in models.jobs()}
    assert needs["fgsm_adversarial"] == (train_phase.EXAMPLES_CNN,) and needs["vat"] == ("standard",)
    assert needs[train_phase.EXAMPLES_CNN] == ()

    calls = []

    def record(model, rows, recipe, **budget):
        calls.append((rows, recipe, budget))
        raise Interrupted

    monkeypatch.setattr(train_phase, "train", record)
    with pytest.raises(Interrupted):
        models._train(train_phase.EXAMPLES_CNN, {})
    rows, recipe, budget = calls[-1]  # the first 180 images train, the last 20 of the 200 validate
    assert recipe == "standard" and torch.equal(rows[0], data.train_images[:180])
    assert torch.equal(budget["val_data"][1], data.train_labels[180:200]) and budget["source_model"] is None
    state = {k: torch.full_like(v, 0.5) for k, v in models.build(train_phase.EXAMPLES_CNN).state_dict().items()}
    with pytest.raises(Interrupted):
        models._train("fgsm_adversarial", {train_phase.EXAMPLES_CNN: state})
    rows, recipe, budget = calls[-1]  # every training image, its examples crafted by the CNN given
    assert recipe == "fgsm_adversarial" and rows[0] is data.train_images
    assert all(torch.equal(v, state[k]) for k, v in budget["source_model"].state_dict().items())


def test_an_evaluation_trains_the_cnn_of_the_fgsm_examples_once(tmp_path, capsys):
    text = AUTHORS_TINY.replace(
        'defenses = ["standard", "feature_squeezing", "gda_brelu"]', 'defenses = ["fgsm_adversarial"]'
    ).replace("[defense]", "[defense]\nfgsm_adversarial_source_images = 100")
    config = write_config(tmp_path, text.replace('whitebox_attacks = ["fgsm", "pgd"]', 'whitebox_attacks = ["fgsm"]'))
    first = evaluate(config, out_dir=str(tmp_path / "a"), cache_dir=str(tmp_path / "cache"))
    assert (
        "training CNN of the FGSM training examples (mnist_cnn, recipe standard) on 90 images"
        in capsys.readouterr().err
    )
    assert {c.defense for c in first.cells} == {"fgsm_adversarial"} and "train fgsm_examples_cnn" in first.seconds
    again = evaluate(config, out_dir=str(tmp_path / "b"), cache_dir=str(tmp_path / "cache"))
    assert "\ntraining " not in capsys.readouterr().err  # both models from the cache
    assert cell_values(tmp_path / "a" / "results.json") == cell_values(tmp_path / "b" / "results.json")
    assert again.clean_accuracy == first.clean_accuracy


def test_an_interrupted_training_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    text = (
        TINY.replace("epochs = 1", "epochs = 2")
        .replace('whitebox_attacks = ["fgsm"]', "whitebox_attacks = []")
        .replace('defenses = ["standard", "feature_squeezing", "gda_brelu"]', 'defenses = ["standard"]')
        .replace('blackbox_attacks = ["fgsm", "jsma"]', "blackbox_attacks = []")
    )
    config = write_config(tmp_path, text)
    real_save = ResultCache.save

    def crash_after_the_first_epoch(self, kind, settings, payload):
        path = real_save(self, kind, settings, payload)
        if kind == "training" and payload["state"]["epoch"] == 1:
            raise Interrupted
        return path

    monkeypatch.setattr(ResultCache, "save", crash_after_the_first_epoch)
    with pytest.raises(Interrupted):
        evaluate(config, out_dir=str(tmp_path / "a"), log=False)
    assert len(list((tmp_path / "a" / "cache" / "training").glob("*.pt"))) == 1
    monkeypatch.setattr(ResultCache, "save", real_save)
    lines: list[str] = []

    resumed = Evaluation(
        load_config(config, {"out_dir": str(tmp_path / "a")}), Workers(), log=lines.append, progress=False
    )
    resumed.run()
    assert any("resuming after epoch 1" in line for line in lines)
    assert not list((tmp_path / "a" / "cache" / "training").glob("*.pt"))  # discarded once the model is saved
    evaluate(config, out_dir=str(tmp_path / "b"), log=False)  # uninterrupted
    (a,), (b,) = ((tmp_path / d / "cache" / "model").glob("*.pt") for d in ("a", "b"))
    weights = [torch.load(p, weights_only=True)["state_dict"] for p in (a, b)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
