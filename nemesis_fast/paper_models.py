"""The seven models the paper compares (:data:`PAPER_MODELS`), trained together by :func:`train_paper_models`: on
one process, or under torchrun shared out among the processes, each model trained once (the schedule of
:mod:`nemesis_fast.parallel`, the same as the evaluation's)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_device
from .defenses.feature_squeezing import PAPER_BIT_DEPTH, FeatureSqueezing
from .defenses.recipes import make_recipe
from .models import build_model
from .parallel import Job, Trained, Workers, train_models, training_cost
from .training import Data, Log, _check_data, _logger, evaluate_accuracy, save_checkpoint, train


@dataclass(frozen=True)
class PaperModel:
    """One of the seven models the paper compares: a recipe and an activation, or feature squeezing in front
    of the standard model."""

    name: str
    recipe: str | None  # None: feature squeezing of the standard model
    activation: str = "relu"


PAPER_MODELS = (
    PaperModel("standard", "standard"),
    PaperModel("feature_squeezing", None),
    PaperModel("label_smoothing", "label_smoothing"),
    PaperModel("fgsm_adversarial", "fgsm_adversarial"),
    PaperModel("vat", "vat"),
    PaperModel("gda", "gda"),
    PaperModel("gda_brelu", "gda", "brelu"),
)
DEFAULT_MODEL = {"mnist": "mnist_cnn", "cifar10": "cifar_cnn"}


def train_paper_models(
    train_data: Data,
    test_data: Data,
    *,
    dataset: str = "mnist",
    model_name: str | None = None,
    models: Iterable[str] | None = None,
    t: float = 1.0,
    recipe_settings: dict[str, dict[str, Any]] | None = None,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    log: Log | bool = True,
    workers: Workers | None = None,
    **train_kwargs: Any,
) -> list[dict[str, Any]]:
    """Trains the paper's seven models (or those named in `models`) and measures their clean test accuracy.

    The standard model is trained first where others need it: feature squeezing wraps it (PAPER_BIT_DEPTH bits,
    BPDA gradients) and the offline recipes use it as their source model. Every model starts from the same seed.
    `recipe_settings` maps a recipe name to overrides of its settings (e.g. {"vat": {"mode": "offline"}}). With
    `out_dir`, each trained model is saved as `<out_dir>/<name>.pt`. `train_kwargs` go to :func:`train`.

    Under torchrun pass `workers` (:func:`nemesis_fast.parallel.start`): each model is trained once, by the
    process the schedule names, and its weights are broadcast to all; every process returns the same rows, and
    only process 0 writes `out_dir`.

    Returns one dict per model: name, recipe, activation, test_accuracy, seconds (training, the offline
    examples included), epochs, val_accuracy, trained_by (the rank; None for feature squeezing), checkpoint.
    """
    check_choice(dataset, "dataset", tuple(DEFAULT_MODEL))
    images, _ = _check_data(train_data, "train_data")
    test_images, test_labels = _check_data(test_data, "test_data")
    wanted = [m.name for m in PAPER_MODELS] if models is None else list(models)
    for name in wanted:
        check_choice(name, "models", [m.name for m in PAPER_MODELS])
    model_name = model_name or DEFAULT_MODEL[dataset]
    say = _logger(log)
    device = check_device(train_kwargs.pop("device", None))
    workers = workers or Workers(device=device)
    specs = {m.name: m for m in PAPER_MODELS}
    recipe_settings = recipe_settings or {}
    recipes = {
        m.name: make_recipe(m.recipe, recipe_settings.get(m.recipe), dataset=dataset, seed=seed)
        for m in PAPER_MODELS
        if m.recipe is not None
    }
    need_standard = "feature_squeezing" in wanted or any(n in wanted and r.needs_source for n, r in recipes.items())
    to_train = [n for n in recipes if n in wanted or (n == "standard" and need_standard)]

    def build(name: str) -> nn.Module:
        return build_model(model_name, activation=specs[name].activation, t=t)

    def train_one(name: str, needs: dict[str, dict[str, torch.Tensor]]) -> Trained:
        torch.manual_seed(seed)
        model = build(name)
        source = None
        if "standard" in needs:
            source = build("standard")
            source.load_state_dict(needs["standard"])
        say(f"training {name} ({specs[name].recipe}, {specs[name].activation})")
        result = train(
            model, train_data, recipes[name], seed=seed, source_model=source, device=device, log=say, **train_kwargs
        )
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        history, settings = result.history, result.settings
        return state, {
            "seconds": result.seconds,
            "val_accuracy": result.val_accuracy,
            "history": history,
            "settings": settings,
        }

    rows_per_epoch = round(len(images) * (1 - train_kwargs.get("val_fraction", 0.1)))
    jobs = [
        Job(
            name,
            training_cost(model_name, {}, recipes[name].name, recipes[name].settings_dict(), rows_per_epoch),
            ("standard",) if recipes[name].needs_source else (),
        )
        for name in to_train
    ]
    template = lambda name: build(name).state_dict()  # noqa: E731
    trained = train_models(jobs, workers, template=template, train=train_one, log=say)
    loaded = {}
    for name, (state, _) in trained.items():
        loaded[name] = build(name)
        loaded[name].load_state_dict(state)
        loaded[name].to(device)
    rows = [
        _row(spec, loaded, trained, dataset, out_dir if workers.is_main else None, test_images, test_labels)
        for spec in PAPER_MODELS
        if spec.name in wanted
    ]
    for row in rows:
        say(f"{row['name']}: clean test accuracy {row['test_accuracy']:.4f} ({row['seconds']:.1f}s)")
    return rows


def _row(
    spec: PaperModel,
    loaded: dict[str, nn.Module],
    trained: dict[str, Trained],
    dataset: str,
    out_dir: str | os.PathLike | None,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
) -> dict[str, Any]:
    """The table row of one model (and its checkpoint under `out_dir`, when given)."""
    row: dict[str, Any] = {"name": spec.name, "recipe": spec.recipe, "activation": spec.activation}
    if spec.recipe is None:
        bits = PAPER_BIT_DEPTH[dataset]
        model: nn.Module = FeatureSqueezing(loaded["standard"], bits)
        row.update(recipe=f"standard + feature squeezing ({bits} bit)", seconds=0.0, epochs=0, val_accuracy=None)
        row["trained_by"] = None
    else:
        model, meta = loaded[spec.name], trained[spec.name][1]
        row.update(seconds=meta["seconds"], epochs=len(meta["history"]), val_accuracy=meta["val_accuracy"])
        row["trained_by"] = meta["trained_by"]
        if out_dir is not None:
            path = Path(out_dir) / f"{spec.name}.pt"
            metrics = {"val_accuracy": meta["val_accuracy"], "history": meta["history"]}
            save_checkpoint(path, model, recipe=spec.recipe, settings=meta["settings"], metrics=metrics)
            row["checkpoint"] = str(path)
    row["test_accuracy"] = evaluate_accuracy(model, test_images, test_labels)
    return row
