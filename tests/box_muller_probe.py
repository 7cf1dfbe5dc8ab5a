"""A one-program Triton kernel that runs the gaussian_augment kernel's Box-Muller helper on given uint32 words (imported
only where Triton is installed)."""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from nemesis_fast.triton._common import launch
from nemesis_fast.triton.gaussian_augment import _box_muller


@triton.jit
def _probe(radius_ptr, angle_ptr, cos_ptr, sin_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    radius = tl.load(radius_ptr + offsets, mask=inside, other=0).to(tl.uint32, bitcast=True)
    angle = tl.load(angle_ptr + offsets, mask=inside, other=0).to(tl.uint32, bitcast=True)
    z_cos, z_sin = _box_muller(radius, angle)
    tl.store(cos_ptr + offsets, z_cos, mask=inside)
    tl.store(sin_ptr + offsets, z_sin, mask=inside)


def box_muller(radius_words: list[int], angle_words: list[int], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(r cos theta, r sin theta), float32 on the CPU, of each pair of uint32 words, by the Triton kernel's helper."""
    words = [
        torch.from_numpy(np.array(w, dtype=np.uint32).view(np.int32)).to(device) for w in (radius_words, angle_words)
    ]
    n = len(radius_words)
    z_cos, z_sin = (torch.empty(n, dtype=torch.float32, device=device) for _ in range(2))
    launch(_probe, (1,), *words, z_cos, z_sin, n, BLOCK=triton.next_power_of_2(n))
    return z_cos.cpu(), z_sin.cpu()
