"""backend_info(): what can run on this machine, and why the rest cannot."""

from __future__ import annotations

from typing import Any

import torch

from . import _extension
from . import triton as _triton
from ._dispatch import BACKENDS, ENV_VAR, OpBackends, default_backend


def backend_info(tables: dict[str, OpBackends]) -> dict[str, Any]:
    device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ops = {
        name: {
            backend: {
                device: device in device_types and table.unavailable_reason(backend, device) is None
                for device in ("cpu", "cuda")
            }
            for backend in BACKENDS
        }
        for name, table in tables.items()
    }
    info: dict[str, Any] = {}
    for backend in BACKENDS:
        reasons = {device: _any_reason(tables, backend, device) for device in ("cpu", "cuda")}
        if "cuda" not in device_types and reasons["cuda"] is None:
            reasons["cuda"] = "no CUDA GPU is visible"
        info[backend] = {
            "available": any(reasons[d] is None for d in device_types),
            "devices": [d for d in device_types if reasons[d] is None],
            "unavailable": {d: r for d, r in reasons.items() if r is not None},
        }
    info["native"]["build"] = _extension.BUILD_INFO
    info["triton"]["interpret"] = _triton.INTERPRET
    try:
        info["default"] = default_backend() or "auto"
    except ValueError as error:
        info["default"] = f"invalid {ENV_VAR}: {error}"
    info["torch_version"] = torch.__version__
    info["ops"] = ops
    return info


def _any_reason(tables: dict[str, OpBackends], backend: str, device: str) -> str | None:
    """None when `backend` runs at least one op on `device`, else the first op's reason."""
    reasons = [table.unavailable_reason(backend, device) for table in tables.values()]
    return None if any(r is None for r in reasons) else reasons[0]
