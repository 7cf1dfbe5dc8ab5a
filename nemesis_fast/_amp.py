"""The `amp` argument of :func:`~nemesis_fast.train`, :func:`~nemesis_fast.training.evaluate_accuracy` and
:class:`~nemesis_fast.certify.Smooth`: autocast for the model's forward passes."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    """torch.autocast to the dtype `name` (from :func:`amp_name`), or a no-op context for None."""
    return torch.autocast(device_type, dtype=AMP_DTYPES[name]) if name else contextlib.nullcontext()
