"""The robustness evaluation: config checking, the CLI end to end, resuming, and sharding under torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _support import write_cifar

from nemesis_fast.evaluation import ConfigError, evaluate, load_config, preset_path
from nemesis_fast.evaluation.cache import ResultCache
from nemesis_fast.evaluation.checks import gradient_masking_checks
from nemesis_fast.evaluation.config import ATTACKS, MASKED
from nemesis_fast.evaluation.paper import PAPER_MNIST_BLACKBOX, authors_curve, eps_meeting_paper, paper_value
from nemesis_fast.evaluation.plots import plot_sweep
from nemesis_fast.evaluation.report import Cell, Results, perturbation_stats
from nemesis_fast.evaluation.runner import Evaluation, _either, load_data
from nemesis_fast.evaluation.tables import authors_table, sweep_table
from nemesis_fast.parallel import Workers

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
        ({"blackbox_eps": [0.1, -0.01]}, r"blackbox_eps\[1\] must be a number >= 0"),
        ({"blackbox_eps": [0.1, 0.1]}, "blackbox_eps lists an eps twice"),
        ({"perturbation_attacks": ["fgsm"]}, "perturbation_attacks"),
        ({"perturbation_confidence": -1.0}, "perturbation_confidence must be >= 0"),
        ({"whitebox_attacks": ["pgd", "bim"]}, "whitebox_attacks"),
    ],
)
def test_bad_configurations_fail_before_any_work(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key):
        evaluate(write_config(tmp_path), out_dir=str(tmp_path / "out"), **overrides)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "section,line,key",
    [
        ("[attack]", "jsma_gamma = 1.5", "attack.jsma_gamma must be in"),
        ("[attack]", "jsma_gamma = 0.0", "attack.jsma_gamma must be in"),
        ("[attack]", "rfgsm_eps = -0.1", "attack.rfgsm_eps"),
        ("[attack]", 'fgsm_labels = "guessed"', "attack.fgsm_labels must be one of"),
        ("[attack]", "pgd_restarts = 0", "attack.pgd_restarts"),
        ("[attack]", "cw_confidence = -1.0", "attack.cw_confidence"),
        ("[training]", 'source_architecture = "vgg"', "training.source_architecture must be one of"),
        ("[defense]", 'vat_mode = "sometimes"', "defense.vat_mode must be one of"),
        ("[defense]", "gda_fixed_set = 1", "defense.gda_fixed_set must be true or false"),
    ],
)
def test_bad_settings_of_the_authors_options_fail_before_any_work(tmp_path, section, line, key):
    text = TINY.replace("jsma_gamma = 0.05", "")
    text = text if section in text else text + f"\n{section}\n"
    with pytest.raises(ConfigError, match=key):
        evaluate(write_config(tmp_path, text.replace(section, f"{section}\n{line}")), out_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


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


AUTHORS_SETTINGS = {  # the seed's authors' scripts, as listed in issue 11
    "training": {
        "epochs": 20,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "validation_fraction": 0.1,
        "patience": 5,
        "train_samples": 0,
        "source_architecture": "small_resnet",
    },
    "defense": {
        "brelu_t": 1.0,
        "gda_sigma": 0.3,
        "gda_copies": 10,
        "gda_clip": False,
        "gda_fixed_set": True,
        "label_smoothing": 0.9,
        "fgsm_adversarial_eps": 0.3,
        "fgsm_adversarial_mode": "offline",
        "vat_eps": 2.1,
        "vat_xi": 1e-6,
        "vat_mode": "offline",
        "squeeze_bits": 1,
        "squeeze_training": True,
    },
    "attack": {
        "fgsm_eps": 0.1,  # the table's eps: the authors' notebook of 17 July 2017 (c7a44acc8)
        "fgsm_labels": "predicted",
        "rfgsm_eps": 0.3,
        "rfgsm_alpha": 0.05,
        "rfgsm_alpha_fixed": True,
        "rfgsm_labels": "predicted",
        "deepfool_max_iter": 100,
        "deepfool_overshoot": 0.0,
        "jsma_theta": 1.0,
        "jsma_gamma": 1.0,
        "jsma_use_logits": False,
        "cw_confidence": 10.0,
        "cw_learning_rate": 5e-3,
        "cw_binary_search_steps": 5,
        "cw_max_iter": 1000,
        "cw_initial_const": 1e-2,
        "pgd_steps": 40,
        "pgd_restarts": 5,
    },
}


def test_the_paper_preset_is_the_authors_experiment():
    paper = load_config(preset_path("paper"))
    for section, values in AUTHORS_SETTINGS.items():
        got = getattr(paper, section)
        assert {k: getattr(got, k) for k in values} == values, section
    assert paper.test_samples == 0 and len(paper.defenses) == 7 and paper.blackbox_attacks == list(ATTACKS)
    grid = [round(0.01 * i, 2) for i in range(1, 10)] + [round(0.1 * i, 1) for i in range(1, 11)]
    assert paper.blackbox_eps == grid and paper.whitebox_eps == grid  # both of the authors' FGSM grids
    assert paper.whitebox_attacks == ["fgsm", "rfgsm", "pgd"]
    assert paper.perturbation_attacks == ["deepfool", "cw", "jsma"]
    assert paper.perturbation_confidence == 0.0 and paper.attack.cw_confidence == 10.0
    assert all(commit in preset_path("paper").read_text() for commit in ("ace25b4e6", "c7a44acc8"))  # cited


def test_presets_are_valid():
    quick, headline = load_config(preset_path("quick")), load_config(preset_path("paper_headline"))
    assert quick.whitebox_attacks == headline.whitebox_attacks == ["fgsm", "rfgsm"]  # PGD only where asked for
    assert not quick.blackbox_eps and not quick.perturbation_attacks
    assert headline.training.source_architecture == "resnet" and headline.attack.jsma_gamma == 0.1
    assert headline.defenses == quick.defenses and len(quick.defenses) == 7
    with pytest.raises(ConfigError, match="preset 'fast' does not exist"):
        preset_path("fast")


def _differences(a: dict, b: dict, prefix: str = "") -> dict[str, tuple]:
    out = {}
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out.update(_differences(a[key], b[key], f"{prefix}{key}."))
        elif a.get(key) != b.get(key):
            out[prefix + key] = (a.get(key), b.get(key))
    return out


def test_the_paper_table_preset_is_paper_with_the_attack_settings_before_ace25b4e6():
    paper, table = load_config(preset_path("paper")), load_config(preset_path("paper_table"))
    assert _differences(paper.to_dict(), table.to_dict()) == {
        "attack.jsma_theta": (1.0, 0.1),
        "attack.cw_confidence": (10.0, 2.3),
        "blackbox_eps": (paper.blackbox_eps, []),  # black-box only
        "whitebox_attacks": (["fgsm", "rfgsm", "pgd"], []),
        "perturbation_attacks": (["deepfool", "cw", "jsma"], []),
        "certify.images": (200, 0),
    }
    text = preset_path("paper_table").read_text()
    assert all(commit in text for commit in ("ace25b4e6", "323e9545c", "397a9a093"))


def test_the_gpu_check_preset_is_paper_on_the_first_images_in_the_paper_runs_chunks():
    paper, check = load_config(preset_path("paper")), load_config(preset_path("paper_gpu_check"))
    assert _differences(paper.to_dict(), check.to_dict()) == {
        "test_samples": (0, 1000),
        "attack.cw_test_samples": (1000, 500),
        "blackbox_eps": (paper.blackbox_eps, []),  # the table only
        "whitebox_attacks": (["fgsm", "rfgsm", "pgd"], []),
        "perturbation_attacks": (["deepfool", "cw", "jsma"], []),
        "certify.images": (200, 0),
    }
    # Whole chunks of the paper run: its cells on these images come from that run's cached verdicts.
    assert check.test_samples % paper.batch_size == 0 and check.attack.cw_test_samples % paper.batch_size == 0


def test_a_config_can_start_from_another(tmp_path):
    (tmp_path / "mine.toml").write_text('base = "paper"\ntest_samples = 100\n[attack]\njsma_theta = 0.5\n')
    (tmp_path / "child.toml").write_text('base = "mine.toml"\n[attack]\ncw_confidence = 1.0\n')
    paper, child = load_config(preset_path("paper")), load_config(tmp_path / "child.toml")
    assert _differences(paper.to_dict(), child.to_dict()) == {
        "test_samples": (0, 100),
        "attack.jsma_theta": (1.0, 0.5),  # sections merge key by key, through the chain
        "attack.cw_confidence": (10.0, 1.0),
    }
    for text, message in (
        ('base = "nonesuch"', "base .*'nonesuch' is neither a config file nor a preset"),
        ("base = 3", "base .*must be a preset name or a config file path"),
        ('base = "loop.toml"', "base .*leads back to a config already read"),
    ):
        (tmp_path / "loop.toml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "loop.toml")


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


def test_a_look_at_a_run_not_started_trains_nothing(tmp_path, monkeypatch):
    saves: list[str] = []
    monkeypatch.setattr(ResultCache, "save", lambda self, kind, settings, payload: saves.append(kind))
    config = write_config(tmp_path, out_dir=str(tmp_path / "out"))
    results = evaluate(config, log=False, cached_only=True)
    assert saves == [] and results.cells == [] and results.clean_accuracy == {}
    assert results.pending == 2 * 3 + 3 * (3 * 2 + 2 * 2)  # black-box and white-box chunks (BPDA-free rows too)


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
    second = evaluate(config, out_dir=str(tmp_path / "b"), log=False)  # a fresh cache: everything again
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


def _results(cells: list, blackbox_eps: list[float]) -> Results:
    config = load_config(overrides={"defenses": ["standard"], "blackbox_eps": blackbox_eps}).to_dict()
    return Results(config=config, version="t", device="cpu", world_size=1, cells=cells)


def _c(attack: str, setting: str, eps: float, accuracy: float, samples: int = 1000) -> Cell:
    return Cell("standard", attack, setting, eps, accuracy, samples, 0.0, 0.0, 0.0, 0.0)


def test_gradient_masking_checks_flag_what_athalye_et_al_would():
    honest = [_c("fgsm", "whitebox", 0.1, 40), _c("pgd", "whitebox", 0.1, 10), _c("pgd", "whitebox", 1.0, 0)]
    honest += [_c("fgsm", "whitebox", 1.0, 5), _c("fgsm", "blackbox", 0.1, 80)]
    (check,) = gradient_masking_checks(_results(honest, [0.1]))
    assert (check.iterative, check.whitebox, check.chance, check.flagged) == ("pass", "pass", "pass", False)
    masked = [_c("fgsm", "whitebox", 0.1, 40), _c("pgd", "whitebox", 0.1, 60), _c("pgd", "whitebox", 1.0, 50)]
    masked += [_c("fgsm", "whitebox", 1.0, 5), _c("fgsm", "blackbox", 0.1, 20)]
    (check,) = gradient_masking_checks(_results(masked, [0.1]))
    assert check.iterative == "FAIL (PGD 50.0% > 5.0% at eps 1)"  # the worst of the two eps
    assert check.whitebox.startswith("FAIL (white-box 40.0% > 20.0% at eps 0.1)")
    assert check.chance.startswith("FAIL (50.0% at eps 1") and check.flagged
    small = [_c("pgd", "whitebox", 0.3, 12, samples=100), _c("fgsm", "whitebox", 0.3, 10, samples=100)]
    # White-box against black-box takes the strongest white-box attack at each eps, not single-step FGSM alone.
    overshoot = honest + [_c("fgsm", "whitebox", 0.9, 25), _c("pgd", "whitebox", 0.9, 0)]
    overshoot += [_c("fgsm", "blackbox", 0.9, 9)]
    (check,) = gradient_masking_checks(_results(overshoot, [0.1, 0.9]))
    assert check.whitebox == "pass"
    (check,) = gradient_masking_checks(_results(overshoot[:-2] + overshoot[-1:], [0.1, 0.9]))
    assert check.whitebox == "FAIL (white-box 25.0% > 9.0% at eps 0.9)"
    (check,) = gradient_masking_checks(_results(small, []))  # within sampling error; no large eps: not run
    assert (check.iterative, check.whitebox, check.chance) == ("pass", "not run", "not run")
    assert check.own_gradient == "n/a"
    # Through its own gradient the defense looks robust where BPDA breaks it: flagged, though its BPDA rows pass.
    hiding = honest + [_c("fgsm", "whitebox-gradient-masking", 0.1, 75), _c("pgd", "whitebox-gradient-masking", 1.0, 0)]
    (check,) = gradient_masking_checks(_results(hiding, [0.1]))
    assert (check.iterative, check.whitebox, check.chance) == ("pass", "pass", "pass")
    assert check.own_gradient == "FAIL (FGSM through its own gradient 75.0% > 40.0% at eps 0.1)" and check.flagged
    (check,) = gradient_masking_checks(_results(honest + [_c("fgsm", "whitebox-gradient-masking", 0.1, 41)], [0.1]))
    assert check.own_gradient == "pass" and not check.flagged


def test_a_bpda_defenses_row_counts_an_image_fooled_when_either_attack_fools_it():
    t, f = True, False
    bpda = {"correct": torch.tensor([t, t, f, f]), "seconds": 1.0}
    own = {"correct": torch.tensor([t, f, t, f]), "seconds": 2.0}
    for key, values in (("l2", [1.0, 2.0, 3.0, 4.0]), ("linf", [0.1] * 4), ("l0", [5.0] * 4)):
        bpda[key], own[key] = torch.tensor(values), 10 * torch.tensor(values)
    row = _either("whitebox", bpda, own)
    assert row["correct"].tolist() == [t, f, f, f] and row["seconds"] == 3.0
    assert row["l2"].tolist() == [1.0, 20.0, 3.0, 4.0]  # the perturbation of the attack that fooled (BPDA's first)
    fooled_b, fooled_o = torch.tensor([t, t, f, f, t]), torch.tensor([t, f, t, f, t])
    clean = torch.tensor([t] * 5)
    bpda = {"norm": torch.tensor([1.0, 2.0, 3.0, 4.0, 9.0]), "fooled": fooled_b, "clean_correct": clean, "seconds": 1}
    own = {"norm": torch.tensor([2.0, 1.0, 1.5, 0.5, 5.0]), "fooled": fooled_o, "clean_correct": clean, "seconds": 1}
    row = _either("perturbation", bpda, own)
    assert row["fooled"].tolist() == [t, t, t, f, t]
    assert row["norm"][row["fooled"]].tolist() == [1.0, 2.0, 1.5, 5.0]  # the smaller of those that fooled


def test_the_eps_at_which_a_sweep_meets_the_papers_value():
    points = [(0.1, 90.0), (0.01, 99.0), (0.05, 95.0), (0.2, 60.0)]
    assert eps_meeting_paper(points, 94.46) == pytest.approx(0.05 + 0.05 * (95 - 94.46) / 5)
    assert eps_meeting_paper(points, 99.5) == 0.01  # already below at the first eps
    assert eps_meeting_paper(points, 10.0) is None
    assert paper_value("mnist", "gda_brelu", "rfgsm") == 75.50 and paper_value("cifar10", "standard", "fgsm") is None


def test_the_sweep_table_counts_the_cells_within_5_points_at_each_eps():
    cells = [_c("fgsm", "blackbox", 0.05, 96.0), _c("fgsm", "blackbox", 0.3, 31.0)]  # paper: 94.46
    header, rows = sweep_table(_results(cells, [0.05, 0.3]), "fgsm")
    assert header == ["defense", "0.05", "0.3", "paper", "meets paper at eps"]
    assert rows[0][0] == "CNN" and rows[0][-2:] == ["94.46", "0.056"]
    assert rows[-1] == ["within 5 points of the paper", "1/1", "0/1", "", ""]


def test_the_papers_fgsm_and_rfgsm_columns_are_the_authors_curves_at_eps_01_and_03():
    """The finding the `paper` preset's table eps rest on: each paper cell within 1 point of the authors' own
    black-box curve, except the R+FGSM cell of FGSM adversarial training (another of their models)."""
    for defense, cells in PAPER_MNIST_BLACKBOX.items():
        fgsm, rfgsm = (
            authors_curve("mnist", "blackbox", "fgsm", defense),
            authors_curve("mnist", "blackbox", "rfgsm", defense),
        )
        assert fgsm[0.1] == pytest.approx(cells["fgsm"], abs=1.0), defense
        if defense != "fgsm_adversarial":
            assert rfgsm[0.3] == pytest.approx(cells["rfgsm"], abs=1.0), defense
    assert authors_curve("mnist", "blackbox", "rfgsm", "fgsm_adversarial")[0.3] > 49.77 + 30  # the paper: 49.77
    assert authors_curve("cifar10", "blackbox", "fgsm", "standard") == {}
    assert authors_curve("mnist", "blackbox", "deepfool", "standard") == {}
    assert 0.5 not in authors_curve("mnist", "blackbox", "fgsm", "standard")  # hidden in their plot


def test_the_authors_table_puts_their_curve_beside_the_runs(tmp_path):
    cells = [_c("fgsm", "blackbox", 0.1, 90.0), _c("fgsm", "blackbox", 0.3, 31.5), _c("fgsm", "blackbox", 0.05, 97.0)]
    results = _results(cells, [0.05, 0.1, 0.3])
    assert plot_sweep(results, tmp_path / "sweep.png") and (tmp_path / "sweep.png").stat().st_size > 0
    header, rows = authors_table(results, "blackbox", "fgsm")
    assert header == ["defense", *(f"{i / 10:g}" for i in range(1, 11))]
    assert rows[0][:5] == ["CNN", "94.0 / 90.0", "68.3", "31.0 / 31.5", "11.9"] and rows[0][5] == "-"
    config = load_config(overrides={"defenses": ["standard", "gda_brelu"], "blackbox_eps": []}).to_dict()
    white = [Cell("gda_brelu", "fgsm", "whitebox", 0.1, 80.0, 100, 0, 0, 0, 0)]
    white += [Cell("gda_brelu", "fgsm", MASKED, 0.1, 95.0, 100, 0, 0, 0, 0)]
    results = Results(config=config, version="t", device="cpu", world_size=1, cells=white)
    _, rows = authors_table(results, "whitebox", "fgsm")
    assert rows[0][:2] == ["CNN", "73.9"]  # no cell of this run: the authors' value alone
    assert rows[1][:2] == ["GDA + BReLU (gradient masking)", "97.2 / 95.0"]  # they used its own gradient
    results.config["dataset"] = "cifar10"
    assert authors_table(results, "whitebox", "fgsm") == (["defense"], [])


def test_perturbation_quartiles_count_unfooled_images_as_infinitely_far():
    norm = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 9.0])
    fooled = torch.tensor([True, True, True, False, False, True])
    clean = torch.tensor([True, True, True, True, True, False])  # the last image was misclassified: left out
    stats = perturbation_stats("standard", "deepfool", norm, fooled, clean, 0.0)
    assert (stats.samples, stats.values) == (5, [1.0, 2.0, 3.0]) and stats.success == pytest.approx(60.0)
    assert (stats.q25, stats.median, stats.q75) == (2.0, 3.0, math.inf)


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
