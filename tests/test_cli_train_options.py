"""`nemesis-fast train`'s options reach what they set: --t the BReLU threshold (of one model and of --paper's),
--limit the training rows, --set's words in any case; their defaults, types, choices and groups in the help. The
training itself is replaced by a recorder."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

import nemesis_fast.paper_models as paper_models
import nemesis_fast.training as training
from nemesis_fast.cli import build_parser, command_parsers, main
from nemesis_fast.nn import BoundedReLU


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def fake_train(model, train_data, recipe, **kwargs):
        calls.append(SimpleNamespace(model=model, rows=len(train_data[1]), recipe=recipe, **kwargs))
        return SimpleNamespace(history=[], best_epoch=0, seconds=0.0, settings={}, val_accuracy=None)

    monkeypatch.setattr(training, "train", fake_train)
    monkeypatch.setattr(training, "evaluate_accuracy", lambda *a, **k: 0.5)
    return calls


def test_t_and_limit_reach_the_model_and_the_training_rows(recorded, capsys):
    argv = ["train", "--activation", "brelu", "--t", "0.25", "--limit", "37", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    (call,) = recorded
    thresholds = {m.t for m in call.model.modules() if isinstance(m, BoundedReLU)}
    assert thresholds == {0.25} and call.rows == 37
    assert main(["train", "--activation", "brelu", "--limit", "5", "--device", "cpu", "--no-progress"]) == 0
    assert {m.t for m in recorded[1].model.modules() if isinstance(m, BoundedReLU)} == {1.0}  # the default


def test_paper_passes_t_to_the_seven_models(monkeypatch, capsys):
    seen = {}

    def fake(train_data, test_data, **kwargs):
        seen.update(kwargs, rows=len(train_data[1]))
        return []

    monkeypatch.setattr(paper_models, "train_paper_models", fake)
    assert main(["train", "--paper", "--t", "0.5", "--limit", "40", "--device", "cpu", "--no-progress"]) == 0
    assert seen["t"] == 0.5 and seen["rows"] == 40
    seen.clear()
    assert main(["train", "--paper", "--limit", "40", "--device", "cpu", "--no-progress"]) == 0
    assert seen["t"] == 1.0


def test_set_takes_words_in_any_case_literals_and_strings_and_needs_a_key(capsys):
    args = build_parser().parse_args(
        ["train", "--set", "clip=TRUE", "--set", "a=False", "--set", "b=NONE", "--set", "eps=0.2", "--set", "m=online"]
    )
    assert args.settings == [("clip", True), ("a", False), ("b", None), ("eps", 0.2), ("m", "online")]
    for refused in ("noequals", "=5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--set", refused])
        assert f"--set takes KEY=VALUE, got {refused!r}" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "--set", "path=/tmp/x.pt", "--set", "k=a=b", "--set", "c=(0, 1)"])
    assert args.settings == [("path", "/tmp/x.pt"), ("k", "a=b"), ("c", (0, 1))]  # what is no literal: a string


def _train_parser() -> argparse.ArgumentParser:
    return command_parsers(build_parser())["train"]


def test_options_left_out_take_the_documented_defaults():
    args = vars(build_parser().parse_args(["train"]))
    assert callable(args.pop("handler")) and callable(args.pop("interrupted"))
    assert args == {
        "command": "train",
        "paper": False,
        "data": "mnist",
        "root": None,
        "model": None,
        "activation": "relu",
        "t": None,
        "depth": None,
        "conv2_padding": None,
        "recipe": "standard",
        "settings": [],
        "source": None,
        "limit": None,
        "epochs": 20,
        "batch_size": 128,
        "lr": 1e-3,
        "val_fraction": 0.1,
        "val_rows": "images",
        "patience": 5,
        "seed": 0,
        "device": None,
        "amp": None,
        "compile": False,
        "out": None,
        "overwrite": False,
        "resume": None,
        "out_dir": None,
        "json": None,
        "threads": 0,
        "progress": None,
    }


def test_options_take_their_aliases_types_and_choices(capsys):
    argv = ["train", "--dataset", "cifar10", "--data-dir", "d", "--depth", "32", "--t", "0.5", "--amp"]
    args = build_parser().parse_args([*argv, "--conv2-padding", "same", "--model", "resnet", "--val-rows", "last"])
    assert (args.data, args.root, args.depth, args.t, args.amp) == ("cifar10", "d", 32, 0.5, "bf16")  # a bare --amp
    assert (args.conv2_padding, args.model, args.val_rows) == ("same", "resnet", "last")
    assert build_parser().parse_args(["train", "--amp", "fp16"]).amp == "fp16"
    for option, value in (("--model", "vgg"), ("--conv2-padding", "full"), ("--val-rows", "first"), ("--amp", "fp8")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", option, value])
        err = capsys.readouterr().err
        assert f"argument {option}: invalid choice: " in err and value in err


def test_train_help_lists_each_option_in_its_group():
    groups = {g.title: [a.option_strings[0] for a in g._group_actions] for g in _train_parser()._action_groups}
    assert groups["data, model and recipe"] == [
        *("--data", "--root", "--model", "--activation", "--t", "--depth", "--conv2-padding", "--recipe", "--set"),
        *("--source", "--limit"),
    ]
    assert groups["training budget"] == [
        *("--epochs", "--batch-size", "--lr", "--val-fraction", "--val-rows", "--patience", "--seed", "--device"),
        *("--amp", "--compile"),
    ]
    assert groups["output and resuming"] == ["--out", "--overwrite", "--resume", "--out-dir", "--json"]
