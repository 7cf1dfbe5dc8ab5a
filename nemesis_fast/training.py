"""Training with the paper's defenses: :func:`train`, :func:`evaluate_accuracy` and checkpoints (the paper's
seven models: :mod:`nemesis_fast.paper_models`).

The training set lives on the device (:class:`~nemesis_fast.data.DeviceLoader`); GDA's noisy copies are made
per batch on the device; the loop synchronises with the GPU once per epoch (validation), not per step.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_device, check_int, check_number, check_positive
from ._io import torch_save_atomic
from .data.loader import DeviceLoader, check_images_labels, split_validation, to_float
from .defenses.adversarial_training import offline_examples
from .defenses.recipes import Recipe, make_recipe
from .models import architecture_of, build_model
from .resume import EpochCheckpoint, Resumable, restore_state, training_state

Data = tuple[torch.Tensor, torch.Tensor]
Log = Callable[[str], None]
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """What :func:`train` returns. `history` holds one dict per epoch: epoch, loss (mean training loss),
    val_accuracy (None without a validation set), seconds, images (training images seen, augmentation
    included). `best_epoch` is the epoch whose weights the model holds at the end."""

    model: nn.Module
    recipe: str
    settings: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    val_accuracy: float | None = None
    seconds: float = 0.0
    steps: int = 0
    stopped_early: bool = False


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _logger(log: Log | bool) -> Log:
    if callable(log):
        return log
    return _stderr if log else (lambda message: None)


def _check_data(data: Any, name: str) -> Data:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (images, labels) of tensors, got {type(data).__name__}")
    check_images_labels(*data)
    return data[0], data[1]


def infer_dataset(images: torch.Tensor) -> str:
    """ "cifar10" for 3-channel images, else "mnist": which defaults of the recipes apply."""
    return "cifar10" if images.dim() == 4 and images.shape[1] == 3 else "mnist"


def _autocast(device: torch.device, amp: bool | str) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """(a context factory for the forward passes, whether fp16 gradient scaling is needed)."""
    if amp is False or amp is None:
        return contextlib.nullcontext, False
    name = "bf16" if amp is True else check_choice(amp, "amp", (True, False, *AMP_DTYPES))
    dtype = AMP_DTYPES[name]
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype == torch.float16


def _progress(enabled: bool | None) -> Callable[[Iterable, str, int], Iterable]:
    """A tqdm bar on a terminal (when tqdm is installed), else the iterable unchanged."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            enabled = False
    if not enabled:
        return lambda iterable, desc, total: iterable
    return lambda iterable, desc, total: tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


def evaluate_accuracy(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
    amp: bool | str = False,
) -> float:
    """The fraction of `images` (uint8 or float, (N, C, H, W)) that `model` classifies as `labels`, in eval
    mode (restored afterwards); nan for an empty set. `device` defaults to the model's."""
    check_images_labels(images, labels)
    if device is None and isinstance(model, nn.Module):
        device = next((p.device for p in model.parameters()), None)
    device = check_device(device)
    if len(labels) == 0:
        return float("nan")
    loader = DeviceLoader(images, labels, batch_size, shuffle=False, device=device)
    autocast, _ = _autocast(device, amp)
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        if isinstance(model, nn.Module):
            model.eval()
        with torch.no_grad(), autocast():
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum()
    finally:
        for module, training in modes:
            module.training = training
    return correct.item() / len(labels)


