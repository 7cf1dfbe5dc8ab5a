"""`nemesis-fast evaluate`'s options reach evaluate(): each one parsed is passed on, none dropped. The evaluation
itself is replaced by a recorder."""

from __future__ import annotations

import re

import nemesis_fast.evaluation as evaluation
from nemesis_fast.cli import build_parser, command_parsers, main
from nemesis_fast.evaluation.config import preset_names


def test_every_option_is_passed_to_evaluate(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(evaluation, "evaluate", lambda config, **kwargs: calls.append((config, kwargs)))
    argv = ["evaluate", "--preset", "paper", "--data-dir", str(tmp_path), "--dataset", "cifar10", "--synthetic"]
    argv += ["--test-samples", "7", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    argv += ["--device", "cpu", "--threads", "3", "--no-progress", "--cached-only"]
    assert main(argv) == 0
    ((config, kwargs),) = calls
    assert config == evaluation.preset_path("paper")
    assert kwargs == {
        "progress": False,
        "cached_only": True,
        "data_dir": str(tmp_path),
        "dataset": "cifar10",
        "out_dir": str(tmp_path / "o"),
        "device": "cpu",
        "test_samples": 7,
        "synthetic": True,
        "cache_dir": str(tmp_path / "c"),
        "threads": 3,
    }


def test_options_left_out_leave_the_configs_settings(monkeypatch):
    calls = []
    monkeypatch.setattr(evaluation, "evaluate", lambda config, **kwargs: calls.append((config, kwargs)))
    assert main(["evaluate"]) == 0
    ((config, kwargs),) = calls
    assert config is None and kwargs.pop("progress") is None and kwargs.pop("cached_only") is False
    assert set(kwargs.values()) == {None}  # no override: the config's own values apply


def test_the_preset_help_names_every_shipped_preset():
    (preset,) = (a for a in command_parsers(build_parser())["evaluate"]._actions if "--preset" in a.option_strings)
    names = preset_names()
    assert len(names) >= 7 and set(names) - set(re.findall(r"\w+", preset.help)) == set()
