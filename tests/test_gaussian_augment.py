"""gaussian_augment on every backend against the reference, bit for bit, and the reproducibility of its noise
(across backends, devices, threads, SIMD widths and batch splits); Philox and Box-Muller; the compiled code that
keeps the noise exact (no fused multiply-add) and Triton's 64-bit row count. (The statistics of the noise,
clipping, uint8 input and the gradient: test_gaussian_augment_noise.py; opcheck, torch.compile and bad input:
test_gaussian_augment_ops.py.)"""

from __future__ import annotations

import importlib
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _compiled import PTX_FMA, PTX_UNROUNDED, X86_FMA, nvcc_compile, x86_functions
from _gaussian_augment_cases import CASES, assert_matches, available_backends, call, expected
from _support import fast_backend_cases, record_calls, reference_comparison_cases, require_backend

import nemesis_fast as nf
from nemesis_fast import triton as nf_triton
from nemesis_fast._backends.gaussian_augment import BACKENDS
from nemesis_fast.parallel.workers import usable_cores
from nemesis_fast.reference.gaussian_augment import box_muller, philox4x32

VERSUS_REFERENCE = reference_comparison_cases()  # (torch on the CPU would compare the reference with itself)


def inputs(device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Odd shapes (features not a multiple of 4), a layout that is not contiguous, a 1-D batch, empty ones."""
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(5, 3, 7, 5, generator=generator)
    cases = {
        "odd": base,
        "multiple_of_4": torch.rand(3, 8, generator=generator),
        "transposed": base.transpose(1, 3),
        "one_feature": torch.rand(6, generator=generator),
        "empty_batch": torch.empty(0, 3, 2),
        "no_features": torch.empty(3, 0),
    }
    if dtype == torch.uint8:
        return {k: (v * 255).round().to(torch.uint8).to(device) for k, v in cases.items()}
    return {k: v.to(device=device, dtype=dtype) for k, v in cases.items()}


# (input dtype, out_dtype) pairs, on every backend (bfloat16 under Triton's CPU interpreter too: the kernel rounds
# its casts to bfloat16 itself there, where the interpreter's truncate)
DTYPE_PAIRS = [
    (torch.float32, None),
    (torch.float64, None),
    (torch.float16, None),
    (torch.bfloat16, None),
    (torch.uint8, None),
    (torch.uint8, torch.bfloat16),
    (torch.uint8, torch.float16),
    (torch.float32, torch.float64),
    (torch.float64, torch.float32),
    (torch.float16, torch.float32),
]


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_matches_reference(backend, device):
    require_backend(BACKENDS, backend, device)
    for dtype, out_dtype in DTYPE_PAIRS:
        for x in inputs(device, dtype).values():
            for kwargs in (
                {},
                {"copies": 2, "sigma": 1.0, "clip_min": None, "clip_max": None, "include_original": False},
                {"copies": 1, "sigma": 0.0, "clip_min": None, "clip_max": 0.5, "seed": -3},
                {"copies": 0},
            ):
                kwargs = {**kwargs, "out_dtype": out_dtype}
                actual = call(backend, x, **kwargs)
                assert actual.device.type == device and actual.is_contiguous()
                assert_matches(actual.cpu(), expected(x.cpu(), **kwargs))


def test_the_torch_backend_runs_the_reference(monkeypatch):
    """What the comparisons with the reference leave out for backend "torch" on the CPU: that it is the reference.
    The public op draws the reference's noise for it, and not for the native kernel."""
    require_backend(BACKENDS, "native", "cpu")
    drawn = record_calls(monkeypatch, "nemesis_fast.reference.gaussian_augment", "noise")
    x = torch.rand(2, 3)
    nf.gaussian_augment(x, 2, seed=1, backend="native")
    assert not drawn
    nf.gaussian_augment(x, 2, seed=1, backend="torch")
    assert len(drawn) == 1 and drawn[0][:3] == (1, 2, 2)  # (seed, copies, batch)


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_large_seeds_and_offsets(backend, device):
    """Seeds beyond 32 bits and negative ones, offsets beyond 2**32: every counter and key word is used."""
    require_backend(BACKENDS, backend, device)
    x = torch.rand(3, 10, device=device)
    for seed, offset in ((2**40 + 3, 2**33 - 2), (-(2**63), 2**62), (2**63 - 1, 0)):
        kwargs = {"sigma": 1.0, "clip_min": None, "clip_max": None, "seed": seed, "offset": offset}
        assert_matches(call(backend, x, **kwargs).cpu(), expected(x.cpu(), **kwargs))


# (seed, global sample index, feature) where the noise is exactly zero, of either sign: on an angle that is a
# multiple of pi / 2 (where cos or sin is 0), or a radius of 0 (both of the pair; found with the native kernel and
# checked against the reference).
ZERO_NOISE = ((3, 3979, 384), (3, 3979, 385), (4, 709, 764), (5, 968, 75), (12, 376, 22), (20, 418, 4))


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_zero_noise_keeps_the_sign_of_zero(backend, device):
    """Where the noise is exactly 0, -0.0 + sigma * noise is -0.0 or +0.0 by the noise's sign: each backend gives
    the reference's sign, so its noise is the reference's even in the sign of a zero (Triton 3.6 negated a float
    as 0 - x, which is +0 where the reference's -x is -0)."""
    require_backend(BACKENDS, backend, device)
    signs = set()
    for seed, sample, feature in ZERO_NOISE:
        x = torch.full((1, 1024), -0.0, device=device)
        kwargs = {"copies": 1, "sigma": 1.0, "clip_min": None, "clip_max": None, "include_original": False}
        kwargs |= {"seed": seed, "offset": sample}
        got, wanted = call(backend, x, **kwargs).cpu(), expected(x.cpu(), **kwargs)
        assert wanted[0, feature] == 0, (seed, sample, feature)
        signs.add(bool(torch.signbit(wanted[0, feature])))
        assert_matches(got, wanted)
    assert signs == {False, True}


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_zero_sigma_draws_no_noise(backend, device):
    """With sigma = 0 the copies are the clipped originals, on every backend: -0.0 stays -0.0 (adding 0 * noise
    would make it +0.0 where the noise is positive)."""
    require_backend(BACKENDS, backend, device)
    x = torch.tensor([[-0.0, 0.0, -0.0, 0.25, -0.5, 2.0]], device=device)
    for clip in ((None, None), (-0.25, 1.0)):
        kwargs = {"copies": 3, "sigma": 0.0, "clip_min": clip[0], "clip_max": clip[1], "seed": 4}
        got, wanted = call(backend, x, **kwargs).cpu(), expected(x.cpu(), **kwargs)
        assert_matches(got, wanted)
        clipped = x.cpu() if clip == (None, None) else x.cpu().clamp(*clip)
        assert torch.equal(torch.signbit(wanted), torch.signbit(clipped.repeat(4, 1)))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_backends_agree_for_the_same_seed(device):
    """Raw noise (sigma = 1, x = 0, no clipping) identical on every backend, and across devices."""
    x = torch.zeros(4, 3, 11, device=device)
    kwargs = {"copies": 3, "sigma": 1.0, "clip_min": None, "clip_max": None, "seed": 12345, "offset": 99}
    results = {b: call(b, x, **kwargs).cpu() for b in available_backends(device)}
    if device == "cuda":
        results["native-cpu"] = call("native", x.cpu(), **kwargs)
    assert len(results) >= 2, results.keys()
    first = next(iter(results.values()))
    assert first[4:].abs().max() > 1  # the noise is there
    for name, result in results.items():
        assert torch.equal(result, first), name


@pytest.mark.parametrize("backend,device", fast_backend_cases(reference=False))
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_exact_at_scale(backend, device, dtype):
    """64 CIFAR-sized images x (10 + 1), seed 1, with and without clipping: 2.2 million values equal to the
    reference's. (Multiply-adds fused by a compiler made 1 value in 12 differ by an ulp here, and the reference's
    own square root did on AVX-512 CPUs.)"""
    require_backend(BACKENDS, backend, device)
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if dtype == torch.uint8:
        x = (x * 255).round().to(torch.uint8)
    for clip in ((None, None), (0.0, 1.0)):
        kwargs = {"copies": 10, "sigma": 0.3, "clip_min": clip[0], "clip_max": clip[1], "seed": 1}
        assert torch.equal(call(backend, x.to(device), **kwargs).cpu(), expected(x, **kwargs)), clip


@pytest.mark.parametrize("backend,device", CASES)
def test_noise_does_not_depend_on_how_the_batch_is_split(backend, device):
    require_backend(BACKENDS, backend, device)
    x = torch.rand(7, 2, 9, device=device)
    rows = 4  # originals and 3 copies
    whole = call(backend, x, offset=1000).view(rows, 7, 2, 9)
    for cut in (1, 3, 6):
        first = call(backend, x[:cut], offset=1000).view(rows, cut, 2, 9)
        second = call(backend, x[cut:], offset=1000 + cut).view(rows, 7 - cut, 2, 9)
        assert torch.equal(torch.cat([first, second], dim=1), whole), cut


def test_native_cpu_result_does_not_depend_on_threads():
    require_backend(BACKENDS, "native", "cpu")
    x = torch.rand(64, 3, 33)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = call("native", x, copies=5)
        torch.set_num_threads(max(2, threads))
        many = call("native", x, copies=5)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


SIMD_CHECKSUM = (
    "import hashlib\n"
    "x = torch.linspace(0, 1, 3 * 301).view(3, 301)\n"
    "out = nf.gaussian_augment(x, 4, 1.0, None, seed=77, offset=5, backend='native')\n"
    "checksum = hashlib.sha256(out.view(torch.int32).numpy().tobytes()).hexdigest()\n"
)


def test_native_cpu_simd_widths_agree():
    """The AVX-512, AVX2 and scalar Philox loops give the same bits, in the same places (NEMESIS_FAST_CPU_SIMD caps
    the width): a hash of every value, which sees noise drawn in another order (a sum of the values did not)."""
    require_backend(BACKENDS, "native", "cpu")
    namespace = {"torch": torch, "nf": nf}
    exec(SIMD_CHECKSUM, namespace)
    script = "import torch, nemesis_fast as nf\n" + SIMD_CHECKSUM + "print(checksum)\n"
    for simd in ("avx2", "scalar"):
        env = {**os.environ, "NEMESIS_FAST_CPU_SIMD": simd}
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == namespace["checksum"], simd


def test_philox_known_answers():
    """Philox4x32-10 test vectors of its authors (Random123's kat_vectors)."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for counter, key, answer in cases:
        assert tuple(int(w) for w in philox4x32(counter, key)) == answer


def test_reference_box_muller_is_accurate():
    """The float32 polynomials against float64 Box-Muller, over random words and the extreme radii."""
    generator = torch.Generator().manual_seed(1)
    words = torch.randint(0, 2**32, (2, 100_000), generator=generator, dtype=torch.int64)
    words[0, :2] = torch.tensor([0, 2**32 - 1])  # the largest and the zero radius
    z_cos, z_sin = box_muller(words[0], words[1])
    u = ((words[0] >> 8) + 1).double() * 2.0**-24
    angle = 2 * math.pi * (words[1] >> 8).double() * 2.0**-24
    radius = torch.sqrt(-2 * torch.log(u))
    torch.testing.assert_close(z_cos.double(), radius * torch.cos(angle), rtol=0, atol=2e-6)
    torch.testing.assert_close(z_sin.double(), radius * torch.sin(angle), rtol=0, atol=2e-6)
    assert z_cos[1] == 0 and z_sin[1] == 0


# The compiled code: no fused multiply-add anywhere in the noise path, 64-bit row counts in Triton.


def test_native_cpu_noise_has_no_fused_multiply_add():
    """objdump of the built extension: no x86 FMA instruction in any gaussian_augment function, among them the
    AVX-512 and AVX2 clones of the Box-Muller loop (68 vfmadd in the AVX-512 clone before -ffp-contract=off)."""
    require_backend(BACKENDS, "native", "cpu")
    if platform.machine() != "x86_64" or shutil.which("objdump") is None:
        pytest.skip("needs an x86-64 build and GNU objdump")
    functions = {
        name: code
        for name, code in x86_functions(importlib.import_module("nemesis_fast._C").__file__).items()
        if "nemesis_fast::gaussian_augment::" in name
    }
    assert any("box_muller_span" in name and "avx512f" in name for name in functions), sorted(functions)[:20]
    for name, code in functions.items():
        fused = [i for i in code if X86_FMA.match(i.split()[0])]
        assert not fused, (name, fused[:5])
    # ... and the Box-Muller loop is vectorised: its AVX2 and AVX-512 clones multiply whole ymm / zmm registers
    # (before -fno-trapping-math let GCC if-convert the loop, the AVX2 clone was scalar vmulss code, 4.3x slower).
    for clone, register in (("avx2", "%ymm"), ("avx512f", "%zmm")):
        (code,) = [code for name, code in functions.items() if "box_muller_span" in name and f"clone .{clone}]" in name]
        assert any(i.startswith("vmulps") and register in i for i in code), (clone, code[:40])
    assert X86_FMA.match("vfmadd231ps") and X86_FMA.match("vfnmsub132sd") and not X86_FMA.match("vmulps")


@pytest.mark.slow
def test_cuda_noise_kernel_has_no_fused_multiply_add(tmp_path):
    """nvcc compiles the CUDA kernel to PTX for sm_90 (as the build does, without a GPU): in every instantiation of
    the kernel, no fma and no multiply or add left without its rounding mode, which ptxas could fuse."""
    ptx = tmp_path / "gaussian_augment.ptx"
    source = Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "gaussian_augment.cu"
    nvcc_compile(source, ptx, "-ptx", "-arch=compute_90")
    kernels = re.split(r"\n(?=(?:\.visible )?\.entry )", ptx.read_text())[1:]
    kernels = [k for k in kernels if "augment_kernel" in k.split("(", 1)[0]]
    assert len(kernels) == 5 * 4, len(kernels)  # input dtypes x output dtypes
    for kernel in kernels:
        name = kernel.split("(", 1)[0]
        assert not PTX_FMA.findall(kernel), name
        assert not PTX_UNROUNDED.findall(kernel), (name, sorted(set(PTX_UNROUNDED.findall(kernel))))
        assert re.search(r"\bmul\.rn\.f32\b", kernel), name  # the noise is there


ROW_STRIDE_PAST_INT32 = (
    "import torch, nemesis_fast\n"
    "x = torch.full((1, 2**31 + 8), 255, dtype=torch.uint8)\n"
    "out = torch.ops.nemesis_fast.gaussian_augment(x, 1, 0.0, None, None, True, 0, 0, torch.float16)\n"
    "assert out.shape == (2, 2**31 + 8), out.shape\n"
    "seen = torch.cat([out[:, :9], out[:, 2**31 - 9 :], out[:, ::65537]], dim=1)\n"
    "assert torch.equal(seen, torch.ones_like(seen)), seen.unique()\n"
)


def available_memory() -> int:
    """Bytes of memory available to a new process (MemAvailable), 0 where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
def test_native_cpu_rows_past_2_31_elements_apart():
    """One sample of 2**31 + 8 features: the original and its copy are 2**31 + 8 elements apart in the output, a
    distance that wraps negative in int32 (the copy would be written 4 GiB before the output). uint8 input (2 GiB)
    to float16 output (8 GiB), sigma = 0: every value is 255 / 255 = 1. In a child process, which a wild write may
    kill. Skipped where 14 GiB of memory are not available, and on fewer than 8 cores unless asked for."""
    require_backend(BACKENDS, "native", "cpu")
    if available_memory() < 14 * 2**30:
        pytest.skip("needs 14 GiB of available memory (10 GiB of tensors, and room for the rest)")
    if usable_cores() < 8 and os.environ.get("NEMESIS_FAST_LARGE_TESTS") != "1":
        pytest.skip("15-30 s on 2 cores: runs on 8 or more, or with NEMESIS_FAST_LARGE_TESTS=1")
    run = subprocess.run([sys.executable, "-c", ROW_STRIDE_PAST_INT32], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])


