"""Loads the compiled extension nemesis_fast._C, or records why it could not be loaded."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import torch

BUILD_INFO_PATH = Path(__file__).with_name("_build_info.json")
REBUILD_HINT = (
    "build it against the torch loaded: `pip install --no-build-isolation -e .` in a checkout, else install "
    "nemesis_fast again with --no-build-isolation"
)


def _load() -> tuple[bool, str | None, dict]:
    try:
        build_info = json.loads(BUILD_INFO_PATH.read_text())
    except FileNotFoundError:
        return False, f"the extension nemesis_fast._C is not built; {REBUILD_HINT}", {}
    except (OSError, ValueError) as error:
        return False, f"unreadable build record {BUILD_INFO_PATH.name} ({error}); {REBUILD_HINT}", {}
    built_for = build_info.get("torch_version")
    if built_for != torch.__version__:
        return (
            False,
            f"nemesis_fast._C was built against torch {built_for}, "
            f"but torch {torch.__version__} is loaded; {REBUILD_HINT}",
            build_info,
        )
    try:
        importlib.import_module("nemesis_fast._C")
    except (ImportError, OSError) as error:
        return False, f"nemesis_fast._C failed to load ({error}); {REBUILD_HINT}", build_info
    return True, None, build_info


LOADED, REASON, BUILD_INFO = _load()
if not LOADED:
    warnings.warn(
        f"nemesis_fast: native kernels unavailable, falling back to Triton or torch: {REASON}",
        RuntimeWarning,
        stacklevel=2,
    )


def has_native_kernel(op: str, device_type: str) -> bool:
    """Whether nemesis_fast._C registered a kernel of `op` for `device_type` ("cpu" or "cuda")."""
    if not LOADED or device_type not in ("cpu", "cuda"):
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"nemesis_fast::{op}", device_type.upper())
