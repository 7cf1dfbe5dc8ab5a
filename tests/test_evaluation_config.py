"""The evaluation's config checking: bad configurations and settings fail before any work, naming their key; missing
data says where it looked; the presets (paper, paper_table, paper_weak_source, paper_gpu_check, quick,
paper_headline) and configs that start from another."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _evaluation_cases import TINY, config_differences, write_config

from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR
from nemesis_fast.evaluation import ConfigError, evaluate, load_config, preset_path
from nemesis_fast.evaluation.config import ATTACKS, preset_names


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
        ({"perturbation_attacks": ["deepfool", "deepfool"]}, "perturbation_attacks lists an entry twice"),
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
        ("[training]", "source_epochs = 0", "training.source_epochs must be >= 1"),
        ("[training]", "source_train_images = -1", "training.source_train_images must be >= 0"),
        ("[training]", "source_train_images = 601", "training.source_train_images must be <= training.train_samples"),
        ("[defense]", 'vat_mode = "sometimes"', "defense.vat_mode must be one of"),
        ("[defense]", "fgsm_adversarial_source_images = -1", "defense.fgsm_adversarial_source_images must be >= 0"),
        ("[defense]", "fgsm_adversarial_source_images = 601", "defense.fgsm_adversarial_source_images must be <= tra"),
        (
            "[defense]",
            'fgsm_adversarial_source_images = 100\nfgsm_adversarial_mode = "online"',
            "defense.fgsm_adversarial_source_images needs defense.fgsm_adversarial_mode = 'offline'",
        ),
        ("[defense]", "gda_fixed_set = 1", "defense.gda_fixed_set must be true or false"),
        ("[training]", "learning_rate = inf", "training.learning_rate must be finite, got inf"),
        ("[defense]", "gda_sigma = inf", "defense.gda_sigma must be finite"),
        ("[defense]", "vat_xi = nan", "defense.vat_xi must be finite"),
        ("[attack]", "jsma_theta = nan", "attack.jsma_theta must be finite"),
        ("[attack]", "deepfool_overshoot = inf", "attack.deepfool_overshoot must be finite"),
        ("[attack]", "pgd_step_ratio = inf", "attack.pgd_step_ratio must be finite"),
        ("[training]", 'augmented_validation = "last"', "training.augmented_validation must be one of"),
        ("[training]", 'augmented_validation = "last_rows"', "training.augmented_validation last_rows needs GDA.s"),
    ],
)
def test_bad_settings_of_the_authors_options_fail_before_any_work(tmp_path, section, line, key):
    text = TINY.replace("jsma_gamma = 0.05", "")
    text = text if section in text else text + f"\n{section}\n"
    with pytest.raises(ConfigError, match=key):
        evaluate(write_config(tmp_path, text.replace(section, f"{section}\n{line}")), out_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "top,key",
    [
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"seed": 10**20}, "seed must fit in 64 bits"),
        ({"threads": 10**9}, r"threads must be in \[0, 1024\]"),
    ],
)
def test_bad_run_settings_fail_before_any_work(tmp_path, top, key):
    with pytest.raises(ConfigError, match=key):
        evaluate(write_config(tmp_path, **top), out_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "text,message",
    [
        (
            TINY.replace("train_samples = 600", "train_samples = 4"),
            "training.train_samples 4 with training.validation_fraction 0.1 leaves 0 images to validate on",
        ),
        (
            TINY.replace("[defense]", "[defense]\ngda_sigma = 0.0") + "[certify]\nimages = 4\n",
            "defense.gda_sigma is 0, and with certify.sigma unset it is the smoothing noise of \\[certify\\]",
        ),
    ],
)
def test_settings_that_would_fail_in_training_or_certification_fail_before_any_work(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        evaluate(write_config(tmp_path, text), out_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_a_zero_gda_sigma_is_no_smoothing_noise_where_certify_sets_its_own_or_certifies_nothing(tmp_path):
    text = TINY.replace("[defense]", "[defense]\ngda_sigma = 0.0") + "[certify]\nimages = 4\n"
    assert load_config(write_config(tmp_path, text + "sigma = 0.25\n")).certify.sigma == 0.25
    assert load_config(write_config(tmp_path, text.replace("images = 4", "images = 0"))).defense.gda_sigma == 0.0


def test_gda_copies_beyond_memory_fail_before_any_work(tmp_path):
    text = TINY.replace("gda_copies = 2", "gda_copies = 1000000000")
    with pytest.raises(ConfigError, match=r"defense.gda_copies must be in \[1, 1000\]"):
        evaluate(write_config(tmp_path, text), out_dir=str(tmp_path / "o"))


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
        evaluate(
            write_config(tmp_path, TINY.replace('"mnist"', '"cifar10"')),
            data_dir=str(tmp_path),
            out_dir=str(tmp_path / "o"),
        )
    with pytest.raises(ConfigError, match="'/no/such/folder' is not a folder; it must hold the four MNIST IDX files"):
        load_config(overrides={"data_dir": "/no/such/folder"})
    with pytest.raises(ConfigError, match=f"looked for train-images-idx3-ubyte.* in {tmp_path}.*Put the four MNIST"):
        evaluate(write_config(tmp_path), data_dir=str(tmp_path), out_dir=str(tmp_path / "o"))
    data = Path(shutil.copytree(MNIST_SAMPLE_DIR, tmp_path / "data"))
    (data / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b truncated")  # one line, not a traceback
    with pytest.raises(ConfigError, match=f"data_dir: {data}/train-images-idx3-ubyte.gz: "):
        evaluate(write_config(tmp_path), data_dir=str(data), out_dir=str(tmp_path / "o"))


AUTHORS_SETTINGS = {  # the seed's authors' scripts, as listed in issue 11
    "training": {
        "epochs": 20,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "validation_fraction": 0.1,
        "augmented_validation": "last_rows",
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


def test_every_shipped_preset_is_described_where_preset_path_lists_them():
    names = preset_names()
    assert len(names) >= 7 and [name for name in names if f'"{name}": ' not in preset_path.__doc__] == []


def test_the_paper_table_preset_is_paper_with_the_attack_settings_before_ace25b4e6():
    paper, table = load_config(preset_path("paper")), load_config(preset_path("paper_table"))
    assert config_differences(paper.to_dict(), table.to_dict()) == {
        "attack.jsma_theta": (1.0, 0.1),
        "attack.cw_confidence": (10.0, 2.3),
        "blackbox_eps": (paper.blackbox_eps, []),  # black-box only
        "whitebox_attacks": (["fgsm", "rfgsm", "pgd"], []),
        "perturbation_attacks": (["deepfool", "cw", "jsma"], []),
        "certify.images": (200, 0),
        "defense.fgsm_adversarial_source_images": (0, 1000),
    }
    text = preset_path("paper_table").read_text()
    assert all(commit in text for commit in ("ace25b4e6", "323e9545c", "397a9a093", "31160638c", "a406287ad"))


def test_the_weak_source_preset_is_paper_table_with_a_source_trained_as_little_as_the_authors():
    table, weak = load_config(preset_path("paper_table")), load_config(preset_path("paper_weak_source"))
    assert config_differences(table.to_dict(), weak.to_dict()) == {
        "training.source_epochs": (None, 1),
        "training.source_train_images": (0, 20000),
        "defense.fgsm_adversarial_source_images": (1000, 0),
    }
    assert all(commit in preset_path("paper_weak_source").read_text() for commit in ("c7a44acc8", "6ce5edd24"))


def test_the_gpu_check_preset_is_paper_on_the_first_images_in_the_paper_runs_chunks():
    paper, check = load_config(preset_path("paper")), load_config(preset_path("paper_gpu_check"))
    assert config_differences(paper.to_dict(), check.to_dict()) == {
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
    assert config_differences(paper.to_dict(), child.to_dict()) == {
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


def test_a_run_never_overwrites_the_results_of_a_run_with_other_settings(tmp_path):
    import json

    from nemesis_fast.evaluation.folders import check_out_dir

    out = tmp_path / "out"
    config = load_config(write_config(tmp_path), {"out_dir": str(out)})
    check_out_dir(config)  # no folder yet
    out.mkdir()
    earlier = config.to_dict()
    earlier["training"].pop("source_epochs")  # a run written before that setting existed
    earlier |= {"device": "cuda", "threads": 16, "data_dir": "/elsewhere", "cache_dir": "/shared/cache"}
    (out / "results.json").write_text(json.dumps({"config": earlier, "cells": ["kept"]}))
    check_out_dir(config)  # the same settings, from another place and device: it resumes or repeats
    for key, text in (
        ("test_samples: 24 -> 48", TINY.replace("test_samples = 24", "test_samples = 48")),
        ("training.source_epochs: '\\(unset\\)' -> 1", TINY.replace("[training]", "[training]\nsource_epochs = 1")),
    ):
        with pytest.raises(ConfigError, match=f"out_dir: .* other settings \\({key}\\); choose another out_dir"):
            evaluate(write_config(tmp_path, text), out_dir=str(out), log=False)
    (out / "cache").mkdir()  # the earlier run's cache: the message says how to reuse it
    with pytest.raises(ConfigError, match="choose another out_dir or move it away \\(with cache_dir = .*cache"):
        check_out_dir(load_config(write_config(tmp_path, TINY.replace("= 24", "= 48")), {"out_dir": str(out)}))
    (out / "cache").rmdir()
    (out / "results.json").write_text("not json")
    with pytest.raises(ConfigError, match="is not the results of an evaluation"):
        evaluate(write_config(tmp_path), out_dir=str(out), log=False)
    assert (out / "results.json").read_text() == "not json" and sorted(p.name for p in out.iterdir()) == [
        "results.json"
    ]


def test_a_run_saving_models_never_overwrites_files_an_earlier_run_there_did_not_save(tmp_path, monkeypatch):
    import json

    from nemesis_fast.evaluation.folders import check_out_dir

    monkeypatch.setattr("nemesis_fast.evaluation.start", lambda *args: pytest.fail("work started"))
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    (out / "models" / "standard.pt").write_text("my own model")
    config = load_config(write_config(tmp_path), {"out_dir": str(out)})
    earlier = {**config.to_dict(), "save_models": False}
    (out / "results.json").write_text(json.dumps({"config": earlier}))
    with pytest.raises(ConfigError, match="out_dir: .*models holds files the run would overwrite, which the run that"):
        evaluate(config)
    assert (out / "models" / "standard.pt").read_text() == "my own model"
    check_out_dir(load_config(write_config(tmp_path, save_models=False), {"out_dir": str(out)}))  # writes none
    (out / "results.json").write_text(json.dumps({"config": {**earlier, "save_models": True}}))
    check_out_dir(config)  # models the earlier run saved: this one writes them again


def test_an_out_or_cache_folder_that_cannot_be_made_fails_before_any_work(tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("user data")
    monkeypatch.setattr("nemesis_fast.evaluation.start", lambda *args: pytest.fail("work started"))
    for overrides, message in (
        ({"out_dir": str(a_file)}, "out_dir: .*a_file' is a file, not a folder"),
        ({"out_dir": str(tmp_path / "o"), "cache_dir": str(a_file / "cache")}, "cache_dir: .*a_file. is a file"),
    ):
        with pytest.raises(ConfigError, match=message):
            evaluate(write_config(tmp_path), log=False, **overrides)
    assert a_file.read_text() == "user data"


def test_an_evalconfig_is_checked_with_its_overrides_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr("nemesis_fast.evaluation.start", lambda *args: pytest.fail("work started"))
    config = load_config(write_config(tmp_path), {"out_dir": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="test_samples must be >= 0"):
        evaluate(config, test_samples=-3)
    with pytest.raises(ConfigError, match="unknown setting.s. bogus_key"):
        evaluate(config, bogus_key=1)
    config.test_samples = -5  # set on the object itself
    with pytest.raises(ConfigError, match="test_samples must be >= 0"):
        evaluate(config)
    with pytest.raises(TypeError, match="config must be an EvalConfig, a config file's path or None, got int"):
        evaluate(123)
    _values_of_another_type_are_refused_as_in_a_file(load_config(write_config(tmp_path)))
    with pytest.raises(TypeError, match="cached_only must be a bool, got str"):
        evaluate(write_config(tmp_path), cached_only="no")


def _values_of_another_type_are_refused_as_in_a_file(config) -> None:
    """`config`, an EvalConfig, with one value of another type at a time: refused, naming the key."""
    import copy
    import dataclasses

    from nemesis_fast.evaluation.load import validate

    for key, value, message in (
        ("seed", 1.5, "seed must be an integer, got 1.5"),
        ("batch_size", True, "batch_size must be an integer, got True"),
        ("test_samples", "5", "test_samples must be an integer, got '5'"),
        ("training.epochs", 1.5, "training.epochs must be an integer, got 1.5"),
        ("certify.images", 2.5, "certify.images must be an integer, got 2.5"),
    ):
        bad = copy.deepcopy(config)
        section, _, name = key.rpartition(".")
        setattr(getattr(bad, section) if section else bad, name, value)
        for check in (evaluate, validate):
            with pytest.raises(ConfigError, match=message):
                check(bad)
    assert validate(dataclasses.replace(config)) == config  # a checked config passes unchanged
    # What Python code naturally holds is read as a file's value: a path, a tuple, numpy's numbers.
    import numpy as np

    pythonic = copy.deepcopy(config)
    pythonic.out_dir, pythonic.whitebox_eps, pythonic.seed = (
        Path(config.out_dir),
        tuple(config.whitebox_eps),
        np.int64(3),
    )
    pythonic.training.learning_rate = np.float32(0.5)
    checked = validate(pythonic)
    assert (checked.out_dir, checked.whitebox_eps, checked.seed) == (config.out_dir, config.whitebox_eps, 3)
    assert type(checked.seed) is int and checked.training.learning_rate == 0.5


def test_a_config_written_for_mnist_budgets_is_refused_on_cifar10(tmp_path):
    """--preset paper --dataset cifar10 attacked CIFAR-10 at MNIST's eps 0.1 and 0.3 and squeezed it to 1 bit."""
    for preset in ("paper", "paper_table", "paper_weak_source", "paper_gpu_check"):
        with pytest.raises(ConfigError, match=r"dataset: cifar10, but paper.toml sets budgets for mnist \(white"):
            load_config(preset_path(preset), {"dataset": "cifar10"})
    synthetic = {"dataset": "cifar10", "synthetic": True}
    assert load_config(preset_path("paper_headline"), synthetic).attack.fgsm_eps == pytest.approx(8 / 255)
    own = tmp_path / "cifar.toml"
    own.write_text(
        'base = "paper"\ndataset = "cifar10"\nsynthetic = true\nwhitebox_eps = [0.0, 0.03]\nblackbox_eps = []\n'
        "[defense]\nfgsm_adversarial_eps = 0.03\nsqueeze_bits = 3\n"
        "[attack]\nfgsm_eps = 0.03\nrfgsm_eps = 0.03\n"
    )
    with pytest.raises(ConfigError, match=r"but paper.toml sets budgets for mnist \(attack.rfgsm_alpha\)"):
        load_config(own)
    own.write_text(own.read_text() + "rfgsm_alpha = 0.01\n")
    config = load_config(own)  # every budget set for CIFAR-10: the rest of the authors' settings apply
    assert (config.dataset, config.attack.fgsm_eps, config.squeeze_bits) == ("cifar10", 0.03, 3)
    assert config.attack.deepfool_overshoot == 0.0


