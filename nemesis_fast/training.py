"""Training with the paper's defenses: :func:`train` and :func:`evaluate_accuracy` (checkpoints:
:mod:`nemesis_fast.checkpoints`; the paper's seven models: :mod:`nemesis_fast.paper_models`).

The training set lives on the device (:class:`~nemesis_fast.data.DeviceLoader`); GDA's noisy copies are made
per batch on the device; the loop synchronises with the GPU once per epoch (validation), not per step.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Any

import torch
from torch import nn

from ._checks import check_bool, check_device, check_no_inference_tensors
from ._epochs import (
    Data,
    EarlyStopping,
    Epochs,
    Log,
    TrainResult,
    epoch_state,
    evaluate_accuracy,
    forward_autocast,
    run_epochs,
)
from ._modes import kept_modes, with_autograd
from ._training_checks import (
    check_budget,
    check_classes,
    check_compiled_batches,
    check_data,
    check_val_rows,
)
from ._validation_rows import (
    held_out_rows,
    hold_out_last_rows,
    split_off_validation,
    training_rows,
    training_set_size,
)
from .checkpoints import checkpoint_noise_sigma, load_checkpoint, save_checkpoint, training_noise_sigma
from .data.loader import DeviceLoader, to_float
from .defenses.adversarial_training import offline_examples
from .defenses.recipes import RECIPES, Recipe, make_recipe
from .resume import (
    EpochCheckpoint,
    Resumable,
    as_checkpoint,
    check_device_kind,
    inputs_signature,
    model_signature,
)

# The checkpoint functions moved to nemesis_fast.checkpoints; importable from here as before.
__all__ = [
    "TrainResult",
    "checkpoint_noise_sigma",
    "evaluate_accuracy",
    "infer_dataset",
    "load_checkpoint",
    "save_checkpoint",
    "train",
    "training_noise_sigma",
]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _logger(log: Log | bool) -> Log:
    if callable(log):
        return log
    return _stderr if log else (lambda message: None)


def infer_dataset(images: torch.Tensor) -> str:
    """ "cifar10" for 3-channel images, else "mnist": which defaults of the recipes apply."""
    return "cifar10" if images.dim() == 4 and images.shape[1] == 3 else "mnist"


def _offline_training_set(
    recipe: Recipe,
    model: nn.Module,
    source: nn.Module | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    source_val: dict[str, Any],
    budget: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """The training set of an offline recipe: the images plus the recipe's examples of `source`, as float32, and
    the source. With no source, a copy of `model` is first trained on the images with the "standard" recipe and
    `budget` (:func:`train`'s keyword arguments), validated as `source_val` (train's validation arguments) says."""
    device = budget["device"]
    if source is None:
        budget["log"](f"{recipe.name} ({recipe.settings.mode}): training a standard source model first")
        source = copy.deepcopy(model)
        train(source, (images, labels), "standard", **{"val_fraction": 0.0, **source_val}, **budget)
    source = source.to(device)
    extra = offline_examples(lambda x, y: recipe.offline_examples(source, x, y), images, labels, device=device)
    clean = to_float(images.to(device))
    return torch.cat([clean, extra]), torch.cat([labels.to(device), labels.to(device)]), source


def _epochs(
    model: nn.Module,
    recipe: Recipe,
    images: torch.Tensor,
    labels: torch.Tensor,
    rows: int | None,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    amp: bool | str,
    compile: bool,
    max_steps: int | None,
    val: Data | None,
    progress: bool | None,
    say: Log,
) -> Epochs:
    """The batches, Adam and the epoch loop of :func:`train` (its arguments of the same names; `rows`: the
    loader's, the rows of the training set batched)."""
    # With compile, a last smaller batch would compile a second graph: drop it (a different one every epoch).
    loader = DeviceLoader(
        images,
        labels,
        batch_size,
        seed=seed,
        device=device,
        augment=recipe.augment(device),
        expand=recipe.expansion(),
        drop_last=compile,
        rows=rows,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda" or None)
    autocast, scaled = forward_autocast(device, amp)
    runner = Epochs(
        forward=torch.compile(model) if compile else model,
        optimizer=optimizer,
        recipe=recipe,
        loader=loader,
        autocast=autocast,
        scaler=torch.amp.GradScaler(device.type) if scaled else None,
        max_steps=max_steps,
        device=device,
        amp=amp,
        val=val,
        progress=progress,
        say=say,
    )
    return runner


@with_autograd
def train(
    model: nn.Module,
    data: Data,
    recipe: str | Recipe = "standard",
    *,
    settings: Any = None,
    dataset: str | None = None,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    val_data: Data | None = None,
    val_fraction: float = 0.1,
    val_rows: str = "images",
    patience: int | None = 5,
    seed: int = 0,
    device: torch.device | str | None = None,
    amp: bool | str = False,
    compile: bool = False,
    source_model: nn.Module | None = None,
    max_steps: int | None = None,
    checkpoint: str | os.PathLike | EpochCheckpoint | None = None,
    progress: bool | None = None,
    log: Log | bool = True,
) -> TrainResult:
    """Trains `model` in place on `data` with a defense recipe: Adam, the paper's batch size and epochs.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to logits (e.g. :func:`nemesis_fast.models.mnist_cnn`).
        data: (images, labels): uint8 (N, C, H, W) pixels (or finite float images in [0, 1]) and integer labels
            (N,) (int64, or another integer dtype, read as int64), N >= 1, each a class of the model (below its number
            of logits); checked before training.
        recipe: "standard", "gda", "label_smoothing", "fgsm_adversarial", "vat" (see
            :mod:`nemesis_fast.defenses.recipes`), or a Recipe object (which has its settings: then pass no
            `settings` or `dataset`, ValueError otherwise; its random streams are reseeded from `seed`, so that
            the object and its name train to the same weights, however often the object is reused).
        settings: the recipe's settings: None (the paper's defaults for `dataset`), a dict of overrides, or
            the settings dataclass. Only with a recipe named by a string.
        dataset: "mnist" or "cifar10", for the recipe defaults; None infers it from the channels (3: CIFAR-10).
            Only with a recipe named by a string.
        epochs: passes over the training set (the paper: 20). batch_size: images per step before augmentation
            (128). lr: Adam's learning rate (1e-3).
        val_data: (images, labels) to validate on after every epoch, images of `data`'s shape (C, H, W); None
            splits `val_fraction` of `data` off (with `seed`); with val_fraction=0 and no val_data there is no
            validation.
        val_rows: which rows `val_fraction` holds out. "images": a random fraction of the images (with their
            noisy copies or offline examples), validated on clean. "last": as Keras' `validation_split`, the last
            total - int(total * (1 - val_fraction)) of the training set's total rows as the recipe lays it out,
            unshuffled, validated on as they are: the images, then GDA's fixed copies copy by copy (so noisy
            copies of images trained on), or then the offline examples of all the images (so adversarial rows).
            Needs no `val_data`, a `val_fraction` > 0, and a recipe whose training set is fixed (not GDA with
            fresh copies per batch).
        patience: stop after this many epochs without a better validation accuracy; None never stops early.
            With a validation set the model ends with the weights of its best epoch. Where the model's
            validation logits become NaN (training diverged), ValueError naming the epoch, raised after the model
            is given back the weights of its best epoch (the checkpoint keeps the epoch before); without
            validation, the same where its weights become NaN or infinite.
        seed: seeds torch's global generator (dropout), the shuffling, GDA's noise and VAT's directions. torch's
            generator is the process's: seeded runs that overlap in threads of one process draw each other's dropout
            masks (run a sweep of them in processes).
        device: default: the GPU when one is visible. The model is moved there.
        amp: False, True ("bf16") or "fp16" (with gradient scaling): autocast for the forward passes.
        compile: run the forward passes through torch.compile (each epoch then drops its last, smaller batch;
            ValueError when an epoch holds fewer training rows than `batch_size`, so no batch at all).
        source_model: the model trained beforehand that offline recipes make their examples with; None trains
            one with the "standard" recipe and these arguments first.
        max_steps: stop after this many optimizer steps (for quick checks).
        checkpoint: a file path (or an object with load() and save(state)) where the whole training state is
            written after every epoch; when it holds a state, training resumes after its epoch and ends with
            the weights an uninterrupted run would have (fp16's gradient scale included). A state of another run
            (recipe, settings, budget, seed, data: its size, labels and a sample of its images, the same of
            `val_data` and the weights of `source_model` where given, the model's architecture, amp, compile),
            or one written on another kind of device (CPU, CUDA), raises ValueError before any work. An offline
            recipe's source trained here (`source_model` None) is saved in the checkpoint once trained, before
            epoch 1: a resumed run reuses it, and trains no other.
        progress: a tqdm bar per epoch; None: when stderr is a terminal and tqdm is installed.
        log: True prints one line per epoch to stderr, False nothing, or a callable taking each line.

    The model comes back with each submodule's train/eval mode as it was given (whatever the outcome; each epoch
    trains with the whole model in train mode), and with no gradient left in its trainable parameters' `.grad`.
    Inside a caller's torch.no_grad() or torch.inference_mode() it trains as outside, with autograd on.
    """
    images, labels = check_data(data, "data")
    _check_modules(model, source_model)
    check_bool(compile, "compile")
    if progress is not None:
        check_bool(progress, "progress")
    checkpoint = as_checkpoint(checkpoint)  # a path checked before any work
    checked = check_budget(epochs, batch_size, lr, seed, patience, max_steps, val_fraction)
    epochs, batch_size, lr, seed, patience, max_steps = checked
    say = _logger(log)
    device = check_device(device)
    recipe = _recipe(recipe, settings, dataset, images, seed)
    held_fraction = val_fraction if check_val_rows(val_rows, val_data, val_fraction, recipe) else None
    split = 0.0 if held_fraction else val_fraction
    (images, labels), val = split_off_validation(images, labels, val_data, split, seed, device)
    check_compiled_batches(compile, batch_size, _rows_per_epoch(recipe, len(labels), held_fraction))
    trains_source = recipe.needs_source and source_model is None
    budget = dict(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed, amp=amp)
    budget.update(compile=compile, max_steps=max_steps, progress=progress, log=say, device=device)
    given_val = val if val_data is not None else None
    run = _resumable(
        checkpoint, recipe, model, (images, labels), given_val, source_model, budget, held_fraction and val_rows
    )
    resumed = run.load()  # another run's state refused now, before any work
    if resumed is not None:
        check_device_kind(resumed, device, run.name)
        if trains_source and "trained_source" in resumed:
            source_model = copy.deepcopy(model)  # the source that run trained, not another
            source_model.load_state_dict(resumed["trained_source"])
    model.to(device)
    for name, given in (("data", data), ("val_data", val_data)):
        if given is not None:
            recipe.check_classes(check_classes(model, given, name, device))
    torch.manual_seed(seed)  # after the last check: a refused call leaves torch's generator alone
    started = time.perf_counter()
    images, labels, rows, val, source_model = _training_rows(
        recipe, model, source_model, images, labels, val, held_fraction, budget
    )
    epoch_runner = _epochs(
        model, recipe, images, labels, rows, batch_size, lr, seed, device, amp, compile, max_steps, val, progress, say
    )
    result = TrainResult(model, recipe.name, recipe.settings_dict())
    stopping = EarlyStopping(patience)
    if trains_source:
        _keep_trained_source(run, source_model, resumed is None, epoch_runner, result, stopping)
    with kept_modes(model):  # each epoch trains in train mode; the user's modes come back, as after a failure
        try:
            run_epochs(run, resumed, epochs, epoch_runner, result, stopping)
        finally:
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.grad = None  # the last step's gradients: no use to the caller, and memory
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.seconds = time.perf_counter() - started
    return result


def _check_modules(model: Any, source_model: Any) -> None:
    """TypeError unless `model` is an nn.Module and `source_model` one or None; ValueError where either has
    parameters of another floating dtype than float32, which the batches are, or made in inference mode."""
    for name, module in (("model", model), ("source_model", source_model)):
        if not isinstance(module, nn.Module) and (name == "model" or module is not None):
            raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        if module is None:
            continue
        check_no_inference_tensors(module, name)
        other = sorted(
            {str(p.dtype) for p in module.parameters() if p.is_floating_point() and p.dtype != torch.float32}
        )
        if other:
            raise ValueError(
                f"{name}: its parameters are {', '.join(other)}; train() trains float32 models on float32 batches "
                "(amp= for mixed precision): call .float() on it first"
            )


def _keep_trained_source(
    run: Resumable,
    source_model: nn.Module,
    first: bool,
    epoch_runner: Epochs,
    result: TrainResult,
    stopping: EarlyStopping,
) -> None:
    """Keeps the source model :func:`train` trained with every state `run` saves, so that a resumed run makes its
    examples with the same source; where the run is `first` (not resumed), saves at once the state before epoch 1,
    so that an interruption in epoch 1 keeps the source too."""
    if run.checkpoint is None:
        return
    run.kept = {"trained_source": {k: v.detach().cpu() for k, v in source_model.state_dict().items()}}
    if first:
        run.save(epoch_state(0, epoch_runner, result, stopping))


def _recipe(recipe: str | Recipe, settings: Any, dataset: str | None, images: torch.Tensor, seed: int) -> Recipe:
    """:func:`train`'s recipe: made from its name with `settings` for `dataset` (None: inferred from `images`), or
    the Recipe object given (ValueError when `settings` or `dataset` come with it, which it would ignore) with its
    random streams reseeded from `seed`."""
    if not isinstance(recipe, Recipe):
        return make_recipe(recipe, settings, dataset=dataset or infer_dataset(images), seed=seed)
    given = [name for name, value in (("settings", settings), ("dataset", dataset)) if value is not None]
    if given:
        raise ValueError(
            f"{' and '.join(given)} apply to a recipe named by a string; recipe is a {type(recipe).__name__} "
            f"object with its own settings ({recipe.settings}): pass {' and '.join(given)}=None, or the recipe's name"
        )
    recipe.reseed(seed)
    return recipe


def _rows_per_epoch(recipe: Recipe, images: int, held_fraction: float | None) -> int:
    """The training rows an epoch batches, of `images` training images (:func:`training_rows`), less the rows
    val_rows="last" holds out (`held_fraction`)."""
    total = training_rows(recipe, images)
    return total - held_out_rows(total, held_fraction) if held_fraction else total


def _training_rows(
    recipe: Recipe,
    model: nn.Module,
    source_model: nn.Module | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    val: Data | None,
    held_fraction: float | None,
    budget: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor, int | None, Data | None, nn.Module | None]:
    """(images, labels, the rows the loader batches (None: all), the validation pairs, the source model: None but
    for an offline recipe) of the training set as `recipe` lays it out: the images, doubled by an offline recipe's
    examples of `source_model` (trained first where None); with a `held_fraction`, its last rows (counted after
    GDA's fixed copies) held out to validate on (val_rows="last"). `budget`: :func:`train`'s keyword arguments, for
    training a missing source model."""
    say, device = budget["log"], budget["device"]
    if recipe.needs_source:
        source_val = dict(val_fraction=held_fraction, val_rows="last") if held_fraction else dict(val_data=val)
        images, labels, source_model = _offline_training_set(
            recipe, model, source_model, images, labels, source_val, budget
        )
        say(f"{recipe.name} ({recipe.settings.mode}): training set doubled to {len(labels)} images")
    if not held_fraction:
        return images, labels, None, val, source_model
    images, labels = images.to(device), labels.to(device)  # once, for the held-out rows and the loader alike
    rows, val = hold_out_last_rows(images, labels, recipe.expansion(), held_fraction)
    say(f"{recipe.name}: the last {len(val[1])} rows of the training set validate (val_rows='last')")
    return images, labels, rows, val, source_model


def _resumable(
    checkpoint: EpochCheckpoint | None,
    recipe: Recipe,
    model: nn.Module,
    data: Data,
    val: Data | None,
    source_model: nn.Module | None,
    budget: dict[str, Any],
    val_rows: str | None,
) -> Resumable:
    """`checkpoint` with the signature of the run :func:`train` is about to make (its arguments of the same names;
    `data`: the training pairs, `val`: the validation pairs given as val_data, `val_rows`: where not "images" and
    holding rows out), made before any work so that another run's state is refused at once."""
    images, labels = data
    samples = training_set_size(recipe, len(labels))
    keys = ("lr", "seed", "patience")
    signature = {**{k: budget[k] for k in keys}, "samples": samples, "max_steps": budget["max_steps"]}
    if checkpoint is not None:
        signature |= inputs_signature(images, labels, val, source_model if recipe.needs_source else None)
        if recipe.needs_source and source_model is None:
            signature["source_model"] = "trained first"
    if val_rows:  # (the signatures of checkpoints written before val_rows existed stay valid)
        signature["val_rows"] = val_rows
    signature |= model_signature(model, budget["amp"], budget["compile"])
    run = {"recipe": recipe.name, "settings": recipe.settings_dict()}
    if type(recipe) is not RECIPES.get(recipe.name):  # a recipe class of one's own: its code, not its name, trains
        run["recipe_class"] = f"{type(recipe).__module__}.{type(recipe).__qualname__}"
    return Resumable(checkpoint, {**run, "epochs": budget["epochs"], "batch_size": budget["batch_size"]}, signature)
