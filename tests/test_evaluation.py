"""The robustness evaluation: config checking, the CLI end to end, resuming, and sharding under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _support import write_cifar

from nemesis_fast.evaluation import ConfigError, evaluate, load_config, preset_path
from nemesis_fast.evaluation.cache import ResultCache
from nemesis_fast.evaluation.runner import Evaluation, load_data

TINY = """
dataset = "mnist"
test_samples = 24
batch_size = 8
defenses = ["standard", "feature_squeezing", "gda_brelu"]
blackbox_attacks = ["fgsm", "jsma"]
whitebox_attacks = ["fgsm"]
whitebox_eps = [0.0, 0.2]

[training]
epochs = 1
train_samples = 600
source_depth = 8

[defense]
gda_copies = 2

[attack]
jsma_gamma = 0.05
"""


def write_config(tmp_path: Path, text: str = TINY, **top: object) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n" + text)
    return path


def evaluate_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nemesis_fast.cli", "evaluate", "--config", str(config), "--no-progress", *extra]


def cell_values(results_json: Path) -> list[tuple]:
    data = json.loads(results_json.read_text())
    return [
        (c["defense"], c["attack"], c["setting"], c["eps"], c["accuracy"], round(c["mean_l2"], 5))
        for c in data["cells"]
    ]


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"blackbox_attacks": ["fgsm", "boundary"]}, "blackbox_attacks"),
        ({"defenses": ["standard", "distillation"]}, "defenses"),
        ({"whitebox_eps": [0.1, -0.1]}, r"whitebox_eps\[1\]"),
        ({"data_dir": "/no/such/folder"}, "data_dir"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "cuda:99"}, "device is 'cuda:99', but"),
        ({"colour": "blue"}, "unknown setting colour"),
    ],
)
def test_bad_configurations_fail_before_any_work(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key):
        evaluate(write_config(tmp_path), out_dir=str(tmp_path / "out"), **overrides)
    assert not (tmp_path / "out").exists()


def test_bad_nested_settings_name_their_key(tmp_path):
    with pytest.raises(ConfigError, match="attack.fgsm_eps"):
        load_config(write_config(tmp_path, TINY.replace("[attack]", "[attack]\nfgsm_eps = -0.3")))
    with pytest.raises(ConfigError, match="training.epochs must be an integer"):
        load_config(write_config(tmp_path, TINY.replace("epochs = 1", 'epochs = "many"')))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_missing_data_says_where_it_looked_and_how_to_provide_it(tmp_path):
    with pytest.raises(ConfigError, match="--data-dir with cifar-10-batches-py, extracted from cifar-10-python"):
        load_config(overrides={"dataset": "cifar10"})
    with pytest.raises(ConfigError, match=f"data_dir: no CIFAR-10 batches found in {tmp_path}.*cifar-10-python"):
        evaluate(write_config(tmp_path), dataset="cifar10", data_dir=str(tmp_path), out_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="'/no/such/folder' is not a folder; it must hold the four MNIST IDX files"):
        load_config(overrides={"data_dir": "/no/such/folder"})
    with pytest.raises(ConfigError, match=f"looked for train-images-idx3-ubyte.* in {tmp_path}.*Put the four MNIST"):
        evaluate(write_config(tmp_path), data_dir=str(tmp_path), out_dir=str(tmp_path / "o"))


def test_presets_are_valid_and_paper_defaults_hold():
    quick = load_config(preset_path("quick"))
    paper = load_config(preset_path("paper"))
    assert paper.training.epochs == 20 and paper.attack.fgsm_eps == 0.3 and paper.attack.jsma_gamma == 0.1
    assert paper.defenses == quick.defenses and len(paper.defenses) == 7
    assert paper.attack.deepfool_overshoot == 0.02 and paper.attack.cw_confidence == 0.0
    with pytest.raises(ConfigError, match="preset 'fast' does not exist"):
        preset_path("fast")


@pytest.mark.slow
def test_cli_end_to_end_on_a_tiny_configuration(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "out"
    cmd = evaluate_command(config, "--out", str(out))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Black-box accuracy" in run.stdout and "GDA + BReLU" in run.stdout
    assert "Feature squeezing (gradient masking)" in run.stdout
    for name in ("results.json", "results.csv", "results.md", "whitebox.png", "examples.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert data["version"] and data["config"]["attack"]["jsma_gamma"] == 0.05
    assert len(data["cells"]) == 3 * 2 + (3 + 1) * 2  # black-box cells + white-box cells (and BPDA-free rows)
    clean = {c["defense"]: c["accuracy"] for c in data["cells"] if c["setting"] == "whitebox" and c["eps"] == 0.0}
    assert clean == pytest.approx({d: data["clean_accuracy"][d] for d in clean})


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
    saves.clear()
    interrupt[0] = False
    evaluate(config, log=False)
    assert "model" not in saves  # no model is trained twice
    assert saves.count("blackbox") == 0  # finished black-box chunks are reused
    total_whitebox = 3 * (3 * 2 + 2)  # chunks x (defenses x eps + the gradient-masking row's eps)
    assert saves.count("whitebox") == total_whitebox - 3
    assert written.count("model") == 3  # standard, gda_brelu and the source, each once
    resumed = cell_values(tmp_path / "out" / "results.json")
    monkeypatch.setattr(ResultCache, "save", real_save)
    evaluate(config, out_dir=str(tmp_path / "fresh"), log=False)
    assert resumed == cell_values(tmp_path / "fresh" / "results.json")


def test_a_damaged_cache_entry_is_recomputed(tmp_path):
    cache = ResultCache(tmp_path)
    cache.save("x", {"a": 1}, {"value": 3})
    assert cache.load("x", {"a": 1})["value"] == 3
    cache.path("x", {"a": 1}).write_bytes(b"half a file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert cache.load("x", {"a": 1}) is None
    assert not cache.path("x", {"a": 1}).exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


@pytest.mark.slow
def test_sharded_run_equals_single_process(tmp_path):
    config = write_config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = evaluate_command(config, "--device", "cpu")
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
    assert data["world_size"] == 2
    assert cell_values(tmp_path / "sharded" / "results.json") == cell_values(tmp_path / "single" / "results.json")


def test_chunks_are_shared_out_round_robin(tmp_path):
    from nemesis_fast.evaluation.distributed import Workers

    assert Workers(rank=1, world_size=2).my_chunks(5) == [1, 3]
    config = load_config(write_config(tmp_path, out_dir=str(tmp_path / "o")))
    evaluation = Evaluation(config, Workers(), log=lambda m: None, progress=False)
    assert evaluation.chunks == [(0, 8), (8, 16), (16, 24)]


@pytest.mark.slow
def test_cifar10_files_end_to_end(tmp_path):
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", n=40)
    config = write_config(tmp_path, TINY.replace("whitebox_eps = [0.0, 0.2]", "whitebox_eps = [0.0, 0.03]"))
    results = evaluate(
        config, dataset="cifar10", data_dir=str(tmp_path / "cifar"), out_dir=str(tmp_path / "out"), log=False
    )
    assert results.config["dataset"] == "cifar10" and results.config["attack"]["fgsm_eps"] == pytest.approx(8 / 255)
    assert {c.defense for c in results.cells} == {"standard", "feature_squeezing", "gda_brelu"}
    assert all(c.samples == 24 for c in results.cells)
    assert (tmp_path / "out" / "examples.png").stat().st_size > 0


def test_synthetic_data_has_the_data_sets_shape(tmp_path):
    config = load_config(overrides={"dataset": "cifar10", "synthetic": True, "test_samples": 10})
    data = load_data(config)
    assert data.train_images.shape == (50_000, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and int(data.test_labels.max()) < 10
    assert torch.equal(load_data(config).test_images, data.test_images)  # seeded
