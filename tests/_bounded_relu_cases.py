"""Cases and helpers shared by the bounded_relu tests (test_bounded_relu*.py): the (backend, device) cases, the
backend table of each form, inputs of awkward layouts and special values, exact comparisons, and the masked form's
ops on each backend."""

from __future__ import annotations

import torch
from _support import backend_device_cases

from nemesis_fast import reference
from nemesis_fast._backends.bounded_relu import BACKENDS, MASKED_BACKENDS
from nemesis_fast.bench.bits import SAME_WIDTH_INTEGER as BITS
from nemesis_fast.bench.bits import same_bits

CASES = backend_device_cases()
TABLES = {"output": BACKENDS, "mask": MASKED_BACKENDS}


def layouts(device: str) -> dict[str, torch.Tensor]:
    """Inputs of odd sizes and awkward layouts; values straddle 0 and the thresholds the tests use."""
    base = torch.randn(7, 13, 5, device=device) * 2
    return {
        "contiguous": base,
        "scalar": torch.tensor(0.7, device=device),
        "empty": torch.empty(0, 3, device=device),
        "transposed": base.transpose(0, 2),
        "sliced": base[:, ::3, 1:],
        "channels_last": torch.randn(2, 3, 5, 7, device=device).to(memory_format=torch.channels_last),
        "expanded": torch.randn(1, 5, device=device).expand(4, 5),
    }


def special_values(device: str) -> torch.Tensor:
    return torch.tensor([-float("inf"), -1.0, 0.0, 0.3, 0.5, 1.0, 2.0, float("inf"), float("nan")], device=device)


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def assert_same_bits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype in BITS and same_bits(actual, expected), (actual, expected)


def masked_pair(backend: str):
    """The (forward, backward) ops of the masked form on `backend`; the reference's functions for "torch"."""
    if backend == "torch":
        return reference.bounded_relu_masked, reference.bounded_relu_masked_backward
    suffix = "_triton" if backend == "triton" else ""
    ops = torch.ops.nemesis_fast
    return getattr(ops, f"bounded_relu_masked{suffix}"), getattr(ops, f"bounded_relu_masked_backward{suffix}")
