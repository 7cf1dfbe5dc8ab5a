"""Resuming a training run of :func:`nemesis_fast.train` after any epoch: the state an epoch leaves behind, where
it is kept (:class:`FileCheckpoint`, or any object with load() and save(state)), and how it is put back."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from ._amp import amp_name
from ._checks import shortened
from ._io import DamagedFileError, check_output_file, torch_load_checked, torch_save_atomic
from .models import architecture_of
from .nn import BoundedReLU

# Signature keys that checkpoints written before they existed lack: such a checkpoint is not refused for them.
_ADDED_KEYS = ("data", "architecture", "amp", "compile", "val_data", "source_model")


def inputs_signature(
    images: torch.Tensor,
    labels: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    source_model: nn.Module | None,
) -> dict[str, str]:
    """The signature entries of what a run trains on: the training set's fingerprint, and those of the validation
    set `val` (where given as val_data; None otherwise) and of the weights of the source model an offline recipe
    makes its examples with (None where the recipe takes none). Entries absent from a checkpoint written before they
    were recorded do not refuse it (_ADDED_KEYS)."""
    entries = {"data": data_fingerprint(images, labels)}
    if val is not None:
        entries["val_data"] = data_fingerprint(*val)
    if source_model is not None:
        entries["source_model"] = weights_fingerprint(source_model)
    return entries


def model_signature(model: nn.Module, amp: bool | str, compile: bool) -> dict[str, Any]:
    """The signature entries of the network trained and of how its forward passes run (compile drops each epoch's
    last, smaller batch). A checkpoint written before they were recorded lacks them and is not refused for them
    (_ADDED_KEYS)."""
    return {"architecture": architecture_signature(model), "amp": amp_name(amp) or None, "compile": compile}


class EpochCheckpoint(Protocol):
    """Where :func:`train` keeps its state between epochs: load() returns the last state saved (or None)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


class FileCheckpoint:
    """The training state in one file, replaced atomically after every epoch; `name` is what errors call it (the
    argument or option that gave the path)."""

    def __init__(self, path: str | os.PathLike, name: str = "checkpoint") -> None:
        self.name = name
        self.path = check_output_file(path, name)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = torch_load_checked(self.path)
        except DamagedFileError as error:
            raise ValueError(f"{self.name}: {error}; pass another path (this file is left as it is)") from error
        except Exception as error:  # torch raises pickle's, zipfile's and its own errors for a file it cannot read
            raise ValueError(
                f"{self.name}: {str(self.path)!r} is not a training checkpoint ({type(error).__name__}); pass another "
                "path (this file is left as it is)"
            ) from error
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError(f"{self.name}: {str(self.path)!r} is not a training checkpoint of nemesis_fast.train")
        return state

    def save(self, state: dict[str, Any]) -> None:
        torch_save_atomic(self.path, state)


def as_checkpoint(checkpoint: Any) -> EpochCheckpoint | None:
    """:func:`train`'s `checkpoint`: a path as a :class:`FileCheckpoint` (checked before any work), None, or an
    object with load() and save(state) (TypeError otherwise)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        return FileCheckpoint(checkpoint)
    if checkpoint is not None and not all(callable(getattr(checkpoint, m, None)) for m in ("load", "save")):
        raise TypeError(f"checkpoint must be a path or have load() and save(state), got {checkpoint!r}")
    return checkpoint


class Resumable:
    """A checkpoint (or none) with the signature of the run it belongs to."""

    def __init__(self, checkpoint: Any, *parts: dict[str, Any]) -> None:
        self.checkpoint = as_checkpoint(checkpoint)
        self.name = getattr(checkpoint, "name", "checkpoint")  # what errors call it
        self.signature = {k: v for part in parts for k, v in part.items()}
        self.kept: dict[str, Any] = {}  # entries saved with every state, beside the signature

    def load(self) -> dict[str, Any] | None:
        state = self.checkpoint.load() if self.checkpoint is not None else None
        if state is None:
            return None
        stored = state.get("signature")
        mine = self.signature
        if isinstance(stored, dict):
            mine = {k: v for k, v in mine.items() if k in stored or k not in _ADDED_KEYS}
        if stored != mine:
            raise ValueError(
                f"{self.name}: its state belongs to another training run ({_differences(stored, mine)}); remove it "
                "or pass another checkpoint"
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        if self.checkpoint is not None:
            self.checkpoint.save({**state, **self.kept, "signature": self.signature})


def _differences(stored: Any, mine: dict[str, Any]) -> str:
    """What tells a stored signature from this run's: the entries whose values differ (a nested entry by its
    path, such as architecture.brelu_t.1), or that it is none."""
    if not isinstance(stored, dict):
        return f"its signature is {shortened(stored, 160)}"
    differ = list(_differing(stored, mine, ""))
    shown = "; ".join(f"{path} {shortened(a, 60)} there, {shortened(b, 60)} here" for path, a, b in differ[:4])
    return shown + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")


def _differing(stored: Any, mine: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(stored, dict) and isinstance(mine, dict):
        for key in sorted({*stored, *mine}, key=str):
            inner = f"{path}.{key}" if path else str(key)
            yield from _differing(stored.get(key, "<absent>"), mine.get(key, "<absent>"), inner)
    elif stored != mine:
        yield path, stored, mine


def architecture_signature(model: nn.Module) -> dict[str, Any]:
    """The architecture a state's weights belong to: the one the builders of :mod:`nemesis_fast.models` record
    (as checkpoints do; None for another model), the names and shapes of the model's parameters and buffers, and
    the thresholds of its bounded ReLUs (which a model changed in place after it was built, by replace_relu say,
    no longer has as recorded)."""
    shapes = {name: list(value.shape) for name, value in model.state_dict().items()}
    thresholds = {name: module.t for name, module in model.named_modules() if isinstance(module, BoundedReLU)}
    return {"built": architecture_of(model), "shapes": shapes, "brelu_t": thresholds}


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor, samples: int = 16) -> str:
    """A digest of a training set that tells two sets of the same size apart: every label, and the bytes of
    `samples` images spread evenly over it (exact on any device and thread count)."""
    digest = hashlib.sha256(str((tuple(images.shape), str(images.dtype))).encode())
    picked = torch.linspace(0, len(images) - 1, min(samples, len(images))).long().to(images.device)
    for values in (labels, images[picked]):
        digest.update(tensor_bytes(values))
    return digest.hexdigest()[:32]


def tensor_bytes(tensor: torch.Tensor):
    """`tensor`'s values as host bytes (a uint8 numpy array), in the memory order of its contiguous form: for
    hashing, any dtype (bfloat16 too) on any device."""
    return tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy()


def weights_fingerprint(model: nn.Module) -> str:
    """A digest of a model's parameters and buffers: their names, shapes, dtypes and every byte (exact on any
    device)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(str((name, tuple(value.shape), str(value.dtype))).encode())
        digest.update(tensor_bytes(value))
    return digest.hexdigest()[:32]