def test_budgets_a_config_leaves_to_the_data_set_are_not_refused(tmp_path):
    """A JSON null (the data set's default) kept the base's MNIST budget, and a config that names no data set had
    its own budgets taken for its base's."""
    own = tmp_path / "cifar.json"
    nulls = {"whitebox_eps": None, "blackbox_eps": [], "defense": {"fgsm_adversarial_eps": None, "squeeze_bits": 0}}
    nulls["attack"] = {"fgsm_eps": None, "rfgsm_eps": None, "rfgsm_alpha": None}
    own.write_text(json.dumps({"base": "paper", "dataset": "cifar10", "synthetic": True, **nulls}))
    config = load_config(own)
    assert config.attack.fgsm_eps == pytest.approx(8 / 255) and config.squeeze_bits == 3
    on_quick = tmp_path / "quick.toml"
    on_quick.write_text('base = "quick"\nwhitebox_eps = [0.0, 0.03]\n')
    assert load_config(on_quick, {"dataset": "cifar10", "synthetic": True}).whitebox_eps == [0.0, 0.03]


def test_pgd_without_an_eps_is_refused_by_name():
    """Attacks.eps looked up a pgd_eps the config does not have, and PGD then failed multiplying by None."""
    from types import SimpleNamespace

    from nemesis_fast.evaluation.attack import Attacks

    attacks = Attacks(load_config(None), None, SimpleNamespace(device=torch.device("cpu")), None)
    assert attacks.eps("pgd", None) is None and attacks.eps("fgsm", None) == load_config(None).attack.fgsm_eps
    with pytest.raises(ValueError, match="pgd: an eps must be given"):
        attacks.make("pgd", torch.nn.Linear(4, 3), 0)


