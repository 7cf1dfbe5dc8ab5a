"""Gaussian data augmentation (GDA, Zantedeschi et al. 2017): train on the originals plus noisy copies of every
image (the paper: sigma = 0.3, 10 copies), made batch by batch on the device by the fused op
:func:`nemesis_fast.gaussian_augment`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from .._backends.gaussian_augment import clip_bounds, resolve_seed
from .._checks import FLOAT_DTYPES, check_bool, check_device, check_int, check_number, check_tensor
from ..ops import gaussian_augment
from ..reference.gaussian_augment import pair_noise

_ArrayLike = torch.Tensor | np.ndarray


def _mix_seed(seed: int) -> int:
    """Another signed 64-bit seed derived from `seed` (splitmix64's finaliser), for the extra random subset."""
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return z - 2**64 if z >= 2**63 else z


class GaussianAugmentation:
    """Gaussian data augmentation as a callable (x, y) -> (x_augmented, y_augmented).

    Args:
        sigma: standard deviation of the noise (in the units of the float images; of x / 255 for uint8 images).
        copies: noisy copies of every sample (None: 10).
        clip: (low, high) bounds of every output value, the originals' included (values outside come back clamped:
            for data on another scale pass its range, or None), or None; default (0, 1).
        include_original: keep the originals, first.
        seed: None: every call draws a fresh seed from torch's default generator (torch.manual_seed governs it).
            An int: calls are reproducible; the n-th call continues where the previous one stopped (its offset
            is the number of samples seen so far), so augmenting a data set batch by batch gives the same noise
            as augmenting it at once, and later epochs get fresh noise. :meth:`reset` rewinds.
        ratio: ART's name: noisy samples per input sample, > 0. Its integer part is the number of noisy copies of
            every sample; a fractional part adds one more noisy copy of a random subset of each call, so that a
            batch of B gets int(ratio * B) noisy samples in all, as in ART (which draws them all at random, with
            replacement), another subset every call (with an int seed, reproducibly; batch by batch, the subsets are
            drawn per batch, not as over the whole set). Replaces `copies` (pass no copies: ValueError).
        augmentation: ART's name: False keeps only one noisy copy of every sample (ratio is then ignored, as in
            ART); True is the default behaviour.
        clip_values: ART's name for `clip` (leave clip at its default). Unlike ART, whose default is no clipping,
            `clip` defaults to (0, 1): pass clip=None for no clipping.
        out_dtype: dtype of the augmented images (default: the input's; float32 for uint8).
        backend: as for :func:`nemesis_fast.gaussian_augment`.

    Calling it with x of shape (B, ...) (a torch tensor, or a numpy array as in ART, returned as numpy) and
    optional labels y (leading dimension B) returns (x_aug, y_aug): x_aug holds the originals, then copy 0 of every
    sample, then copy 1, ..., then the extra subset; y_aug repeats y in the same order (None without y).
    """

    def __init__(
        self,
        sigma: float = 0.3,
        copies: int | None = None,
        clip: tuple[float | None, float | None] | None = (0.0, 1.0),
        include_original: bool = True,
        seed: int | None = None,
        *,
        ratio: float | None = None,
        augmentation: bool | None = None,
        clip_values: tuple[float, float] | None = None,
        out_dtype: torch.dtype | None = None,
        backend: str | None = None,
    ) -> None:
        self.sigma = check_number(sigma, "sigma", low=0.0)
        if copies is not None and ratio is not None:
            raise ValueError("pass either copies or ratio (ART's name), not both")
        copies = 10 if copies is None else check_int(copies, "copies", low=0)
        if ratio is not None:
            ratio = check_number(ratio, "ratio", low=0.0, low_inclusive=False)
            copies = int(math.floor(ratio))
        if augmentation is not None and not check_bool(augmentation, "augmentation"):
            copies, ratio, include_original = 1, None, False
        if clip_values is not None:
            if clip != (0.0, 1.0):
                raise ValueError("pass either clip or clip_values (ART's name), not both")
            clip = clip_values
        self.clip = clip_bounds(clip, "clip_values" if clip_values is not None else "clip")
        self.copies, self.ratio = copies, ratio
        self.include_original = check_bool(include_original, "include_original")
        self.seed = None if seed is None else resolve_seed(seed)
        self.out_dtype, self.backend = out_dtype, backend
        self.offset = 0

    def reset(self) -> None:
        """Rewind a seeded augmentation to its first call."""
        self.offset = 0

    def __call__(self, x: _ArrayLike, y: _ArrayLike | None = None) -> tuple[Any, Any]:
        """(x_aug, y_aug) of images x (B, ...) and labels y (B, ...) or None, laid out as the class says; numpy
        arrays in give numpy arrays out."""
        as_numpy = isinstance(x, np.ndarray)
        x_t = torch.from_numpy(np.ascontiguousarray(x)) if as_numpy else x
        y_t = torch.from_numpy(np.asarray(y)) if isinstance(y, np.ndarray) else y
        if not isinstance(x_t, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor or a numpy array, got {type(x).__name__}")
        if y_t is not None:
            if not isinstance(y_t, torch.Tensor):
                raise TypeError(f"y must be a torch.Tensor, a numpy array or None, got {type(y).__name__}")
            if y_t.dim() == 0 or x_t.dim() == 0 or y_t.shape[0] != x_t.shape[0]:
                raise ValueError(
                    f"x and y must have the same length, got shapes {tuple(x_t.shape)} and {tuple(y_t.shape)}"
                )
        x_aug, y_aug = self._augment(x_t, y_t)
        if as_numpy:
            return x_aug.numpy(), (y_aug.numpy() if y_aug is not None and isinstance(y, np.ndarray) else y_aug)
        return x_aug, y_aug

    def _augment(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = x.shape[0] if x.dim() > 0 else 0
        seed = resolve_seed(self.seed) if self.seed is None else self.seed
        offset = 0 if self.seed is None else self.offset
        low, high = self.clip
        kwargs: dict[str, Any] = {"seed": seed, "offset": offset, "out_dtype": self.out_dtype, "backend": self.backend}
        x_aug = gaussian_augment(
            x, self.copies, self.sigma, (low, high), include_original=self.include_original, **kwargs
        )
        parts_y = [y] * (self.copies + int(self.include_original)) if y is not None else []
        extra = 0 if self.ratio is None else max(0, int(batch * self.ratio) - self.copies * batch)  # ART's count
        if extra > 0:
            # One more noisy copy of a random subset, under a seed of its own (the subset is a gather, not a
            # contiguous run of global indices, so it cannot share the main counter space); drawn anew each call.
            subset_seed = _mix_seed(seed)
            generator = torch.Generator().manual_seed(_mix_seed(subset_seed + offset))
            index = torch.randperm(batch, generator=generator)[:extra].sort().values.to(x.device)
            kwargs.update(seed=subset_seed, offset=offset)
            noisy = gaussian_augment(
                x.index_select(0, index), 1, self.sigma, (low, high), include_original=False, **kwargs
            )
            x_aug = torch.cat([x_aug, noisy])
            if y is not None:
                parts_y.append(y.index_select(0, index.to(y.device)))
        if self.seed is not None:
            self.offset += batch
        y_aug = torch.cat(parts_y) if y is not None else None
        return x_aug, y_aug

    def __repr__(self) -> str:
        ratio = f", ratio={self.ratio}" if self.ratio is not None and self.ratio != self.copies else ""
        return (
            f"GaussianAugmentation(sigma={self.sigma}, copies={self.copies}{ratio}, clip={self.clip}, "
            f"include_original={self.include_original}, seed={self.seed})"
        )


def augment_batches(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    gda: GaussianAugmentation,
    device: torch.device | str | None = None,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    non_blocking: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augments every (x, y) batch of `loader` on `device`.

    Args:
        loader: any iterable of (x, y) batches (a torch DataLoader, a list...), x of shape (B, ...), y (B, ...).
        gda: the augmentation.
        device: where the batches are moved before augmenting (default: where they are).
        shuffle: permute each augmented batch, so that a batch's noisy copies are not grouped together.
        seed: the permutations' seed: an int makes them the same on every pass over `loader` (on one kind of
            device; the noise follows `gda`'s own seed), None draws one from torch's default generator per pass
            (so torch.manual_seed governs it).
        non_blocking: asynchronous host-to-device copies (effective from pinned memory).

    Yields (x_aug, y_aug) on `device`: B * (copies + include_original) (+ the ratio's subset) samples each.
    """
    if not isinstance(gda, GaussianAugmentation):
        raise TypeError(f"gda must be a GaussianAugmentation, got {type(gda).__name__}")
    check_bool(shuffle, "shuffle")
    if seed is not None:
        seed = check_int(seed, "seed", low=0, high=2**64 - 1)
    target = None if device is None else check_device(device)
    if shuffle and seed is None:
        seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64).item())
    generators: dict[torch.device, torch.Generator] = {}  # one stream per device the batches lie on
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("loader must yield (x, y) pairs")
        x, y = batch
        if target is not None:
            x, y = x.to(target, non_blocking=non_blocking), y.to(target, non_blocking=non_blocking)
        x_aug, y_aug = gda(x, y)
        if shuffle:
            if x_aug.device not in generators:
                generators[x_aug.device] = torch.Generator(device=x_aug.device).manual_seed(seed)
            order = torch.randperm(x_aug.shape[0], device=x_aug.device, generator=generators[x_aug.device])
            x_aug, y_aug = x_aug[order], y_aug[order.to(y_aug.device)]
        yield x_aug, y_aug


class FixedNoisyCopies:
    """The seed paper's authors' GDA training set, never materialised: every image plus `copies` noisy copies of
    it, the same copies every epoch, for a loader to shuffle as one set of N * (copies + 1) images.

    Copy c (1..copies) of sample b is x_b + sigma * noise(seed, c - 1, b), with the counter-based noise of
    :func:`nemesis_fast.gaussian_augment` (a pure function of seed, copy and sample index), so any shuffled batch
    of (copy, sample) pairs is drawn on the fly; copy 0 is the original.

    Args:
        sigma: the noise's standard deviation, in the images' units (pixels in [0, 1]; the paper: 0.3), >= 0.
        copies: noisy copies of every image, >= 0 (the paper: 10).
        clip: (low, high) bounds of the noisy copies, or None (the authors' setting: noise not clipped).
        seed: the noise's seed: an int, or None for one drawn from torch's generator (torch.manual_seed governs it).

    Used by :class:`nemesis_fast.data.DeviceLoader` as `expand=`; `size` is copies + 1 rows per sample.
    """

    def __init__(
        self, sigma: float = 0.3, copies: int = 10, clip: tuple[float, float] | None = None, seed: int = 0
    ) -> None:
        self.sigma = check_number(sigma, "sigma", low=0.0)
        self.copies = check_int(copies, "copies", low=0)
        self.clip = clip_bounds(clip, "clip")
        self.seed = resolve_seed(seed)

    @property
    def size(self) -> int:
        """Rows per sample: the original and its copies."""
        return self.copies + 1

    def __call__(self, x: torch.Tensor, copy: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Rows `copy` (0: the original) of samples `sample` (int64 (B,)), given the originals x (B, ...) float
        (TypeError naming x otherwise: uint8 pixels are first read as x / 255, as the loader does)."""
        check_tensor(x, "x (float images: uint8 pixels divided by 255 first)", dtypes=FLOAT_DTYPES)
        noisy = (copy > 0).nonzero().squeeze(1)
        if noisy.numel() == 0:
            return x
        math_dtype = torch.promote_types(x.dtype, torch.float32)  # the op's: float32, float64 for float64 images
        rows = x[noisy].flatten(1).to(math_dtype)
        if self.sigma:
            z = pair_noise(self.seed, copy[noisy] - 1, sample[noisy], rows.shape[1]).to(x.device, math_dtype)
            rows = rows + z * self.sigma  # two roundings, as the op (a fused multiply-add would round once)
        low, high = self.clip
        if low is not None or high is not None:
            rows = rows.clamp(low, high)
        out = x.clone()
        out[noisy] = rows.to(x.dtype).view(-1, *x.shape[1:])
        return out

    def __repr__(self) -> str:
        return f"FixedNoisyCopies(sigma={self.sigma}, copies={self.copies}, clip={self.clip}, seed={self.seed})"
