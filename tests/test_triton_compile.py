"""Every Triton kernel compiled for a Hopper GPU (sm_90) as a real launch compiles it, offline, with no GPU present;
and the compiled code read back: no register spills, 128-bit global loads and stores for aligned float32 data, no
fused multiply-add in the Gaussian noise.

Triton's CPU interpreter accepts programs that its compiler rejects (a loop that changes a variable's shape, for
one), so the interpreter tests alone cannot show that the kernels build for a GPU. This compiles each kernel with
Triton's real compiler down to a cubin, in a process without TRITON_INTERPRET, for the dtypes the ops launch it with.
Pointers carry the 16-byte alignment that a launch on a torch allocation reports (tt.divisibility 16), and so do
the integer arguments that a launch specialises when they are multiples of 16; the launch options are the ops'.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from _compiled import PTX_FMA, PTX_UNROUNDED, innermost_loops, nvidia_tool, opcodes, resource_usage, sass_by_function

pytest.importorskip("triton")

COMPILE_ALL = r'''
import json
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from nemesis_fast.triton import bounded_relu, gaussian_augment, jsma_saliency_search

sys.path.insert(0, sys.argv[2])  # tests/, for fma_probe
import fma_probe

TARGET = GPUTarget("cuda", 90, 32)
OUT = Path(sys.argv[1])
ALIGNED = [["tt.divisibility", 16]]
records = []


def compile_kernel(label, kernel, pointers, constexprs, *, ints="i32", divisible=(), options=None):
    """pointers: the dtype of each *_ptr argument; every other non-constexpr argument is an integer, with 16-byte
    divisibility when named in `divisible`."""
    signature, attrs = {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointers[name]
            attrs[(index,)] = ALIGNED
        else:
            signature[name] = ints
            if name in divisible:
                attrs[(index,)] = ALIGNED
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=TARGET, options=options or {"num_warps": 4})
    (OUT / f"{label}.cubin").write_bytes(compiled.asm["cubin"])
    (OUT / f"{label}.ptx").write_text(compiled.asm["ptx"])
    (OUT / f"{label}.ttir").write_text(compiled.asm["ttir"])
    arguments = [name for name in kernel.arg_names if name not in constexprs]
    records.append({"label": label, "kernel": kernel.__name__, "ints": ints, "arguments": arguments})


for dtype in ("fp32", "fp64", "fp16", "bf16"):
    ptrs = {"x_ptr": dtype, "out_ptr": dtype, "grad_ptr": dtype, "grad_in_ptr": dtype, "mask_ptr": "u8"}
    ints = "i64" if dtype == "fp64" else "i32"  # top_bits: the threshold's bit pattern
    options = {"num_warps": bounded_relu.NUM_WARPS}
    for kernel, constexprs in (
        (bounded_relu._forward_kernel, {"BLOCK": bounded_relu.BLOCK}),
        (bounded_relu._backward_kernel, {"BLOCK": bounded_relu.BLOCK}),
        (bounded_relu._masked_forward_kernel, {"BYTES": bounded_relu.BYTES}),
        (bounded_relu._masked_backward_kernel, {"BYTES": bounded_relu.BYTES}),
    ):
        label = f"bounded_relu{kernel.__name__}-{dtype}"
        compile_kernel(label, kernel, ptrs, constexprs, ints=ints, divisible=("n",), options=options)
        if dtype == "fp32":  # n not a multiple of 16: the whole blocks keep their 16-byte accesses
            compile_kernel(f"{label}-odd-n", kernel, ptrs, constexprs, ints=ints, options=options)
for x, out, vec, ints in (
    ("fp32", "fp32", 4, "i32"), ("u8", "bf16", 4, "i32"), ("fp64", "fp16", 1, "i32"), ("fp16", "fp16", 4, "i64"),
    ("fp64", "fp64", 4, "i32"), ("u8", "fp32", 1, "i64"),
):
    math = "fp64" if x == "fp64" else "fp32"
    compile_kernel(
        f"gaussian_augment-{x}-{out}-vec{vec}-{ints}",
        gaussian_augment._augment_kernel,
        {"x_ptr": x, "out_ptr": out, "params_ptr": math},
        {"UINT8": x == "u8", "VEC": vec, "BLOCK": gaussian_augment.BLOCK},
        ints=ints,
        options=gaussian_augment.LAUNCH_OPTIONS,
    )
# FP fusion on (Triton's default, and how torch.compile launches it): the kernel rounds each operation itself.
FUSED = {**gaussian_augment.LAUNCH_OPTIONS, "enable_fp_fusion": True}
for x, out, math in (("fp32", "fp32", "fp32"), ("fp64", "fp64", "fp64")):
    compile_kernel(
        f"gaussian_augment-{x}-{out}-vec4-i32-fused",
        gaussian_augment._augment_kernel,
        {"x_ptr": x, "out_ptr": out, "params_ptr": math},
        {"UINT8": False, "VEC": 4, "BLOCK": gaussian_augment.BLOCK},
        options=FUSED,
    )
# The control that shows the FMA check can fail: x * x + x in plain operators, fusion on.
compile_kernel("control-plain-fused", fma_probe.plain_kernel, {"x_ptr": "fp32", "out_ptr": "fp32"}, {}, options=FUSED)
for dtype in ("fp32", "bf16", "fp64"):
    for increase in (True, False):
        compile_kernel(
            f"jsma_saliency_search-{dtype}-{'increase' if increase else 'decrease'}",
            jsma_saliency_search._search_kernel,
            {"target_ptr": dtype, "other_ptr": dtype, "domain_ptr": "u8", "score_ptr": "fp32", "key_ptr": "i64"},
            {
                "INCREASE": increase,
                "ROWS": jsma_saliency_search.ROWS,
                "COLS": jsma_saliency_search.COLS,
                "ROW_SEARCH": jsma_saliency_search.ROW_SEARCH,
                "IGNORES_NAN": True,
            },
            divisible=("n",),
            options={"num_warps": jsma_saliency_search.NUM_WARPS},
        )
compile_kernel(
    "jsma_saliency_search_finish",
    jsma_saliency_search._finish_kernel,
    {"score_ptr": "fp32", "key_ptr": "i64", "p_ptr": "i64", "q_ptr": "i64", "found_ptr": "i1"},
    {"BLOCK": jsma_saliency_search.FINISH_BLOCK},
)
json.dump(records, sys.stdout)
'''
EXPECTED_VARIANTS = 16 + 4 + 6 + 2 + 1 + 6 + 1


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict]:
    """label -> {kernel, ptx, ttir, cubin, ints, arguments} of every compiled variant (ints: the integer arguments'
    type; arguments: the names of the arguments that are not constexprs, in order)."""
    out = tmp_path_factory.mktemp("triton_sm90")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = os.environ.get("NEMESIS_FAST_TRITON_TEST_CACHE", "/tmp/nemesis_fast_triton_cache")
    run = subprocess.run(
        [sys.executable, "-c", COMPILE_ALL, str(out), os.path.dirname(__file__)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    variants = {}
    for record in json.loads(run.stdout):
        label = record["label"]
        cubin = out / f"{label}.cubin"
        variants[label] = {
            "kernel": record["kernel"],
            "ptx": (out / f"{label}.ptx").read_text(),
            "ttir": (out / f"{label}.ttir").read_text(),
            "cubin": cubin,
            "ints": record["ints"],
            "arguments": record["arguments"],
        }
    return variants


def needs_cuobjdump() -> None:
    if nvidia_tool("cuobjdump") is None:
        pytest.skip("no cuobjdump (Triton bundles one; so does a CUDA toolkit)")


def sass_of(variant: dict) -> list[str]:
    functions = sass_by_function(variant["cubin"])
    return functions[variant["kernel"]]


@pytest.mark.triton
@pytest.mark.slow
def test_every_triton_kernel_compiles_for_sm90(compiled):
    assert len(compiled) == EXPECTED_VARIANTS, sorted(compiled)


@pytest.mark.triton
@pytest.mark.slow
def test_no_kernel_spills_registers(compiled):
    needs_cuobjdump()
    for label, variant in compiled.items():
        usage = resource_usage(variant["cubin"])[variant["kernel"]]
        assert usage["LOCAL"] == 0 and usage["STACK"] == 0, (label, usage)
        assert 0 < usage["REG"] <= 255, (label, usage)


@pytest.mark.triton
@pytest.mark.slow
def test_jsma_search_fits_in_128_registers(compiled):
    """Under 128 registers a thread, so that 4 programs of 4 warps fit on an SM (the kernel used 188-255 when every
    tile carried the p < q mask and p was int64)."""
    needs_cuobjdump()
    labels = [label for label in compiled if label.startswith("jsma_saliency_search-")]
    assert len(labels) == 6
    for label in labels:
        usage = resource_usage(compiled[label]["cubin"])[compiled[label]["kernel"]]
        assert usage["REG"] < 128, (label, usage)


@pytest.mark.triton
@pytest.mark.slow
def test_jsma_search_takes_the_maximum_of_clamped_scores(compiled):
    """The hot loop of the search (the whole column tiles of the first pass; the module's docstring) keeps a
    running maximum per position, not a comparison and a column per pair: per pair two additions, one
    multiplication and two maxima (the clamp and the running maximum), and at most 9 instructions a pair in all,
    loads and conversions of float64 inputs included (11.6 for float32 when every pair was compared and its column
    kept; 8.4 now)."""
    needs_cuobjdump()
    labels = [label for label in compiled if label.startswith("jsma_saliency_search-")]
    for label in labels:
        (bodies,) = innermost_loops(compiled[label]["cubin"]).values()
        # innermost loops that load a column tile from global memory and score pairs
        scans = [c for c in map(opcodes, bodies) if c["LDG"] and c["FMUL"]]
        hot = min(scans, key=lambda c: c["FSETP"])  # the first pass's; the exact rescan compares every pair
        pairs = hot["FMUL"]
        assert hot["FMNMX"] == 2 * pairs and hot["FADD"] >= 2 * pairs, (label, hot)
        assert hot["FSETP"] + hot["FSEL"] + hot["SEL"] < pairs / 2, (label, hot)
        assert hot.total() <= 9 * pairs, (label, hot.total(), pairs)


def float32_accesses(sass: list[str]) -> tuple[list[str], list[str]]:
    """The global loads and stores of float32 data: the bit mask's bytes move apart, one or two at a time (.U8,
    .U16)."""
    data = [i for i in sass if ".U8" not in i and ".U16" not in i]
    return [i for i in data if i.startswith("LDG")], [i for i in data if i.startswith("STG")]


@pytest.mark.triton
@pytest.mark.slow
def test_float32_data_moves_in_128_bit_accesses(compiled):
    """bounded_relu (both saves) and gaussian_augment (whole groups of 4 features) load and store float32 data 16
    bytes at a time; bounded_relu's whole blocks do so for any number of elements."""
    needs_cuobjdump()
    labels = [
        "bounded_relu_forward_kernel-fp32",
        "bounded_relu_backward_kernel-fp32",
        "bounded_relu_masked_forward_kernel-fp32",
        "bounded_relu_masked_backward_kernel-fp32",
        "gaussian_augment-fp32-fp32-vec4-i32",
    ]
    for label in labels:
        sass = sass_of(compiled[label])
        loads, stores = float32_accesses(sass)
        assert any(".128" in i for i in loads), (label, loads)
        assert stores and all(".128" in i for i in stores), (label, stores)
    # Where n is not a multiple of 16, the last block's bounds mask allows 4-byte accesses only; every whole block
    # moves in 16-byte ones, as above.
    for label in labels[:4]:
        loads, stores = float32_accesses(sass_of(compiled[f"{label}-odd-n"]))
        assert any(".128" in i for i in loads) and any(".128" in i for i in stores), (label, loads, stores)