def test_a_section_given_as_an_override_updates_that_section_key_by_key(tmp_path):
    """`evaluate(path, training={...})` and `evaluate(config, training={...})` change the keys given and keep the
    section's others (the file's, or the object's), as a config's `base` merges; a section object replaces it."""
    from nemesis_fast.evaluation.config import TrainingSettings
    from nemesis_fast.evaluation.load import config_with_overrides

    path = write_config(tmp_path)
    for config in (
        load_config(path, {"training": {"epochs": 2}, "certify": {"n": 128}}),
        config_with_overrides(load_config(path), {"training": {"epochs": 2}, "certify": {"n": 128}}),
    ):
        assert (config.training.epochs, config.training.train_samples, config.training.source_depth) == (2, 600, 8)
        assert config.certify.n == 128 and config.certify.n0 == load_config(path).certify.n0
        assert config.defense.gda_copies == 2
    whole = config_with_overrides(load_config(path), {"training": TrainingSettings(epochs=3)})
    assert (whole.training.epochs, whole.training.train_samples) == (3, TrainingSettings().train_samples)
    with pytest.raises(ConfigError, match="unknown setting training.epoch;"):
        load_config(path, {"training": {"epoch": 2}})


def test_the_attack_phase_refuses_an_attack_it_does_not_have():
    """An attack name outside the config's checks (a caller's own) raises, not C&W's results under its name."""
    from nemesis_fast.evaluation.attack import Attacks

    attacks = Attacks.__new__(Attacks)
    attacks.config = load_config(preset_path("quick"))
    for method in (lambda name: attacks.make(name, torch.nn.Identity(), 0), attacks.cost):
        with pytest.raises(ValueError, match="the evaluation has no attack 'mifgsm'"):
            method("mifgsm")
    assert attacks.cost("fgsm") == 1.0
    assert type(attacks.make("cw", torch.nn.Identity(), 0)).__name__ == "CarliniWagnerL2"
