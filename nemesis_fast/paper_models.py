"""The seven models the paper compares (:data:`PAPER_MODELS`), trained together by :func:`train_paper_models`: on
one process, or under torchrun shared out among the processes, each model trained once (the schedule of
:mod:`nemesis_fast.parallel`, the same as the evaluation's)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_device
from ._io import check_output_folder
from ._training_checks import check_classes, check_data, check_image_shapes
from .checkpoints import save_checkpoint
from .defenses.feature_squeezing import PAPER_BIT_DEPTH, FeatureSqueezing
from .defenses.recipes import Recipe, make_recipe
from .models import build_model
from .parallel import Job, Trained, Workers, train_models, training_cost
from .training import Data, Log, _logger, evaluate_accuracy, train


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


@dataclass
class _Trainer:
    """Builds and trains the paper's models with one set of arguments (the schedule's `template` and `train`)."""

    model_name: str
    t: float
    recipes: dict[str, Recipe]
    data: Data
    seed: int
    device: torch.device
    say: Log
    kwargs: dict[str, Any]  # for train()
    checkpoints: Path | None  # the folder of the training states, one file per model
    specs: dict[str, PaperModel] = field(default_factory=lambda: {m.name: m for m in PAPER_MODELS})

    def build(self, name: str) -> nn.Module:
        return build_model(self.model_name, activation=self.specs[name].activation, t=self.t)

    def template(self, name: str) -> dict[str, torch.Tensor]:
        return self.build(name).state_dict()

    def job(self, name: str, images: int) -> Job:
        recipe = self.recipes[name]
        cost = training_cost(self.model_name, {}, recipe.name, recipe.settings_dict(), images)
        return Job(name, cost, ("standard",) if recipe.needs_source else ())

    def train(self, name: str, needs: dict[str, dict[str, torch.Tensor]]) -> Trained:
        torch.manual_seed(self.seed)
        model = self.build(name)
        source = None
        if "standard" in needs:
            source = self.build("standard")
            source.load_state_dict(needs["standard"])
        self.say(f"training {name} ({self.specs[name].recipe}, {self.specs[name].activation})")
        result = train(
            model,
            self.data,
            self.recipes[name],
            seed=self.seed,
            source_model=source,
            device=self.device,
            log=self.say,
            checkpoint=None if self.checkpoints is None else self.checkpoints / f"{name}.state.pt",
            **self.kwargs,
        )
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        meta = {"seconds": result.seconds, "val_accuracy": result.val_accuracy, "history": result.history}
        return state, {**meta, "settings": result.settings}

    def load(self, name: str, state: dict[str, torch.Tensor]) -> nn.Module:
        model = self.build(name)
        model.load_state_dict(state)
        return model.to(self.device)


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

    The standard model is trained where others need it: feature squeezing wraps it (PAPER_BIT_DEPTH bits, BPDA
    gradients) and the offline recipes use it as their source model. Every model starts from the same seed.
    `recipe_settings` maps a recipe name to overrides of its settings (e.g. {"vat": {"mode": "offline"}}). With
    `out_dir`, each model is saved as `<out_dir>/<name>.pt` (feature squeezing: the standard model behind its
    squeezer, which :func:`~nemesis_fast.checkpoints.load_checkpoint` puts back). `train_kwargs` go to
    :func:`train`, but for `checkpoint`, here a folder: each model's training state is kept in
    `<checkpoint>/<name>.state.pt`, so that a run stopped part way resumes every model where it was (a path or
    folder, not a checkpoint object).

    Under torchrun pass `workers` (:func:`nemesis_fast.parallel.start`): each model is trained once, by the
    process the schedule names, its weights are broadcast to all, and each model's test accuracy is measured by
    the process that trained it. Every process returns the same rows; only process 0 writes `out_dir` (and its
    rows name the checkpoints).

    Returns one dict per model: name, recipe, activation, test_accuracy, seconds (training, the offline
    examples included), epochs, val_accuracy, trained_by (the rank; None for feature squeezing), checkpoint.
    """
    images, test_images, test_labels, wanted = _checked_arguments(
        dataset, train_data, test_data, models, recipe_settings
    )
    device = check_device(train_kwargs.pop("device", None))
    workers = workers or Workers(device=device)
    if out_dir is not None and workers.is_main:
        check_output_folder(out_dir, "out_dir")  # before the training, not after it
    checkpoints = _checkpoint_folder(train_kwargs.pop("checkpoint", None))
    recipes = {
        m.name: make_recipe(m.recipe, (recipe_settings or {}).get(m.recipe), dataset=dataset, seed=seed)
        for m in PAPER_MODELS
        if m.recipe is not None
    }
    need_standard = "feature_squeezing" in wanted or any(n in wanted and r.needs_source for n, r in recipes.items())
    say = _logger(log)
    name = model_name or DEFAULT_MODEL[dataset]
    trainer = _Trainer(name, t, recipes, train_data, seed, device, say, train_kwargs, checkpoints)
    check_classes(trainer.build("standard"), test_data, "test_data", torch.device("cpu"))  # before any training
    per_epoch = round(len(images) * (1 - train_kwargs.get("val_fraction", 0.1)))
    jobs = [trainer.job(n, per_epoch) for n in recipes if n in wanted or (n == "standard" and need_standard)]
    trained = train_models(jobs, workers, template=trainer.template, train=trainer.train, log=say)
    loaded: dict[str, nn.Module] = {name: trainer.load(name, state) for name, (state, _) in trained.items()}
    if need_standard:
        loaded["feature_squeezing"] = FeatureSqueezing(loaded["standard"], PAPER_BIT_DEPTH[dataset])
    owner = {name: trained["standard" if name == "feature_squeezing" else name][1]["trained_by"] for name in loaded}
    mine = [name for name in wanted if owner[name] == workers.rank]
    accuracy: dict[str, float] = {}
    for part in workers.gather({name: evaluate_accuracy(loaded[name], test_images, test_labels) for name in mine}):
        accuracy.update(part)  # each model's, measured by the process that trained it
    rows = [
        _row(
            spec,
            loaded[spec.name],
            trained.get(spec.name, trained.get("standard")),
            dataset,
            out_dir if workers.is_main else None,
        )
        for spec in PAPER_MODELS
        if spec.name in wanted
    ]
    for row in rows:
        row["test_accuracy"] = accuracy[row["name"]]
        if workers.is_main:
            say(f"{row['name']}: clean test accuracy {row['test_accuracy']:.4f} ({row['seconds']:.1f}s)")
    return rows


