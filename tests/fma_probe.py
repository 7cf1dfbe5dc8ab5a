"""A Triton kernel written with plain operators, x * x + x: with FP fusion on, Triton compiles it to an FMA. The
control of the compiled-code checks (tests/test_triton_compile.py), which shows that they can find one."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def plain_kernel(x_ptr, out_ptr):
    offsets = tl.arange(0, 16)
    x = tl.load(x_ptr + offsets)
    tl.store(out_ptr + offsets, x * x + x)
