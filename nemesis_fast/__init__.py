"""nemesis_fast: fused kernels, batched GPU-native attacks and cheap defenses for adversarial robustness."""

from __future__ import annotations

from typing import Any

from . import attacks, certify, data, defenses, models, nn
from ._backends import bounded_relu as _bounded_relu_backends
from ._backends import gaussian_augment as _gaussian_augment_backends
from ._backends import jsma_saliency_search as _jsma_saliency_search_backends
from ._info import backend_info as _backend_info
from ._version import __version__
from .evaluation import evaluate
from .ops import bounded_relu, gaussian_augment, jsma_saliency_search
from .training import train

_OP_TABLES = {
    "bounded_relu": _bounded_relu_backends.BACKENDS,
    "bounded_relu_masked": _bounded_relu_backends.MASKED_BACKENDS,
    "gaussian_augment": _gaussian_augment_backends.BACKENDS,
    "jsma_saliency_search": _jsma_saliency_search_backends.BACKENDS,
}


def backend_info() -> dict[str, Any]:
    """Which backends ("native", "triton", "torch") can run on this machine, on which devices, and for each
    one that cannot, why (not built, built against another torch, no GPU, triton missing...).

    Also holds the extension's build record, the default backend and a per-op, per-device availability map.
    """
    return _backend_info(_OP_TABLES)


__all__ = [
    "__version__",
    "attacks",
    "backend_info",
    "bounded_relu",
    "certify",
    "data",
    "defenses",
    "evaluate",
    "gaussian_augment",
    "jsma_saliency_search",
    "models",
    "nn",
    "train",
]
