"""Label smoothing (Szegedy et al., 2016; Warde-Farley and Goodfellow, 2016): train on soft targets that put
`confidence` (the paper: 0.9) on the true class and spread the rest evenly over the other classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import FLOAT_DTYPES, check_float_dtype, check_int, check_number, check_tensor


def smooth_labels(
    y: torch.Tensor, num_classes: int, confidence: float = 0.9, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B, num_classes) targets: `confidence` at y[i], (1 - confidence) / (num_classes - 1) elsewhere.

    confidence = 1 gives one-hot targets; 1 / num_classes gives the uniform distribution.
    """
    check_tensor(y, "y", dtypes=(torch.int64,), ndim=1)
    check_float_dtype(dtype)
    num_classes = check_int(num_classes, "num_classes", low=2)
    confidence = check_number(confidence, "confidence", low=1.0 / num_classes, high=1.0)
    if y.device.type == "cpu" and y.numel() and not 0 <= int(y.min()) <= int(y.max()) < num_classes:
        # (On a GPU this check would synchronise every training step; train() checks its labels once.)
        raise ValueError(f"y must hold classes in [0, {num_classes}), got values in [{int(y.min())}, {int(y.max())}]")
    other = (1.0 - confidence) / (num_classes - 1)
    targets = torch.full((y.shape[0], num_classes), other, dtype=dtype, device=y.device)
    return targets.scatter_(1, y[:, None], confidence)


def label_smoothing_loss(logits: torch.Tensor, y: torch.Tensor, confidence: float = 0.9) -> torch.Tensor:
    """The mean cross-entropy (a scalar) between softmax(logits) (B, K) and the smoothed targets of y (B,): the
    probability `confidence` in [1/K, 1] on y's class, (1 - confidence) / (K - 1) on each other (the paper: 0.9)."""
    check_tensor(logits, "logits", dtypes=FLOAT_DTYPES, ndim=2)
    targets = smooth_labels(y, logits.shape[1], confidence, dtype=torch.float32)
    return F.cross_entropy(logits.float(), targets)
