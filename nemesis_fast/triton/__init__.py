"""Triton kernels, each registered as a torch custom op with torch.library.triton_op.

Triton is imported here only when it is installed: a CPU-only torch has none. The kernels run on CUDA
tensors, and on CPU tensors when TRITON_INTERPRET=1 was set before triton was first imported.
"""

from __future__ import annotations

import importlib.util
import os

INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"


def _load() -> tuple[bool, str | None]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (it ships with CUDA builds of torch)"
    try:
        import triton  # noqa: F401
    except Exception as error:  # a broken triton install must not break the package
        return False, f"triton failed to import ({error})"
    return True, None


AVAILABLE, REASON = _load()


def _interpreter_problem() -> str | None:
    """Why Triton's interpreter cannot run the kernels with the installed numpy, or None: triton before 3.7 converts
    1-element arrays to ints, which numpy 2.4 refuses (triton-lang/triton#9171)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        triton, numpy = (tuple(int(v) for v in version(p).split(".")[:2]) for p in ("triton", "numpy"))
    except (PackageNotFoundError, ValueError):
        return None
    if triton < (3, 7) and numpy >= (2, 4):
        return f"Triton {version('triton')}'s interpreter fails on numpy {version('numpy')} (needs triton >= 3.7)"
    return None


INTERPRETER_PROBLEM = _interpreter_problem() if AVAILABLE and INTERPRET else None


def unavailable_reason(device_type: str) -> str | None:
    """Why Triton kernels cannot run on tensors of `device_type`, or None when they can."""
    import torch

    if not AVAILABLE:
        return REASON
    if device_type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA GPU is visible"
    if device_type == "cpu":
        if not INTERPRET:
            return "Triton runs on CPU tensors only when TRITON_INTERPRET=1 is set before import"
        return INTERPRETER_PROBLEM
    return f"Triton has no kernels for {device_type} tensors"
