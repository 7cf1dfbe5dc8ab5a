"""The argument checks of :func:`nemesis_fast.training.train` (and of the paper's models), each naming the bad
argument before any work starts."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_class_logits, check_int, check_number, check_positive
from ._modes import eval_mode
from .data.loader import check_images_labels, to_float
from .defenses.recipes import Recipe

Data = tuple[torch.Tensor, torch.Tensor]  # (images (N, C, H, W), labels (N,) int64)


def check_data(data: Any, name: str) -> Data:
    """`data` as (images, labels): a pair of tensors, at least one image, finite float images in [0, 1] (or uint8
    pixels) and labels >= 0, checked with one device synchronisation; labels of another integer dtype than int64
    (int32 from numpy, uint8...) come back as int64, and tensors made in inference mode as copies (which autograd
    can save for a backward pass)."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (images, labels) of tensors, got {type(data).__name__}")
    labels = check_images_labels(*data)
    images, labels = (t.clone() if t.is_inference() else t for t in (data[0], labels))
    if len(labels) == 0:
        raise ValueError(f"{name} must hold at least one image, got none")
    check_values(images, labels, name)
    return images, labels


def check_values(images: torch.Tensor, labels: torch.Tensor | None, name: str) -> None:
    """Checks (as :func:`check_data` does, less the pair and the count) that float `images` (N, ...) are finite and
    in [0, 1] (uint8 pixels pass) and that `labels` (N,) are >= 0 (None: not checked), with one device
    synchronisation; nothing to check in an empty set. ValueError naming `name`."""
    if len(images) == 0:
        return
    checks = [] if labels is None else [labels.min().double()]
    if images.is_floating_point():
        checks += [*torch.aminmax(images)]  # NaN propagates into both
    if not checks:
        return
    # On the images' device: the labels may lie elsewhere (images on a GPU, labels on the CPU: train() moves both).
    values = torch.stack([c.to(images.device, torch.float64) for c in checks]).tolist()  # one device synchronisation
    low, span = (None, values) if labels is None else (values[0], values[1:])
    if span and not (math.isfinite(span[0]) and math.isfinite(span[1])):
        raise ValueError(f"{name}: the images must be finite; they hold NaN or infinite values")
    if span and (span[0] < 0 or span[1] > 1):
        raise ValueError(
            f"{name}: float images must lie in [0, 1] (uint8 pixels are read as x / 255); they span "
            f"[{span[0]:g}, {span[1]:g}]"
        )
    if low is not None and low < 0:
        raise ValueError(f"{name}: the labels must be >= 0, got {low}")


def check_image_shapes(images: torch.Tensor, other: torch.Tensor, name: str, reference: str, why: str) -> None:
    """ValueError naming `name` when the images `other` are not of the shape (C, H, W) of `reference`'s `images`
    (`why`: what needs them alike)."""
    if other.shape[1:] != images.shape[1:]:
        raise ValueError(
            f"{name}'s images are {tuple(other.shape[1:])}, {reference}'s {tuple(images.shape[1:])}: {why}"
        )


def check_compiled_batches(compile: bool, batch_size: int, rows: int) -> None:
    """ValueError naming `batch_size` and `compile` when compile=True (which drops each epoch's last, smaller
    batch) would leave no batch of the `rows` training rows an epoch holds."""
    if compile and rows < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is more than the {rows} training rows of an epoch: with compile=True the "
            "last, smaller batch is dropped, so no step would run; pass a batch_size <= the rows or compile=False"
        )


def check_classes(model: nn.Module, data: Data, name: str, device: torch.device) -> int:
    """Checks that the labels of `data` are classes of `model`: below its number of logits, learnt from one
    forward pass of one image in eval mode (the model's modes are restored); returns that number."""
    images, labels = data
    with eval_mode(model), torch.no_grad():
        logits = model(to_float(images[:1]).to(device))
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must map (B, ...) images to (B, classes) logits; for one image got {shape}")
    check_class_logits(logits)
    classes, high = logits.shape[1], int(labels.max())
    if high >= classes:
        raise ValueError(f"{name}: the labels must be classes of the model's {classes} logits, got label {high}")
    return classes


def check_budget(
    epochs: Any, batch_size: Any, lr: Any, seed: Any, patience: Any, max_steps: Any, val_fraction: Any
) -> tuple[int, int, float, int, int | None, int | None]:
    """Checks :func:`train`'s budget arguments (naming the bad one); returns (epochs, batch_size, lr, seed,
    patience, max_steps), numpy integers among them as Python ints."""
    if patience is not None:
        patience = check_int(patience, "patience", low=1)
    if max_steps is not None:
        max_steps = check_int(max_steps, "max_steps", low=1)
    check_number(val_fraction, "val_fraction", low=0.0, high=1.0, high_inclusive=False)
    return (
        check_int(epochs, "epochs", low=1),
        check_int(batch_size, "batch_size", low=1),
        check_positive(lr, "lr"),
        check_int(seed, "seed", low=0, high=2**63 - 1),
        patience,
        max_steps,
    )


def check_val_rows(val_rows: Any, val_data: Data | None, val_fraction: float, recipe: Recipe) -> bool:
    """Checks :func:`train`'s `val_rows` against the other validation arguments; True for "last"."""
    check_choice(val_rows, "val_rows", ("images", "last"))
    if val_rows == "images":
        return False
    if val_data is not None:
        raise ValueError("val_rows='last' holds out the last rows of the training set; pass no val_data with it")
    if val_fraction == 0:
        raise ValueError("val_rows='last' needs a val_fraction > 0")
    if recipe.augments_batches:
        raise ValueError(
            f"val_rows='last' needs a fixed training set; recipe {recipe.name!r} draws fresh rows every batch "
            "(for GDA: fixed_set=True)"
        )
    return True
