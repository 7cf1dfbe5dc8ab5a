"""ART's FeatureSqueezing as a PyTorch preprocessor: the squeeze computed in torch on the classifier's device, so that
a PyTorchClassifier using it keeps ART's all-PyTorch path (and the drop-in attacks theirs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.defences import preprocessor
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

from ._classifier import with_identity_gradient, writable


class FeatureSqueezing(preprocessor.FeatureSqueezing, PreprocessorPyTorch):
    """art.defences.preprocessor.FeatureSqueezing(clip_values, bit_depth=8, apply_fit=False, apply_predict=True), with
    ART's signature, defaults, checks and ``set_params``, as a ``PreprocessorPyTorch``.

    Each value becomes rint((x - min) / (max - min) * (2^bit_depth - 1)) / (2^bit_depth - 1) * (max - min) + min, ART's
    arithmetic in ART's order, in x's dtype (float32 for integer images): ART's own values as numpy 1 computed them,
    bit for bit. Under numpy 2 ART's numpy code turns float32 images into float64 ones (its 2^bit_depth - 1 is a
    numpy float64 scalar), which a float32 model inside a PyTorchClassifier refuses ("Input type (double) and bias type
    (float) should be the same"); the drop-in keeps x's dtype, so the classifier runs, and its values are within 2 ulp
    of those float64 ones up to 12 bits (at 16 bits and more float32's x * (2^bits - 1) can round across a half, and
    a value then lands one level away, as under numpy 1). Values outside clip_values are
    not clipped, as in ART. The gradient is the identity (BPDA), as ART's numpy estimate: through ``forward`` (ART's
    PyTorch path and the drop-in attacks) and ``estimate_forward`` (``estimate_gradient``, which ART calls where a
    numpy step shares the chain).
    """

    def _check_params(self) -> None:
        super()._check_params()
        for name, value in zip(("clip_values[0]", "clip_values[1]"), self.clip_values):
            if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
                raise ValueError(f"{name} must be finite, got {value!r}")  # (ART's NaN bounds pass its min < max check)

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """ART's numpy call: (squeezed x, y), computed in torch on the CPU; x's dtype is kept (float32 for integers)."""
        with torch.no_grad():
            return self._squeezed(torch.as_tensor(writable(np.asarray(x)))).numpy(), y

    def forward(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, Any]:
        """(squeezed x, y) for a batch `x` on any device; where `x` requires a gradient, the identity's (BPDA)."""
        return with_identity_gradient(self._squeezed(x.detach()), x), y

    def estimate_forward(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The differentiable estimate ART's gradients go through: the identity (BPDA), as ART's numpy class's."""
        return x

    def _squeezed(self, x: torch.Tensor) -> torch.Tensor:
        """ART's arithmetic in ART's order, in x's dtype (float32 for integers); scalar bounds as the Python floats ART
        computes with (their difference in float64, then rounded to x's dtype, as numpy rounds a Python float)."""
        dtype = x.dtype if x.is_floating_point() else torch.float32
        x = x.to(dtype)
        low, high = self.clip_values[0], self.clip_values[1]
        if np.ndim(low) == 0 and np.ndim(high) == 0:
            low, high = float(low), float(high)
        else:  # bounds per feature, broadcast against x
            low, high = (torch.as_tensor(np.asarray(v), dtype=dtype, device=x.device) for v in (low, high))
        # The divisors as tensors on x's device: CUDA divides by a Python (or CPU) scalar as a product with its
        # reciprocal, which rounds otherwise than numpy's division.
        span = torch.as_tensor(high - low, dtype=dtype, device=x.device)
        levels = torch.tensor(float(2**self.bit_depth - 1), dtype=dtype, device=x.device)
        return torch.round((x - low) / span * levels) / levels * span + low