@pytest.mark.triton
def test_triton_row_count_is_64_bit():
    """copies = 2**31 - 1 (an int32 argument) plus the original is 2**31 rows, not a negative count that would
    leave the output unwritten; checked on the kernel's own helper, with no 8 GiB output."""
    if not nf_triton.AVAILABLE or not (nf_triton.INTERPRET or torch.cuda.is_available()):
        pytest.skip("needs Triton on a GPU or under TRITON_INTERPRET=1")
    from row_count_probe import row_count

    device = "cuda" if torch.cuda.is_available() and not nf_triton.INTERPRET else "cpu"
    assert row_count(2**31 - 1, 1, device) == 2**31
    assert row_count(2**31 - 1, 0, device) == 2**31 - 1
    assert row_count(5, 1, device) == 6


@pytest.mark.triton
def test_triton_box_muller_at_its_boundaries():
    """The Triton kernel's Box-Muller on chosen words, bit for bit against the reference: radius words at u = 2**-24
    and 1 and where the logarithm's range reduction switches (u = float32(sqrt(1/2)), whose f is sqrt 2 itself, and
    its neighbours), angle words at the edges of every quadrant; the 8 low bits, which are not used, set or not.
    Random words rarely meet these (the range reduction's edge is 1 radius in 2**24)."""
    if not nf_triton.AVAILABLE or not (nf_triton.INTERPRET or torch.cuda.is_available()):
        pytest.skip("needs Triton on a GPU or under TRITON_INTERPRET=1")
    from box_muller_probe import box_muller as triton_box_muller

    device = "cuda" if torch.cuda.is_available() and not nf_triton.INTERPRET else "cpu"
    edge = 0xB504F2  # (edge + 1) * 2**-24 = float32(sqrt(1/2)): f = sqrt 2 exactly
    radius = [0, 1, edge - 1, edge, edge + 1, 0x7FFFFF, 0x800000, 0xFFFFFF]
    angle = [0, 1, 0xFFFFFF] + [q * (1 << 21) + d for q in (1, 3, 5, 7) for d in (-1, 0)]
    pairs = [(r << 8 | low, a << 8 | low) for r in radius for a in angle for low in (0, 0xFF)]
    radius_words, angle_words = zip(*pairs)
    z_cos, z_sin = triton_box_muller(list(radius_words), list(angle_words), device)
    wanted_cos, wanted_sin = box_muller(torch.tensor(radius_words), torch.tensor(angle_words))
    assert_matches(z_cos, wanted_cos)
    assert_matches(z_sin, wanted_sin)