def _cpu(state: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    return None if state is None else {k: v.detach().cpu() for k, v in state.items()}


def training_state(
    epoch, model, optimizer, loader, recipe, result, best_accuracy, best_state, waited, device, scaler=None
) -> dict:
    """Everything an epoch leaves behind that the next one reads: weights, Adam's moments, the random streams
    (shuffling, dropout, per-batch noise offsets, the recipe's own generators), early stopping's bookkeeping, and
    amp="fp16"'s gradient scale (`scaler`, a torch.amp.GradScaler; None without)."""
    augment = loader.augment
    return {
        "epoch": epoch,
        "model": _cpu(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "best_accuracy": best_accuracy,
        "best_state": _cpu(best_state),
        "waited": waited,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "steps": result.steps,
        "loader_rng": loader.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "augment_offset": getattr(augment, "offset", None),
        "recipe_rng": recipe.rng_state(),
        "scaler": None if scaler is None else scaler.state_dict(),
    }


def restore_state(
    state, model, optimizer, loader, recipe, result, device, scaler=None, name="checkpoint"
) -> tuple[float, dict | None, int]:
    """Puts a saved state back (the gradient scale into `scaler` where both have one: a state written before it was
    saved leaves `scaler` as made); returns (best_accuracy, best_state, waited). The state's kind of device is
    checked when it is loaded (:func:`check_device_kind`); ValueError, naming the checkpoint `name`, for weights
    that do not fit the model."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"{name}: its weights do not fit the model being trained: {error}") from error
    optimizer.load_state_dict(state["optimizer"])
    loader.generator.set_state(state["loader_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    if state["augment_offset"] is not None:
        loader.augment.offset = state["augment_offset"]
    recipe.set_rng_state(state["recipe_rng"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    result.history, result.steps, result.best_epoch = list(state["history"]), state["steps"], state["best_epoch"]
    best_state = state["best_state"]
    best_state = None if best_state is None else {k: v.to(device) for k, v in best_state.items()}
    return state["best_accuracy"], best_state, state["waited"]


def check_device_kind(state: dict[str, Any], device: torch.device, name: str) -> None:
    """ValueError where `state` was written on a CUDA device and `device` is not one, or the reverse (told apart by
    its CUDA generator state, which training_state saves on CUDA only): the shuffling generator lives on the
    device, and a CPU generator's state does not fit a CUDA one's (nor would the run go on as it would have)."""
    names = {"cuda": "a CUDA device", "cpu": "the CPU"}
    written = "cuda" if state["cuda_rng"] is not None else "cpu"
    if written != ("cuda" if device.type == "cuda" else "cpu"):
        raise ValueError(
            f"{name}: its state was written by a run on {names[written]}; this one is on {device}, whose random "
            f"streams differ: resume it on {names[written]} (device=...), or remove the checkpoint"
        )
