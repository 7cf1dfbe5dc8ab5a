"""Helpers shared by the op tests: the (backend, device) cases and the dtypes each one is tested with."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast import triton as nf_triton
from nemesis_fast._checks import FLOAT_DTYPES
from nemesis_fast._dispatch import OpBackends

HAS_CUDA = torch.cuda.is_available()


def backend_device_cases() -> list:
    """pytest params (backend, device) for every backend on every device, marked cuda / triton."""
    cases = []
    for device in ("cpu", "cuda"):
        for backend in ("native", "triton", "torch"):
            marks = []
            if device == "cuda":
                marks.append(pytest.mark.cuda)
            if backend == "triton":
                marks.append(pytest.mark.triton)
            cases.append(pytest.param(backend, device, marks=marks, id=f"{backend}-{device}"))
    return cases


def require_backend(table: OpBackends, backend: str, device: str) -> None:
    """Skips a case only for what the machine lacks (a GPU, triton itself); fails for anything else."""
    reason = table.unavailable_reason(backend, device)
    if reason is None:
        return
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("needs a CUDA GPU")
    if backend == "triton" and not nf_triton.AVAILABLE:
        pytest.skip(reason)
    pytest.fail(f"backend {backend!r} unavailable on {device}: {reason}")


def dtypes_for(backend: str, device: str) -> list[torch.dtype]:
    """The float dtypes a backend is tested with: Triton's CPU interpreter has no bfloat16 arithmetic."""
    if backend == "triton" and device == "cpu":
        return [d for d in FLOAT_DTYPES if d != torch.bfloat16]
    return list(FLOAT_DTYPES)