@pytest.mark.triton
@pytest.mark.slow
def test_gaussian_noise_has_no_fused_multiply_add(compiled):
    """Every + and * of the noise is its own correctly rounded PTX operation (.rn), which ptxas never fuses, so the
    noise equals the reference's bit for bit: with the ops' launch options and with FP fusion on, as torch.compile
    launches the kernel. (The SASS still holds the FFMAs of the correctly rounded square root's own sequence.)"""
    labels = [label for label in compiled if label.startswith("gaussian_augment-")]
    assert len(labels) == 8 and sum(label.endswith("-fused") for label in labels) == 2, labels
    for label in labels:
        ptx = compiled[label]["ptx"]
        assert not PTX_FMA.findall(ptx), label
        assert not PTX_UNROUNDED.findall(ptx), (label, sorted(set(PTX_UNROUNDED.findall(ptx))))
        assert re.search(r"\bmul\.rn\.f32\b", ptx), label  # the noise is there


@pytest.mark.triton
@pytest.mark.slow
def test_the_fma_check_finds_the_fusions_of_the_default_options(compiled):
    ptx = compiled["control-plain-fused"]["ptx"]
    assert PTX_FMA.findall(ptx)


# The integer arguments of each kernel that enter an index or an address. Triton passes an integer below 2**31 as
# int32, where a product or sum of them wraps: each must be widened to int64 before any arithmetic. (The JSMA
# finishing kernel's and the gaussian_augment kernel's key and flag arguments take no part in an index.)
INDEX_ARGUMENTS = {
    "_forward_kernel": ("n",),
    "_backward_kernel": ("n",),
    "_masked_forward_kernel": ("n",),
    "_masked_backward_kernel": ("n",),
    "_augment_kernel": ("pairs", "features_q", "groups", "row_stride_q", "copies", "offset", "include_original"),
    "_search_kernel": ("n", "t_stride0", "t_stride1", "o_stride0", "o_stride1", "d_stride0", "d_stride1"),
    "_finish_kernel": ("batch", "n"),
}
# The kernels whose program ids are widened to int64 before any arithmetic: their ids times a block size pass 2**31
# on large tensors. (The JSMA kernels' ids count (row block, sample) pairs and samples, below 2**31 by the op's check.)
WIDE_PROGRAM_IDS = {"_forward_kernel", "_backward_kernel", "_masked_forward_kernel", "_masked_backward_kernel"}
WIDE_PROGRAM_IDS |= {"_augment_kernel"}


