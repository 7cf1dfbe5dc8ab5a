"""nemesis_fast: fused kernels, batched GPU-native attacks and cheap defenses for adversarial robustness."""

from __future__ import annotations

from typing import Any

from . import nn
from ._backends import bounded_relu as _bounded_relu_backends
from ._info import backend_info as _backend_info
from .ops import bounded_relu

__version__ = "0.1.0"

_OP_TABLES = {
    "bounded_relu": _bounded_relu_backends.BACKENDS,
}


def backend_info() -> dict[str, Any]:
    """Which backends ("native", "triton", "torch") can run on this machine, on which devices, and for each
    one that cannot, why (not built, built against another torch, no GPU, triton missing...).

    Also holds the extension's build record, the default backend and a per-op, per-device availability map.
    """
    return _backend_info(_OP_TABLES)


__all__ = ["__version__", "backend_info", "bounded_relu", "nn"]
