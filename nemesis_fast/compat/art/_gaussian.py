"""ART's GaussianAugmentation as a PyTorch preprocessor: the noise drawn on the device by the fused op
:func:`nemesis_fast.gaussian_augment`, so that a PyTorchClassifier using it keeps ART's all-PyTorch path."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.defences import preprocessor
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

from ...ops import gaussian_augment


class GaussianAugmentation(preprocessor.GaussianAugmentation, PreprocessorPyTorch):
    """art.defences.preprocessor.GaussianAugmentation(sigma=1.0, augmentation=True, ratio=1.0, clip_values=None,
    apply_fit=True, apply_predict=False), with ART's signature, defaults, checks and ``set_params``, as a
    ``PreprocessorPyTorch``.

    augmentation=True: x followed by noisy copies of int(ratio * N) samples drawn uniformly with replacement
    (torch's generator on x's device), each plus N(0, sigma^2) noise; y (when given) followed by their labels.
    augmentation=False: x plus noise, same size. With clip_values every output value, originals included, is clipped,
    as in ART. The noise comes from torch's generator (ART's from numpy's), so the images are not ART's: the same
    distribution, drawn on the device. Its gradient, where it runs at prediction time, is the identity (BPDA), as
    ART's.
    """

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """ART's numpy call: (x_augmented, y_augmented) as numpy arrays, computed by forward() on the device."""
        x_t = torch.as_tensor(x, device=self.device)  # no copy on the CPU (ART's PyTorch preprocessors copy)
        y_t = None if y is None else torch.as_tensor(y, device=self.device)
        with torch.no_grad():
            x_aug, y_aug = self.forward(x_t, y_t)
        return x_aug.cpu().numpy(), None if y_aug is None else y_aug.cpu().numpy()

    def forward(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, Any]:
        """(x_augmented, y_augmented) for a batch `x` (N, ...) on any device and labels `y` (N, ...) or None."""
        data = x if x.is_floating_point() else x.float()  # integer images: noise on the raw values, as ART adds it
        dtype = torch.promote_types(data.dtype, torch.float32)
        clip = None if self.clip_values is None else (float(self.clip_values[0]), float(self.clip_values[1]))
        if self.augmentation:
            size = int(x.shape[0] * self.ratio)
            indices = torch.randint(0, max(x.shape[0], 1), (size,), device=x.device)  # (size is 0 for no images)
            noisy = self._noise(data.index_select(0, indices), clip)
            originals = data if clip is None else data.clamp(*clip)
            x_aug = torch.cat([originals.to(dtype), noisy.to(dtype)])
            if y is not None:
                y = torch.cat([y, y.index_select(0, indices.to(y.device))])
            return x_aug, y
        return self._noise(data, clip).to(dtype), y

    def estimate_forward(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The noisy images with the identity's gradient (ART's estimate for this defence)."""
        noisy = self.forward(x, y)[0]
        return x + (noisy - x).detach() if noisy.shape == x.shape else noisy.detach()

    def _noise(self, x: torch.Tensor, clip: tuple[float, float] | None) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.to(torch.float32)
        return gaussian_augment(x, 1, float(self.sigma), clip, include_original=False, out_dtype=torch.float32)
