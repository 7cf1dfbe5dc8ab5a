"""A loader that keeps a whole data set on the device, and the validation split.

MNIST (47 MB as uint8) and CIFAR-10 (154 MB) fit on any GPU many times over. Keeping them there as uint8 and
gathering each shuffled batch with one index_select removes the per-sample Python work and the host-to-device
copy of a torch DataLoader; the conversion to float happens per batch, on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import torch

from .._checks import (
    INTEGER_DTYPES,
    check_bool,
    check_device,
    check_float_dtype,
    check_int,
    check_number,
    check_tensor,
)

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Expansion(Protocol):
    """A fixed enlargement of a data set: `size` rows per sample (row 0 the sample itself), made on the fly by
    calling it with the float images of a batch, their row indices and their sample indices (int64 (B,))."""

    size: int

    def __call__(self, x: torch.Tensor, row: torch.Tensor, sample: torch.Tensor) -> torch.Tensor: ...


IMAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 pixels as floats in [0, 1] (x / 255, correctly rounded, the same bits on every device); float images
    cast to `dtype` (rounded to it where it is the narrower)."""
    check_tensor(images, "images", dtypes=IMAGE_DTYPES)
    check_float_dtype(dtype)
    if images.dtype != torch.uint8:
        return images.to(dtype)
    # A tensor divisor, not a Python number: on CUDA, torch divides by a number as a multiply by its reciprocal,
    # one ulp off x / 255 for about half of the byte values.
    return images.to(dtype).div_(torch.full((), 255.0, dtype=dtype, device=images.device))


def check_images_labels(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Images (N, ...) of uint8 or float and integer labels (N,), with the same N; returns the labels as int64 (a
    copy where they are of another integer dtype: int32 from numpy, uint8...)."""
    check_tensor(images, "images", dtypes=IMAGE_DTYPES, min_ndim=2)
    check_tensor(labels, "labels", dtypes=INTEGER_DTYPES, ndim=1)
    if len(images) != len(labels):
        raise ValueError(f"images and labels must have the same length, got {len(images)} and {len(labels)}")
    return labels.long()


class DeviceLoader:
    """Shuffled float batches of a data set that lives on `device`, optionally augmented per batch.

    Args:
        images: (N, C, H, W) uint8 (pixels 0..255, converted to [0, 1] per batch) or float images.
        labels: (N,) integer labels (read as int64).
        batch_size: images per batch before augmentation.
        shuffle: a new permutation every epoch (every `iter()`); else the stored order.
        seed: seeds the permutations, so that two loaders with one seed on one kind of device yield the same
            batches (CPU and CUDA permute differently); None draws one from torch's default generator (so
            torch.manual_seed governs it).
        device: where the data set is kept and batches are made; default the GPU when one is visible.
        augment: a callable (x, y) -> (x, y) applied to every float batch on the device, such as
            `nemesis_fast.defenses.GaussianAugmentation` (a batch of B then holds B * (copies + 1) images); the
            x and y it returns must have the same length.
        expand: a fixed enlargement of the data set, such as `nemesis_fast.defenses.FixedNoisyCopies`: the
            loader then shuffles and batches N * expand.size rows (row r of sample b is expand(x_b, r, b)).
        drop_last: skip the last, smaller batch.
        dtype: the float dtype of the batches.
        rows: batch only the first `rows` rows of the (expanded) set; None: all of them. With `expand`, rows are
            numbered copy by copy (row r is row r // N of sample r % N), so the last rows left out are the last
            copies, as Keras' `validation_split` leaves out the last rows of a stacked set.

    Iterating yields (x, y): x of shape (B, C, H, W) and `dtype` on `device`, y int64 of shape (B,).
    The data set is moved to `device` once, at construction (on its own device already, it is shared, not copied).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        device: torch.device | str | None = None,
        augment: Augment | None = None,
        expand: Expansion | None = None,
        drop_last: bool = False,
        dtype: torch.dtype = torch.float32,
        rows: int | None = None,
    ) -> None:
        labels = check_images_labels(images, labels)
        self.batch_size = check_int(batch_size, "batch_size", low=1)
        if seed is not None:
            seed = check_int(seed, "seed", low=0, high=2**64 - 1)
        check_bool(shuffle, "shuffle")
        check_bool(drop_last, "drop_last")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable (x, y) -> (x, y), got {type(augment).__name__}")
        check_float_dtype(dtype)
        device = check_device(device)
        if device.type == "meta":
            raise ValueError("device must be one that holds data (cpu, cuda, ...), got meta")
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.device = self.images.device  # (cuda as cuda:N, the GPU current now: batches are made there)
        if expand is not None:
            check_int(getattr(expand, "size", None), "expand.size", low=1)
            if not callable(expand):
                raise TypeError(f"expand must be callable (x, row, sample) -> x, got {type(expand).__name__}")
        self.shuffle, self.augment, self.drop_last, self.dtype = shuffle, augment, drop_last, dtype
        self.expand = expand
        full = len(labels) * (1 if expand is None else expand.size)
        self.rows = full if rows is None else check_int(rows, "rows", low=1, high=full)
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64).item())
        self.generator.manual_seed(seed)

    @property
    def num_samples(self) -> int:
        """Images in the data set (before augmentation; with `expand`, every row of the enlarged set), or the
        `rows` batched of them."""
        return self.rows

    def __len__(self) -> int:
        """Batches per epoch."""
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples
        order = torch.randperm(n, generator=self.generator, device=self.device) if self.shuffle else None
        for i in range(len(self)):
            start, stop = i * self.batch_size, min((i + 1) * self.batch_size, n)
            rows = torch.arange(start, stop, device=self.device) if order is None else order[start:stop]
            x, y = expanded_rows(self.images, self.labels, rows, self.expand, self.dtype)
            if self.augment is not None:
                x, y = _augmented(self.augment(x, y))
            yield x, y


def _augmented(out: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise TypeError(f"augment must return a pair (x, y) of tensors, got {type(out).__name__}")
    x, y = out
    if x.dim() == 0 or y.dim() == 0 or len(x) != len(y):
        raise ValueError(f"augment must return x and y of one length, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    return out


def expanded_rows(
    images: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    expand: Expansion | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `rows` (int64 (B,) on the images' device) of a data set of N images enlarged by `expand`, copy by
    copy: row r is row r // N of sample r % N (without `expand`, image r). Returns float (B, ...) images in
    `dtype` and their int64 labels (B,)."""
    sample = rows % len(labels)
    x, y = to_float(images.index_select(0, sample), dtype), labels.index_select(0, sample)
    if expand is not None:
        x = expand(x, rows // len(labels), sample)
    return x, y


def split_validation(
    images: torch.Tensor, labels: torch.Tensor, fraction: float = 0.1, *, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Splits off a random `fraction` of the images (rounded to a whole count) as a validation set.

    Returns ((train_images, train_labels), (val_images, val_labels)); the same seed gives the same split.
    fraction = 0 gives an empty validation set, and a fraction near 1 may leave no training images (which
    :func:`nemesis_fast.train` refuses).
    """
    labels = check_images_labels(images, labels)
    fraction = check_number(fraction, "fraction", low=0.0, high=1.0, high_inclusive=False)
    seed = check_int(seed, "seed", low=0, high=2**64 - 1)
    n_val = round(len(labels) * fraction)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(labels.device)
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])
