"""The robustness evaluation run: the CLI end to end, resuming an interrupted run or training, sharding under
torchrun, CIFAR-10 and synthetic data, the eps sweep and perturbation figures. (The cache and the keys of the models
and attack units: test_evaluation_cache.py; the authors' training options: test_evaluation_training_options.py;
config checking and the presets: test_evaluation_config.py; the report's checks and tables:
test_evaluation_report.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from _evaluation_cases import AUTHORS_TINY, TINY, Interrupted, cell_values, evaluate_command, write_config
from _support import write_cifar

from nemesis_fast.checkpoints import load_checkpoint
from nemesis_fast.defenses import FeatureSqueezing
from nemesis_fast.evaluation import evaluate, load_config
from nemesis_fast.evaluation.cache import ResultCache
from nemesis_fast.evaluation.config import ConfigError
from nemesis_fast.evaluation.dataset import load_data
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.parallel import Workers
from nemesis_fast.training import evaluate_accuracy


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


@pytest.mark.slow
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    config = write_config(tmp_path, out_dir=str(tmp_path / "out"))
    saves: list[str] = []
    interrupt = [True]
    real_save = ResultCache.save

    def counting_save(self, kind, settings, payload):
        saves.append(kind)
        if interrupt[0] and kind == "whitebox" and saves.count("whitebox") == 5:
            raise Interrupted  # the process dies after four white-box chunks: a cell's three and one of the next
        return real_save(self, kind, settings, payload)

    monkeypatch.setattr(ResultCache, "save", counting_save)
    with pytest.raises(Interrupted):
        evaluate(config, log=False)
    written = list(saves)
    total_whitebox = 3 * (3 * 2 + 2 * 2)  # chunks x (defenses x eps + the gradient-masking rows' eps)

    # A look at the unfinished run computes nothing and reports only what is complete (no cell of a part of its
    # chunks), apart from its outputs.
    partial = evaluate(config, log=False, cached_only=True)
    assert saves == written
    assert partial.pending == total_whitebox - 4
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
    assert saves.count("whitebox") == total_whitebox - 4
    assert written.count("model") == 3  # standard, gda_brelu and the source, each once
    resumed = cell_values(tmp_path / "out" / "results.json")
    monkeypatch.setattr(ResultCache, "save", real_save)
    evaluate(config, out_dir=str(tmp_path / "fresh"), log=False)
    assert resumed == cell_values(tmp_path / "fresh" / "results.json")
    complete = evaluate(config, log=False, cached_only=True)
    assert complete.pending == 0
    assert cell_values(tmp_path / "out" / "partial" / "results.json") == resumed


@pytest.mark.slow
def test_a_run_gives_back_torchs_threads_and_random_generator(tmp_path, monkeypatch):
    """evaluate() left torch at its `threads` and its generator at the last model's seed, after an interrupt too."""
    config = write_config(tmp_path, out_dir=str(tmp_path / "out"), threads=1)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    evaluate(config, log=False, cached_only=True)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)

    def interrupted(self, cached_only=False):
        torch.manual_seed(0)
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluation, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, log=False, cached_only=True)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)


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


@pytest.mark.slow
def test_the_authors_cifar10_experiment_runs_on_cifar10_files(tmp_path):
    """The paper_cifar10 preset, its budgets cut down: the authors' CIFAR-10 CNN (second convolution "same"), their
    small ResNet as the source on 3x32x32 images, feature squeezing at 3 bits, FGSM's table eps 0.1."""
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", n=40)
    text = (
        'base = "paper_cifar10"\ntest_samples = 16\nbatch_size = 8\nblackbox_eps = []\nwhitebox_attacks = []\n'
        'perturbation_attacks = []\ndefenses = ["standard", "feature_squeezing", "gda_brelu"]\n'
        'blackbox_attacks = ["fgsm"]\n[training]\nepochs = 1\n[defense]\ngda_copies = 2\n[certify]\nimages = 0\n'
    )
    results = evaluate(
        write_config(tmp_path, text), data_dir=str(tmp_path / "cifar"), out_dir=str(tmp_path / "out"), log=False
    )
    assert results.config["dataset"] == "cifar10" and results.config["training"]["cifar_conv2_padding"] == "same"
    assert {(c.defense, c.attack, c.eps) for c in results.cells} == {
        (d, "fgsm", 0.1) for d in ("standard", "feature_squeezing", "gda_brelu")
    }
    cnn, meta = load_checkpoint(tmp_path / "out" / "models" / "gda_brelu.pt")
    assert meta["architecture"]["kwargs"]["conv2_padding"] == "same" and cnn[9].in_features == 64 * 8 * 8
    squeezed, meta = load_checkpoint(tmp_path / "out" / "models" / "feature_squeezing.pt")
    assert isinstance(squeezed, FeatureSqueezing) and squeezed.bit_depth == 3


def test_synthetic_data_has_the_data_sets_shape(tmp_path):
    config = load_config(overrides={"dataset": "cifar10", "synthetic": True, "test_samples": 10})
    data = load_data(config)
    assert data.train_images.shape == (50_000, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and int(data.test_labels.max()) < 10
    assert torch.equal(load_data(config).test_images, data.test_images)  # seeded


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