def _offline_training_set(
    recipe: Recipe, source: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> Data:
    """The training set of an offline recipe: the images plus the recipe's examples of `source`, as float32."""
    extra = offline_examples(lambda x, y: recipe.offline_examples(source, x, y), images, labels, device=device)
    clean = to_float(images.to(device))
    return torch.cat([clean, extra]), torch.cat([labels.to(device), labels.to(device)])


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
        data: (images, labels): uint8 (N, C, H, W) pixels (or float images in [0, 1]) and int64 labels (N,).
        recipe: "standard", "gda", "label_smoothing", "fgsm_adversarial", "vat" (see
            :mod:`nemesis_fast.defenses.recipes`), or a Recipe object.
        settings: the recipe's settings: None (the paper's defaults for `dataset`), a dict of overrides, or
            the settings dataclass.
        dataset: "mnist" or "cifar10", for the recipe defaults; None infers it from the channels (3: CIFAR-10).
        epochs: passes over the training set (the paper: 20). batch_size: images per step before augmentation
            (128). lr: Adam's learning rate (1e-3).
        val_data: (images, labels) to validate on after every epoch; None splits `val_fraction` of `data` off
            (with `seed`); with val_fraction=0 and no val_data there is no validation.
        patience: stop after this many epochs without a better validation accuracy; None never stops early.
            With a validation set the model ends with the weights of its best epoch.
        seed: seeds torch's global generator (dropout), the shuffling, GDA's noise and VAT's directions.
        device: default: the GPU when one is visible. The model is moved there.
        amp: False, True ("bf16") or "fp16" (with gradient scaling): autocast for the forward passes.
        compile: run the forward passes through torch.compile (each epoch then drops its last, smaller batch).
        source_model: the model trained beforehand that offline recipes make their examples with; None trains
            one with the "standard" recipe and these arguments first.
        max_steps: stop after this many optimizer steps (for quick checks).
        checkpoint: a file path (or an object with load() and save(state)) where the whole training state is
            written after every epoch; when it holds a state, training resumes after its epoch and ends with
            the weights an uninterrupted run would have. A state of another run (recipe, settings, budget,
            seed, data size) raises ValueError.
        progress: a tqdm bar per epoch; None: when stderr is a terminal and tqdm is installed.
        log: True prints one line per epoch to stderr, False nothing, or a callable taking each line.
    """
    images, labels = _check_data(data, "data")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = check_positive(lr, "lr")
    seed = check_int(seed, "seed", low=0)
    if patience is not None:
        check_int(patience, "patience", low=1)
    if max_steps is not None:
        check_int(max_steps, "max_steps", low=1)
    check_number(val_fraction, "val_fraction", low=0.0, high=1.0, high_inclusive=False)
    say = _logger(log)
    device = check_device(device)
    dataset = dataset or infer_dataset(images)
    recipe = recipe if isinstance(recipe, Recipe) else make_recipe(recipe, settings, dataset=dataset, seed=seed)
    if val_data is not None:
        val_images, val_labels = _check_data(val_data, "val_data")
    elif val_fraction > 0:
        (images, labels), (val_images, val_labels) = split_validation(images, labels, val_fraction, seed=seed)
    else:
        val_images = val_labels = None
    if val_images is not None:
        val_images, val_labels = val_images.to(device), val_labels.to(device)  # once, not every epoch
    torch.manual_seed(seed)
    model.to(device)
    started = time.perf_counter()

    if recipe.needs_source:
        if source_model is None:
            say(f"{recipe.name} ({recipe.settings.mode}): training a standard source model first")
            source_model = copy.deepcopy(model)
            train(
                source_model,
                (images, labels),
                "standard",
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                val_data=(val_images, val_labels) if val_images is not None else None,
                val_fraction=0.0,
                patience=patience,
                seed=seed,
                device=device,
                amp=amp,
                compile=compile,
                max_steps=max_steps,
                progress=progress,
                log=say,
            )
        source_model.to(device)
        images, labels = _offline_training_set(recipe, source_model, images, labels, device)
        say(f"{recipe.name} ({recipe.settings.mode}): training set doubled to {len(labels)} images")

    # With compile, a last smaller batch would compile a second graph: drop it (a different one every epoch).
    augment = recipe.augment(device)
    loader = DeviceLoader(
        images,
        labels,
        batch_size,
        seed=seed,
        device=device,
        augment=augment,
        expand=recipe.expansion(),
        drop_last=compile,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda" or None)
    forward = torch.compile(model) if compile else model
    autocast, scaled = _autocast(device, amp)
    scaler = torch.amp.GradScaler(device.type) if scaled else None
    bar = _progress(progress)
    result = TrainResult(model, recipe.name, recipe.settings_dict())
    best_accuracy, best_state, waited = -1.0, None, 0
    run = Resumable(
        checkpoint,
        {"recipe": recipe.name, "settings": recipe.settings_dict(), "epochs": epochs, "batch_size": batch_size},
        {"lr": lr, "seed": seed, "patience": patience, "samples": len(labels), "max_steps": max_steps},
    )
    first_epoch = 1
    resumed = run.load()
    if resumed is not None:
        best_accuracy, best_state, waited = restore_state(resumed, model, optimizer, loader, recipe, result, device)
        first_epoch = resumed["epoch"] + 1
        say(f"{recipe.name}: resuming after epoch {resumed['epoch']} from the checkpoint")

    for epoch in range(first_epoch, epochs + 1):
        model.train()
        epoch_started = time.perf_counter()
        total_loss = torch.zeros((), device=device)
        steps = seen = 0
        batches = bar(loader, f"{recipe.name} epoch {epoch}/{epochs}", len(loader))
        for x, y in batches:
            with autocast():
                loss = recipe.loss(forward, x, y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            total_loss += loss.detach()
            steps += 1
            seen += len(y)
            result.steps += 1
            if hasattr(batches, "set_postfix") and steps % 50 == 0:
                batches.set_postfix(loss=f"{total_loss.item() / steps:.4f}")
            if max_steps is not None and result.steps >= max_steps:
                break
        record: dict[str, Any] = {"epoch": epoch, "loss": total_loss.item() / max(steps, 1), "images": seen}
        record["val_accuracy"] = (
            evaluate_accuracy(forward, val_images, val_labels, device=device, amp=amp)
            if val_images is not None and len(val_labels)
            else None
        )
        record["seconds"] = time.perf_counter() - epoch_started
        result.history.append(record)
        val_text = f" val_acc {record['val_accuracy']:.4f}" if record["val_accuracy"] is not None else ""
        say(f"{recipe.name} epoch {epoch}/{epochs} loss {record['loss']:.4f}{val_text} {record['seconds']:.1f}s")
        if record["val_accuracy"] is None:
            result.best_epoch = epoch
        elif record["val_accuracy"] > best_accuracy:
            best_accuracy, result.best_epoch, waited = record["val_accuracy"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if patience is not None and waited >= patience:
                result.stopped_early = True
                say(f"{recipe.name}: no better validation accuracy for {patience} epochs; stopping")
                break
        if max_steps is not None and result.steps >= max_steps:
            break
        run.save(
            training_state(epoch, model, optimizer, loader, recipe, result, best_accuracy, best_state, waited, device)
        )

    if best_state is not None:
        model.load_state_dict(best_state)
        result.val_accuracy = best_accuracy
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.seconds = time.perf_counter() - started
    return result


# -------------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    recipe: str,
    settings: dict[str, Any] | None = None,
    architecture: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Writes {"state_dict", "recipe", "settings", "architecture": {"name", "kwargs"}, "metrics", "noise_sigma",
    "nemesis_fast_version"} to `path` (atomically; tensors moved to the CPU). `architecture` defaults to the
    one recorded by the model builders of :mod:`nemesis_fast.models` (None for other models). "noise_sigma" is
    the standard deviation of the Gaussian noise the model was trained on (the gda recipe's sigma; None for the
    other recipes): the sigma to certify it at by randomized smoothing (:mod:`nemesis_fast.certify`)."""
    from . import __version__

    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be a str, got {type(recipe).__name__}")
    path = Path(path)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "recipe": recipe,
        "settings": dict(settings or {}),
        "architecture": architecture if architecture is not None else architecture_of(model),
        "metrics": dict(metrics or {}),
        "noise_sigma": training_noise_sigma(recipe, settings),
        "nemesis_fast_version": __version__,
    }
    torch_save_atomic(path, payload)
    return path