def _checked_arguments(
    dataset: str,
    train_data: Data,
    test_data: Data,
    models: Iterable[str] | None,
    recipe_settings: dict[str, dict[str, Any]] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(the training images, the test images, the test labels, the names of the models wanted) of
    :func:`train_paper_models`'s arguments of the same names, checked."""
    check_choice(dataset, "dataset", tuple(DEFAULT_MODEL))
    images, _ = check_data(train_data, "train_data")
    test_images, test_labels = check_data(test_data, "test_data")
    check_image_shapes(
        images, test_images, "test_data", "train_data", "the models are tested on images of the shape they train on"
    )
    if isinstance(models, str):
        raise TypeError(f"models must be a list of model names, got the string {models!r}")
    wanted = [m.name for m in PAPER_MODELS] if models is None else list(models)
    for name in wanted:
        check_choice(name, "models", [m.name for m in PAPER_MODELS])
    if recipe_settings is not None and not isinstance(recipe_settings, dict):
        kind = type(recipe_settings).__name__
        raise TypeError(f"recipe_settings must be a dict of recipe name -> settings, got {kind}")
    for name in recipe_settings or {}:
        check_choice(name, "recipe_settings' keys (recipe names)", sorted({m.recipe for m in PAPER_MODELS if m.recipe}))
    return images, test_images, test_labels, wanted


def _checkpoint_folder(checkpoint: Any) -> Path | None:
    """train_paper_models' `checkpoint`: the folder of one training state per model, checked before any training
    (None: none)."""
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint must be a folder path (each model's training state is kept in <checkpoint>/<name>.state.pt), "
            f"got {type(checkpoint).__name__}"
        )
    return check_output_folder(checkpoint, "checkpoint")


def _row(
    spec: PaperModel, model: nn.Module, trained: Trained | None, dataset: str, out_dir: str | os.PathLike | None
) -> dict[str, Any]:
    """The table row of one model, but its test accuracy (and its checkpoint under `out_dir`, when given).
    `trained`: the model's (state, meta); for feature squeezing, the standard model's, which it is saved as, behind
    its squeezer."""
    row: dict[str, Any] = {"name": spec.name, "recipe": spec.recipe, "activation": spec.activation}
    meta = trained[1]
    if spec.recipe is None:  # feature squeezing in front of the standard model: nothing trained of its own
        bits = PAPER_BIT_DEPTH[dataset]
        row.update(recipe=f"standard + feature squeezing ({bits} bit)", seconds=0.0, epochs=0, val_accuracy=None)
        row["trained_by"] = None
    else:
        row.update(seconds=meta["seconds"], epochs=len(meta["history"]), val_accuracy=meta["val_accuracy"])
        row["trained_by"] = meta["trained_by"]
    if out_dir is not None:
        path = Path(out_dir) / f"{spec.name}.pt"
        metrics = {"val_accuracy": meta["val_accuracy"], "history": meta["history"]}
        recipe = spec.recipe or "standard"
        save_checkpoint(path, model, recipe=recipe, settings=meta["settings"], metrics=metrics)
        row["checkpoint"] = str(path)
    return row
