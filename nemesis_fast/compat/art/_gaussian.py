"""ART's GaussianAugmentation as a PyTorch preprocessor: the noise drawn on the device by the fused op
:func:`nemesis_fast.gaussian_augment`, so that a PyTorchClassifier using it keeps ART's all-PyTorch path."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.defences import preprocessor
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

from ...ops import gaussian_augment
from ._classifier import with_identity_gradient, writable


class GaussianAugmentation(preprocessor.GaussianAugmentation, PreprocessorPyTorch):
    """art.defences.preprocessor.GaussianAugmentation(sigma=1.0, augmentation=True, ratio=1.0, clip_values=None,
    apply_fit=True, apply_predict=False), with ART's signature, defaults, checks and ``set_params``, as a
    ``PreprocessorPyTorch``.

    augmentation=True: x followed by noisy copies of int(ratio * N) samples drawn uniformly with replacement
    (torch's generator on x's device), each plus N(0, sigma^2) noise; y (when given) followed by their labels.
    augmentation=False: x plus noise, same size. With clip_values (scalars, or arrays broadcast against the images)
    every output value, originals included, is clipped, as in ART; the output dtype is ART's (:meth:`output_dtype`).
    The noise comes from torch's generator (ART's from numpy's), so the images are not ART's: the same distribution,
    drawn on the device. Its gradient, where it runs at prediction time (forward() on an x that requires a gradient,
    as ART's loss and class gradients call it), is the identity (BPDA), as ART's. `sigma` may be an array broadcast
    against the images, as numpy's scale; labels of any numpy dtype (strings too) are stacked in numpy. A 1-D `x` (N
    values) gives 2N values, where ART's np.vstack gives an array of shape (2, N).
    """

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """ART's numpy call: (x_augmented, y_augmented) as numpy arrays, the images computed on the device (the
        labels, of any numpy dtype, strings included, stacked in numpy as ART stacks them)."""
        x_t = torch.as_tensor(writable(x), device=self.device)  # no copy of writable memory on the CPU
        with torch.no_grad():
            x_aug, indices = self._augmented(x_t)
        if y is not None and indices is not None:
            y = np.concatenate((y, np.asarray(y)[indices.cpu().numpy()]))
        return x_aug.cpu().numpy(), y

    def forward(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, Any]:
        """(x_augmented, y_augmented) for a batch `x` (N, ...) on any device and labels `y` (N, ...) or None.

        The dtype is ART's (see :meth:`output_dtype`). Where `x` requires a gradient, the first N rows carry the
        identity's gradient (ART's estimate for this defence), the noise itself none."""
        x_aug, indices = self._augmented(x)
        if y is not None and indices is not None:
            y = torch.cat([y, y.index_select(0, indices.to(y.device))])
        return with_identity_gradient(x_aug, x), y

    def _augmented(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x_augmented, the indices of the samples the noisy rows copy: None with augmentation=False)."""
        dtype = self.output_dtype(x.dtype)
        data = x.detach() if x.is_floating_point() else x.detach().to(dtype)  # integers: noise on the raw values
        fused = self._fused_clip(dtype)
        indices = None
        if self.augmentation:
            size = int(x.shape[0] * self.ratio)
            indices = torch.randint(0, max(x.shape[0], 1), (size,), device=x.device)  # (size is 0 for no images)
            noisy = self._noise(data.index_select(0, indices), fused).to(dtype)
            originals = data.to(dtype) if fused is None else data.clamp(*fused).to(dtype)
            x_aug = torch.cat([originals, noisy])
        else:
            x_aug = self._noise(data, fused).to(dtype)
        if fused is None and self.clip_values is not None:
            x_aug = self._clamp(x_aug)
        return x_aug, indices

    def output_dtype(self, x_dtype: torch.dtype) -> torch.dtype:
        """ART's output dtype for images of `x_dtype`: the float32 noise stacked under x with numpy's promotion
        (augmentation=True) or float32 alone (augmentation=False), then promoted by np.clip with the clip values
        (an array or numpy scalar bound keeps its dtype; a Python number does not)."""
        dtype = np.dtype(np.float32)
        if self.augmentation:
            dtype = np.result_type(_numpy_dtype(x_dtype), dtype)
        if self.clip_values is not None:
            dtype = np.result_type(
                dtype, *(np.asarray(v) if isinstance(v, (list, tuple)) else v for v in self.clip_values)
            )
        return torch.from_numpy(np.empty(0, dtype)).dtype

    def _fused_clip(self, dtype: torch.dtype) -> tuple[float, float] | None:
        """The clip values as the fused op's float bounds, where it clips exactly as ART (scalar bounds, float32
        output), else None."""
        if self.clip_values is None or dtype != torch.float32 or any(np.ndim(v) for v in self.clip_values):
            return None
        if np.ndim(self.sigma):  # (noise scaled per feature after the op: the clip comes after it)
            return None
        return float(self.clip_values[0]), float(self.clip_values[1])

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        """`x` clipped into clip_values (scalars or arrays broadcast against x), in x's dtype, as np.clip."""
        low, high = (torch.as_tensor(np.asarray(v), dtype=x.dtype, device=x.device) for v in self.clip_values)
        return torch.clamp(x, low, high)

    def _noise(self, x: torch.Tensor, clip: tuple[float, float] | None) -> torch.Tensor:
        """float32 x + N(0, sigma^2) noise for `x` (N, ...) detached, clipped into `clip` when given; sigma checked
        for an empty batch too, as ART's numpy draw checks it."""
        if np.ndim(self.sigma):  # a sigma per feature (an array broadcast against the images, as numpy's scale)
            scale = np.asarray(self.sigma)
            if (scale < 0).any():
                raise ValueError("scale < 0")  # numpy's normal, as ART meets it
            if np.broadcast_shapes(scale.shape, tuple(x.shape)) != tuple(x.shape):
                raise ValueError(f"sigma of shape {scale.shape} does not broadcast against the images {tuple(x.shape)}")
            unit = gaussian_augment(torch.zeros_like(x, dtype=torch.float32), 1, 1.0, None, include_original=False)
            sigma = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
            return x.to(torch.float32) + sigma * unit
        return gaussian_augment(x, 1, float(self.sigma), clip, include_original=False, out_dtype=torch.float32)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """numpy's dtype for torch's `dtype` (float32 for bfloat16, which numpy lacks: both promote to float32)."""
    return np.dtype(np.float32) if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype
