"""Backend selection: every public op holds an OpBackends table and asks it for the implementation to call."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import _extension
from . import triton as _triton
from ._checks import check_choice

BACKENDS = ("native", "triton", "torch")
ENV_VAR = "NEMESIS_FAST_BACKEND"


def default_backend() -> str | None:
    """The backend named by NEMESIS_FAST_BACKEND, or None (automatic choice) when it is unset or "auto"."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value in ("", "auto"):
        return None
    return check_choice(value, ENV_VAR, BACKENDS)


@dataclass(frozen=True)
class OpBackends:
    """The implementations of one op: its compiled kernel, its Triton op and its plain-torch reference."""

    name: str
    native: Callable | None
    triton: Callable | None
    torch: Callable
    # Device types with a compiled kernel, looked up once: torch.compile cannot trace the lookup.
    native_devices: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        devices = frozenset(d for d in ("cpu", "cuda") if _extension.has_native_kernel(self.name, d))
        object.__setattr__(self, "native_devices", devices)

    def unavailable_reason(self, backend: str, device_type: str) -> str | None:
        """Why `backend` cannot run this op on tensors of `device_type`, or None when it can."""
        if backend == "torch":
            return None
        if backend == "native":
            if not _extension.LOADED:
                return _extension.REASON
            if device_type not in self.native_devices:
                if device_type == "cuda":
                    return "nemesis_fast._C was built without CUDA kernels"
                return f"nemesis_fast._C has no {device_type} kernel"
            return None
        if self.triton is None:
            return _triton.unavailable_reason(device_type) or f"no Triton kernel is registered for {self.name}"
        return _triton.unavailable_reason(device_type)

    def select(self, device: torch.device, backend: str | None) -> Callable:
        """The implementation to call for tensors on `device`.

        backend=None takes NEMESIS_FAST_BACKEND, else picks the compiled kernel for the device, then Triton
        (CUDA tensors only), then the reference. A named backend that cannot run here raises ValueError.
        """
        requested = backend if backend is not None else default_backend()
        if requested is None:
            if self.unavailable_reason("native", device.type) is None:
                return self.native
            if device.type == "cuda" and self.unavailable_reason("triton", device.type) is None:
                return self.triton
            return self.torch
        argument = "backend" if backend is not None else ENV_VAR
        check_choice(requested, argument, BACKENDS)
        why_not = self.unavailable_reason(requested, device.type)
        if why_not is not None:
            raise ValueError(f"{argument}={requested!r} cannot run {self.name} on {device.type} tensors: {why_not}")
        return getattr(self, requested)
