"""`nemesis-fast train`'s options reach what they set: --t the BReLU threshold (of one model and of --paper's),
--limit the training rows, --set's words in any case. The training itself is replaced by a recorder."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import nemesis_fast.paper_models as paper_models
import nemesis_fast.training as training
from nemesis_fast.cli import build_parser, main
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


def test_set_takes_true_false_and_none_in_any_case():
    args = build_parser().parse_args(
        ["train", "--set", "clip=TRUE", "--set", "a=False", "--set", "b=NONE", "--set", "eps=0.2", "--set", "m=online"]
    )
    assert args.settings == [("clip", True), ("a", False), ("b", None), ("eps", 0.2), ("m", "online")]
