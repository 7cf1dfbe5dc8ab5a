"""A one-program Triton kernel that runs the gaussian_augment kernel's row-count helper on given arguments (imported
only where Triton is installed)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from nemesis_fast.triton._common import launch
from nemesis_fast.triton.gaussian_augment import _row_count


@triton.jit
def _probe(out_ptr, copies, include_original):
    tl.store(out_ptr, _row_count(copies, include_original))


def row_count(copies: int, include_original: int, device: str) -> int:
    out = torch.zeros(1, dtype=torch.int64, device=device)
    launch(_probe, (1,), out, copies, include_original)
    return int(out.item())
