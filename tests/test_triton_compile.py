"""Every Triton kernel compiles for a Hopper GPU (sm_90), offline, with no GPU present.

Triton's CPU interpreter accepts programs that its compiler rejects (a loop that changes a variable's shape, for
one), so the interpreter tests alone cannot show that the kernels build for a GPU. This test runs Triton's real
compiler down to PTX, in a process without TRITON_INTERPRET, for each kernel and the dtypes the ops launch it with.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

COMPILE_ALL = r'''
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from nemesis_fast.triton import bounded_relu, gaussian_augment, jsma_saliency_search

TARGET = GPUTarget("cuda", 90, 32)


def compile_kernel(kernel, pointers, constexprs, ints="i32"):
    """pointers: the dtype of each *_ptr argument; every other non-constexpr argument is an integer."""
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointers[name]
        else:
            signature[name] = ints
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=TARGET, options={"num_warps": 4})
    assert "ptx" in compiled.asm


cases = 0
for dtype in ("fp32", "fp64", "fp16", "bf16"):
    ptrs = {"x_ptr": dtype, "out_ptr": dtype, "top_ptr": dtype, "grad_ptr": dtype, "grad_in_ptr": dtype}
    for kernel in (bounded_relu._forward_kernel, bounded_relu._backward_kernel):
        compile_kernel(kernel, ptrs, {"BLOCK": bounded_relu.BLOCK})
        cases += 1
for x, out, vec, ints in (
    ("fp32", "fp32", 4, "i32"), ("u8", "bf16", 4, "i32"), ("fp64", "fp16", 1, "i32"), ("fp16", "fp16", 4, "i64")
):
    math = "fp64" if x == "fp64" else "fp32"
    compile_kernel(
        gaussian_augment._augment_kernel,
        {"x_ptr": x, "out_ptr": out, "params_ptr": math},
        {"UINT8": x == "u8", "VEC": vec, "BLOCK": gaussian_augment.BLOCK},
        ints,
    )
    cases += 1
for dtype in ("fp32", "bf16", "fp64"):
    for increase in (True, False):
        compile_kernel(
            jsma_saliency_search._search_kernel,
            {"target_ptr": dtype, "other_ptr": dtype, "domain_ptr": "u8", "score_ptr": "fp32", "key_ptr": "i64"},
            {"INCREASE": increase, "ROWS": jsma_saliency_search.ROWS, "COLS": jsma_saliency_search.COLS},
        )
        cases += 1
print(f"compiled {cases} kernel variants")
'''


@pytest.mark.triton
@pytest.mark.slow
def test_every_triton_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = os.environ.get("NEMESIS_FAST_TRITON_TEST_CACHE", "/tmp/nemesis_fast_triton_cache")
    run = subprocess.run([sys.executable, "-c", COMPILE_ALL], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "compiled 18 kernel variants" in run.stdout