def training_noise_sigma(recipe: str, settings: dict[str, Any] | None) -> float | None:
    """The standard deviation of the Gaussian noise a recipe trains on: the gda recipe's sigma (its default
    where `settings` leave it out), None for the recipes without noise."""
    if recipe != "gda":
        return None
    sigma = (settings or {}).get("sigma")
    if sigma is None:
        from .defenses.recipes import GDASettings

        sigma = GDASettings().sigma
    return float(sigma)


def checkpoint_noise_sigma(meta: dict[str, Any]) -> float | None:
    """The training noise's sigma recorded in a checkpoint's entries (as :func:`load_checkpoint` returns them);
    for checkpoints written before it was recorded, read from a gda recipe's settings. None: no noise."""
    if meta.get("noise_sigma") is not None:
        return float(meta["noise_sigma"])
    return training_noise_sigma(meta.get("recipe", ""), meta.get("settings"))


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [f"{k}={found.get(k, '<absent>')!r} (asked {v!r})" for k, v in wanted.items() if found.get(k) != v]


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    model_name: str | None = None,
    architecture_kwargs: dict[str, Any] | None = None,
    recipe: str | None = None,
    settings: dict[str, Any] | None = None,
    map_location: torch.device | str = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Loads a checkpoint of :func:`save_checkpoint` with `torch.load(weights_only=True)` (no code runs).

    Refuses (ValueError naming what differs) a checkpoint whose recipe differs from `recipe`, whose settings
    differ from the entries of `settings`, whose architecture name differs from `model_name`, whose
    architecture kwargs differ from the entries of `architecture_kwargs`, or, when `model` is given and
    records its architecture, whose architecture differs from the model's. Without `model` the model is rebuilt
    from the recorded architecture. Returns (model with the weights loaded, the checkpoint's other entries).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # a foreign or damaged file: whatever torch.load raises
        raise ValueError(f"{path}: not a loadable checkpoint ({type(error).__name__}: {error})") from error
    required = ("state_dict", "recipe", "settings", "architecture", "nemesis_fast_version")
    if not isinstance(payload, dict) or any(key not in payload for key in required):
        raise ValueError(f"{path}: not a nemesis_fast checkpoint (needs the entries {', '.join(required)})")
    if recipe is not None and payload["recipe"] != recipe:
        raise ValueError(f"{path}: trained with recipe {payload['recipe']!r}, not the {recipe!r} asked for")
    if settings:
        differ = _differences(payload["settings"], settings)
        if differ:
            raise ValueError(f"{path}: recipe settings differ from those asked: {'; '.join(differ)}")
    arch = payload["architecture"]
    if model_name is not None and (arch is None or arch["name"] != model_name):
        found = arch["name"] if arch else "an unrecorded architecture"
        raise ValueError(f"{path}: holds a {found!r} model, not the {model_name!r} asked for")
    if architecture_kwargs:
        differ = _differences(arch["kwargs"] if arch else {}, architecture_kwargs)
        if differ:
            raise ValueError(f"{path}: architecture differs from the one asked: {'; '.join(differ)}")
    if model is None:
        if arch is None:
            raise ValueError(f"{path}: records no architecture; pass the model to load the weights into")
        model = build_model(arch["name"], **arch["kwargs"])
    else:
        mine = architecture_of(model)
        if mine is not None and arch is not None and mine != arch:
            if mine["name"] != arch["name"]:
                raise ValueError(f"{path}: holds a {arch['name']!r} model, but the model given is {mine['name']!r}")
            differ = _differences(arch["kwargs"], mine["kwargs"])
            raise ValueError(f"{path}: architecture differs from the model given: {'; '.join(differ)}")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit the model: {error}") from error
    return model, {k: v for k, v in payload.items() if k != "state_dict"}
