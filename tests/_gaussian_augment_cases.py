"""Cases and helpers shared by the gaussian_augment tests (test_gaussian_augment*.py, not the defense's): the
(backend, device) cases, each backend's op called with defaults for the arguments not given, the reference's
result, the exact comparison, and the backends available on a device."""

from __future__ import annotations

import torch
from _support import backend_device_cases

from nemesis_fast import reference
from nemesis_fast._backends.gaussian_augment import BACKENDS

CASES = backend_device_cases()
OP_ARGS = ("copies", "sigma", "clip_min", "clip_max", "include_original", "seed", "offset", "out_dtype")


def op_for(backend: str):
    """The op a backend runs, called with the op's positional arguments."""
    return {"native": BACKENDS.native, "triton": BACKENDS.triton, "torch": BACKENDS.torch}[backend]


def op_arguments(**kwargs) -> list:
    """The op's positional arguments after x: defaults for those not in `kwargs`."""
    args = {"copies": 3, "sigma": 0.5, "clip_min": 0.0, "clip_max": 1.0, "include_original": True, "seed": 7}
    args.update({"offset": 0, "out_dtype": None}, **kwargs)
    return [args[name] for name in OP_ARGS]


def call(backend: str, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The op of `backend` with defaults for the arguments not given."""
    return op_for(backend)(x, *op_arguments(**kwargs))


def expected(x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The reference's result with the same defaults as :func:`call`."""
    return reference.gaussian_augment(x, *op_arguments(**kwargs))


def assert_matches(actual: torch.Tensor, wanted: torch.Tensor) -> None:
    """Same shape, dtype and values, bit for bit (NaN where NaN, and -0 where -0): the noise is exact on every
    backend."""
    assert actual.shape == wanted.shape and actual.dtype == wanted.dtype
    torch.testing.assert_close(actual, wanted, rtol=0, atol=0, equal_nan=True)
    negative = [torch.signbit(t) & ~torch.isnan(t) for t in (actual, wanted)]  # assert_close takes -0 for +0
    assert torch.equal(*negative), "the same values, but a zero of the other sign"


def available_backends(device: str) -> list[str]:
    return [b for b in ("native", "triton", "torch") if BACKENDS.unavailable_reason(b, device) is None]
