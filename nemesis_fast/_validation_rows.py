"""The rows :func:`nemesis_fast.train` validates on: `val_data` as given, a random fraction of the images split off
(val_rows="images"), or the last rows of the training set as the recipe lays it out (val_rows="last", as Keras'
`validation_split`)."""

from __future__ import annotations

import torch

from ._epochs import Data
from ._training_checks import check_data, check_image_shapes
from .data.loader import Expansion, expanded_rows, split_validation
from .defenses.recipes import Recipe

BLOCK_ROWS = 1024  # rows of the held-out set made at a time


def training_set_size(recipe: Recipe, images: int) -> int:
    """The images of the training set `recipe` makes of `images` training images: doubled by an offline recipe's
    examples."""
    return images * (2 if recipe.needs_source else 1)


def training_rows(recipe: Recipe, images: int) -> int:
    """The rows of the training set `recipe` lays out from `images` training images: :func:`training_set_size`'s
    images, times a fixed expansion's size (GDA's fixed set)."""
    expansion = recipe.expansion()
    return training_set_size(recipe, images) * (1 if expansion is None else expansion.size)


def held_out_rows(total: int, fraction: float) -> int:
    """The last rows of `total` that val_rows="last" holds out: as Keras' `validation_split`, total - int(total *
    (1 - fraction)) (the paper's 660,000 and 120,000 rows at 0.1: 66,000 and 12,000)."""
    return total - int(total * (1.0 - fraction))


def hold_out_last_rows(
    images: torch.Tensor, labels: torch.Tensor, expand: Expansion | None, fraction: float
) -> tuple[int, Data]:
    """(the rows left to train on, the validation pairs, on the images' device): the last `fraction` of the
    N * expand.size rows of the training set, numbered copy by copy as :class:`~nemesis_fast.data.DeviceLoader`
    numbers them."""
    total = len(labels) * (1 if expand is None else expand.size)
    held = held_out_rows(total, fraction)
    if not 0 < held < total:
        raise ValueError(f"val_fraction {fraction} of {total} training rows leaves no rows to train or validate on")
    first = total - held
    x_out = y_out = None
    for start in range(first, total, BLOCK_ROWS):  # blocks whose noise temporaries stay small, written in place
        x, y = expanded_rows(
            images, labels, torch.arange(start, min(start + BLOCK_ROWS, total), device=images.device), expand
        )
        if x_out is None:
            x_out, y_out = x.new_empty((held, *x.shape[1:])), y.new_empty((held, *y.shape[1:]))
        x_out[start - first : start - first + len(x)] = x
        y_out[start - first : start - first + len(y)] = y
    return first, (x_out, y_out)


def split_off_validation(
    images: torch.Tensor,
    labels: torch.Tensor,
    val_data: Data | None,
    val_fraction: float,
    seed: int,
    device: torch.device,
) -> tuple[Data, Data | None]:
    """(the training pairs, the validation pairs on `device` or None): `val_data` when given, else
    `val_fraction` of the training pairs split off with `seed`, else none."""
    if val_data is not None:
        val_images, val_labels = check_data(val_data, "val_data")
        check_image_shapes(images, val_images, "val_data", "data", "the model validates on images of its input shape")
    elif val_fraction > 0:
        (images, labels), (val_images, val_labels) = split_validation(images, labels, val_fraction, seed=seed)
        if len(labels) == 0 or len(val_labels) == 0:
            raise ValueError(
                f"val_fraction={val_fraction} of {len(labels) + len(val_labels)} images leaves "
                f"{len(labels)} to train on and {len(val_labels)} to validate on; give more data or another fraction"
            )
    else:
        return (images, labels), None
    return (images, labels), (val_images.to(device), val_labels.to(device))  # moved once, not every epoch
