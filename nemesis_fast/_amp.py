"""The `amp` argument of :func:`~nemesis_fast.train`, :func:`~nemesis_fast.training.evaluate_accuracy` and
:class:`~nemesis_fast.certify.Smooth`: autocast for the model's forward passes."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_warned: set[str] = set()  # the amp names already warned about on this CPU


def amp_name(amp: Any) -> str | None:
    """None for False or None (no autocast), "bf16" for True, else `amp` itself when it names a dtype of
    AMP_DTYPES; ValueError naming `amp` otherwise."""
    if amp is False or amp is None:
        return None
    if amp is True:
        return "bf16"
    if isinstance(amp, str) and amp in AMP_DTYPES:
        return amp
    choices = ", ".join(repr(c) for c in (True, False, *AMP_DTYPES))
    raise ValueError(f"amp must be one of {choices}; got {amp!r}")


def autocast(device_type: str, name: str | None) -> contextlib.AbstractContextManager:
    """torch.autocast to the dtype `name` (from :func:`amp_name`), or a no-op context for None. Warns once per
    process when the CPU has no native arithmetic in that dtype, where autocast makes the model slower."""
    if not name:
        return contextlib.nullcontext()
    if device_type == "cpu" and name not in _warned and cpu_lacks_native(name):
        _warned.add(name)
        warnings.warn(
            f"amp={name!r} on this CPU ({torch.backends.cpu.get_cpu_capability()}), which has no native {name} "
            "arithmetic: oneDNN emulates it, so the model runs several times slower than in float32 (6x for "
            "certification on an AVX2 CPU); leave amp off here",
            RuntimeWarning,
            stacklevel=3,
        )
    return torch.autocast(device_type, dtype=AMP_DTYPES[name])


def cpu_lacks_native(name: str) -> bool:
    """Whether oneDNN reports no native support for the amp dtype `name` on this CPU (False where torch cannot
    tell)."""
    probe = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[name]
    try:
        return not getattr(torch.ops.mkldnn, probe)()
    except (AttributeError, RuntimeError):
        return False