def ttir_uses(ttir: str, value: str) -> list[str]:
    """The lines of a kernel's TTIR that use the SSA value `value` (its name without the %), less the function's
    signature and the value's own definition."""
    use = re.compile(rf"%{re.escape(value)}(?![\w.])")
    return [
        line.strip()
        for line in ttir.splitlines()
        if use.search(line) and "tt.func" not in line and not line.strip().startswith(f"%{value} =")
    ]


def ttir_argument_values(ttir: str) -> list[str]:
    """The SSA names of a kernel's arguments in the TTIR, in order."""
    (signature,) = re.findall(r"tt\.func public @\w+\((.*)\) attributes", ttir)
    return re.findall(r"%([\w.]+): ", signature)


@pytest.mark.triton
@pytest.mark.slow
def test_index_arithmetic_is_64_bit(compiled):
    """In every variant compiled with int32 integer arguments, the index arguments and (where they scale a block) the
    program ids are sign-extended to int64 before any other use, so no index wraps past 2**31 (B * n pairs, a
    row stride of more than 2**31 elements: tensors too large to run here). Read from the kernels' TTIR."""
    checked = set()
    for label, variant in compiled.items():
        if variant["ints"] != "i32" or variant["kernel"] not in INDEX_ARGUMENTS:
            continue
        ttir = variant["ttir"]
        values = dict(zip(variant["arguments"], ttir_argument_values(ttir), strict=True))
        wanted = [values[name] for name in INDEX_ARGUMENTS[variant["kernel"]]]
        if variant["kernel"] in WIDE_PROGRAM_IDS:
            program_ids = re.findall(r"%([\w.]+) = tt\.get_program_id", ttir)
            assert program_ids, label
            wanted += program_ids
        for value in wanted:
            uses = ttir_uses(ttir, value)
            widened = re.compile(rf"^%[\w.]+ = arith\.extsi %{re.escape(value)} : i32 to i64\b")
            assert uses and all(widened.match(use) for use in uses), (label, value, uses)
        checked.add(variant["kernel"])
    assert checked == set(INDEX_ARGUMENTS), checked