@pytest.mark.triton
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_triton_programs_that_write_several_rows(device, monkeypatch):
    """The Triton kernel splits the rows over a second grid axis until there are about TARGET_PROGRAMS programs,
    program r writing rows r, r + split, ...: with the default target a small input gives every row its own program,
    so the target is lowered here (3 programs for 8 rows)."""
    require_backend(BACKENDS, "triton", device)
    monkeypatch.setattr("nemesis_fast.triton.gaussian_augment.TARGET_PROGRAMS", 3)
    x = torch.rand(3, 5, generator=torch.Generator().manual_seed(2))
    for include_original in (True, False):
        kwargs = {"copies": 8 - include_original, "include_original": include_original, "seed": 9}
        assert_matches(call("triton", x.to(device), **kwargs).cpu(), expected(x, **kwargs))


@pytest.mark.triton
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_triton_whole_groups_of_four_move_as_vectors(device, monkeypatch):
    """Features a multiple of 4 launch the kernel with VEC = 4 (the variant that test_triton_compile.py sees move
    float32 data 16 bytes at a time); other feature counts with VEC = 1."""
    require_backend(BACKENDS, "triton", device)
    from nemesis_fast.triton import gaussian_augment as triton_gaussian_augment

    widths = []

    def launch(kernel, grid, *args, **kwargs):
        widths.append(kwargs["VEC"])
        return original(kernel, grid, *args, **kwargs)

    original = triton_gaussian_augment.launch
    monkeypatch.setattr(triton_gaussian_augment, "launch", launch)
    for features in (8, 6, 4, 1):
        x = torch.rand(2, features, generator=torch.Generator().manual_seed(features))
        assert_matches(call("triton", x.to(device), copies=1).cpu(), expected(x, copies=1))
    assert widths == [4, 1, 4, 1]


@pytest.mark.triton
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_triton_writes_nothing_past_the_output(device, monkeypatch):
    """The Triton op given an output with room after it: 5 features leave each sample's last group of 4 with 3 lanes
    past its features (on the last sample of the last row, past the output's end), which write nothing."""
    require_backend(BACKENDS, "triton", device)
    from nemesis_fast.triton import gaussian_augment as triton_gaussian_augment

    spare, sentinel, buffers = 16, 7.0, []

    def empty_output(*args):
        out = original(*args)
        buffers.append(torch.full((out.numel() + spare,), sentinel, dtype=out.dtype, device=out.device))
        return buffers[-1][: out.numel()].view(out.shape)

    original = triton_gaussian_augment.empty_output
    monkeypatch.setattr(triton_gaussian_augment, "empty_output", empty_output)
    x = torch.rand(3, 5, generator=torch.Generator().manual_seed(5))
    out = call("triton", x.to(device), copies=2)
    assert_matches(out.cpu(), expected(x, copies=2))
    (buffer,) = buffers
    assert (buffer[out.numel() :] == sentinel).all(), buffer[out.numel() :].tolist()
