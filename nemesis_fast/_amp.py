"""The `amp` argument of :func:`~nemesis_fast.train`, :func:`~nemesis_fast.training.evaluate_accuracy` and
:class:`~nemesis_fast.certify.Smooth`: autocast for the model's forward passes."""

from __future__ import annotations

import contextlib
import platform
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
            "arithmetic: oneDNN emulates it, so the model runs slower than in float32 (certification 6x slower on an "
            "AVX2 CPU, 2.4x on an AVX-512 one without AVX512-BF16); leave amp off here",
            RuntimeWarning,
            stacklevel=3,
        )
    return torch.autocast(device_type, dtype=AMP_DTYPES[name])


def cpu_lacks_native(name: str) -> bool:
    """Whether this CPU has no native arithmetic in the amp dtype `name` (False where torch cannot tell).

    bf16 on x86: native with AVX512-BF16 or AMX instructions only. oneDNN also reports bf16 "supported" on a CPU with
    plain AVX-512 (an Intel Xeon without AVX512-BF16: certification 2.4x slower than in float32), where it converts
    every operand, so its report is taken only where torch cannot read the instruction set (other architectures,
    and fp16)."""
    if name == "bf16" and platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        try:
            return not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except (AttributeError, RuntimeError):
            pass
    probe = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[name]
    try:
        return not getattr(torch.ops.mkldnn, probe)()
    except (AttributeError, RuntimeError):
        return False
