"""gaussian_augment on every backend against the reference, reproducibility of its noise (across backends,
threads, SIMD widths and batch splits), the statistics of the noise, clipping, uint8 input, opcheck,
torch.compile, and bad input."""

from __future__ import annotations

import glob
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
from _compiled import PTX_FMA, PTX_UNROUNDED, X86_FMA, nvidia_tool, x86_functions
from _support import backend_device_cases, fast_backend_cases, require_backend
from scipy import stats
from torch.utils import cpp_extension

import nemesis_fast as nf
from nemesis_fast import reference
from nemesis_fast import triton as nf_triton
from nemesis_fast._backends.gaussian_augment import BACKENDS, NO_GRADIENT
from nemesis_fast.reference.gaussian_augment import box_muller, philox4x32

CASES = backend_device_cases()
OP_ARGS = ("copies", "sigma", "clip_min", "clip_max", "include_original", "seed", "offset", "out_dtype")


def op_for(backend: str):
    """The op a backend runs, called with the op's positional arguments."""
    return {"native": BACKENDS.native, "triton": BACKENDS.triton, "torch": BACKENDS.torch}[backend]


def call(backend: str, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The op of `backend` with defaults for the arguments not given."""
    args = {"copies": 3, "sigma": 0.5, "clip_min": 0.0, "clip_max": 1.0, "include_original": True, "seed": 7}
    args.update({"offset": 0, "out_dtype": None}, **kwargs)
    return op_for(backend)(x, *(args[name] for name in OP_ARGS))


def expected(x: torch.Tensor, **kwargs) -> torch.Tensor:
    args = {"copies": 3, "sigma": 0.5, "clip_min": 0.0, "clip_max": 1.0, "include_original": True, "seed": 7}
    args.update({"offset": 0, "out_dtype": None}, **kwargs)
    return reference.gaussian_augment(x, *(args[name] for name in OP_ARGS))


def assert_matches(actual: torch.Tensor, wanted: torch.Tensor) -> None:
    """Same shape, dtype and values, bit for bit (NaN where NaN): the noise is exact on every backend."""
    assert actual.shape == wanted.shape and actual.dtype == wanted.dtype
    torch.testing.assert_close(actual, wanted, rtol=0, atol=0, equal_nan=True)


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


def dtype_pairs(backend: str, device: str) -> list[tuple[torch.dtype, torch.dtype | None]]:
    """(input dtype, out_dtype) pairs; Triton's CPU interpreter has no bfloat16 arithmetic."""
    pairs = [
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
    if backend == "triton" and device == "cpu":
        pairs = [p for p in pairs if torch.bfloat16 not in p]
    return pairs


@pytest.mark.parametrize("backend,device", CASES)
def test_matches_reference(backend, device):
    require_backend(BACKENDS, backend, device)
    for dtype, out_dtype in dtype_pairs(backend, device):
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


@pytest.mark.parametrize("backend,device", CASES)
def test_large_seeds_and_offsets(backend, device):
    """Seeds beyond 32 bits and negative ones, offsets beyond 2**32: every counter and key word is used."""
    require_backend(BACKENDS, backend, device)
    x = torch.rand(3, 10, device=device)
    for seed, offset in ((2**40 + 3, 2**33 - 2), (-(2**63), 2**62), (2**63 - 1, 0)):
        kwargs = {"sigma": 1.0, "clip_min": None, "clip_max": None, "seed": seed, "offset": offset}
        assert_matches(call(backend, x, **kwargs).cpu(), expected(x.cpu(), **kwargs))


def available_backends(device: str) -> list[str]:
    return [b for b in ("native", "triton", "torch") if BACKENDS.unavailable_reason(b, device) is None]


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
    "x = torch.linspace(0, 1, 3 * 301).view(3, 301)\n"
    "out = nf.gaussian_augment(x, 4, 1.0, None, seed=77, offset=5, backend='native').double()\n"
    "checksum = repr((out.sum().item(), out.abs().sum().item(), out[-1, -1].item()))\n"
)


def test_native_cpu_simd_widths_agree():
    """The AVX-512, AVX2 and scalar Philox loops give the same numbers (NEMESIS_FAST_CPU_SIMD caps the width)."""
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


def raw_noise(backend: str = "native", device: str = "cpu", copies: int = 8, batch: int = 64, features: int = 256):
    """Noise before clipping, (copies, batch, features), from x = 0 and sigma = 1."""
    x = torch.zeros(batch, features, device=device)
    out = call(backend, x, copies=copies, sigma=1.0, clip_min=None, clip_max=None, include_original=False)
    return out.view(copies, batch, features).double().cpu()


def test_noise_statistics():
    require_backend(BACKENDS, "native", "cpu")
    z = raw_noise()
    n = z.numel()
    assert abs(z.mean().item()) < 4 / math.sqrt(n)
    assert abs(z.std().item() - 1) < 4 / math.sqrt(2 * n)
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    assert z.abs().max().item() <= math.sqrt(48 * math.log(2)) + 1e-5
    # Each of the four words of a Philox call feeds its own normal: check every position within a group too.
    for j in range(4):
        assert stats.kstest(z[..., j::4].flatten().numpy(), "norm").pvalue > 1e-4, j

    def uncorrelated(a: torch.Tensor, b: torch.Tensor) -> None:
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(r) < 4.5 / math.sqrt(a.numel()), r

    uncorrelated(z[0], z[1])  # copies
    uncorrelated(z[:, :-1], z[:, 1:])  # samples
    uncorrelated(z[..., :-1], z[..., 1:])  # neighbouring features (the two normals of one Box-Muller pair too)
    uncorrelated(z[..., :-4], z[..., 4:])  # the same word of neighbouring Philox calls
    uncorrelated(z[..., 0::2] ** 2, z[..., 1::2] ** 2)  # a Box-Muller pair shares its radius: not in its squares


@pytest.mark.parametrize("backend,device", CASES)
def test_noise_statistics_on_every_backend(backend, device):
    """A smaller sample per backend: same law (the exact values are covered by the reference tests)."""
    require_backend(BACKENDS, backend, device)
    z = raw_noise(backend, device, copies=2, batch=8, features=256)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("backend,device", CASES)
def test_clipping(backend, device):
    require_backend(BACKENDS, backend, device)
    x = torch.full((16, 64), 0.5, device=device)
    x[0, :3] = torch.tensor([-1.0, 2.0, float("nan")])
    out = call(backend, x, copies=4, sigma=0.5, clip_min=0.0, clip_max=1.0).cpu()
    finite = out[~out.isnan()]
    assert finite.min() >= 0 and finite.max() <= 1
    assert out[0, :2].tolist() == [0.0, 1.0]  # originals are clipped too
    assert out.view(5, 16, 64)[:, 0, 2].isnan().all()  # NaN propagates, into every copy
    noisy = out[16:].flatten()[~out[16:].flatten().isnan()]
    at_bound = (noisy == 1.0).double().mean().item()
    assert abs(at_bound - stats.norm.sf(1.0)) < 0.03  # P(0.5 + 0.5 z > 1) = P(z > 1)
    one_sided = call(backend, x.nan_to_num(0.5), copies=2, sigma=2.0, clip_min=None, clip_max=0.6).cpu()
    assert one_sided.max() == pytest.approx(0.6) and one_sided.min() < -1


@pytest.mark.parametrize("backend,device", CASES)
def test_float64_to_float16_rounds_through_float32(backend, device):
    """float64 results are rounded to 16 bits through float32, as torch's casts do: 1 + 2**-11 + 2**-40 rounds
    to 1 + 2**-11 in float32, a tie that goes to 1.0 in float16 (a direct rounding would give 1 + 2**-10)."""
    require_backend(BACKENDS, backend, device)
    x = torch.full((2, 4), 1 + 2**-11 + 2**-40, dtype=torch.float64, device=device)
    out = call(backend, x, copies=1, sigma=0.0, clip_min=None, clip_max=None, out_dtype=torch.float16)
    assert torch.equal(out, torch.ones(4, 4, dtype=torch.float16, device=device))


@pytest.mark.parametrize("backend,device", CASES)
def test_uint8_input_is_scaled_to_the_unit_interval(backend, device):
    require_backend(BACKENDS, backend, device)
    x = torch.randint(0, 256, (4, 3, 5), dtype=torch.uint8, device=device)
    out = call(backend, x, sigma=0.2)
    assert out.dtype == torch.float32
    assert_matches(out, call(backend, x.float() / 255, sigma=0.2))
    assert torch.equal(out[:4], x.float() / 255)
    if not (backend == "triton" and device == "cpu"):
        half = call(backend, x, sigma=0.2, out_dtype=torch.bfloat16)
        assert torch.equal(half, out.to(torch.bfloat16))


def test_public_function_defaults_and_seed():
    x = torch.rand(3, 4)
    out = nf.gaussian_augment(x, seed=0)
    assert out.shape == (33, 4) and torch.equal(out[:3], x)
    torch.manual_seed(1234)
    a = nf.gaussian_augment(x)
    b = nf.gaussian_augment(x)
    torch.manual_seed(1234)
    again = nf.gaussian_augment(x)
    assert torch.equal(a, again) and not torch.equal(a, b)
    assert torch.equal(
        nf.gaussian_augment(x, 2, 0.3, None, seed=2**64 - 1), nf.gaussian_augment(x, 2, 0.3, None, seed=-1)
    )
    for backend in available_backends("cpu"):
        out = nf.gaussian_augment(x, 2, 0.1, (0.2, None), include_original=False, seed=5, backend=backend)
        assert out.shape == (6, 4) and out.min() >= 0.2


@pytest.mark.parametrize("backend,device", CASES)
def test_backward_says_there_is_no_gradient(backend, device):
    require_backend(BACKENDS, backend, device)
    x = torch.rand(2, 5, device=device, requires_grad=True)
    out = nf.gaussian_augment(x, 2, seed=3, backend=backend)
    assert out.requires_grad
    with pytest.raises(RuntimeError, match="no gradient; pass x.detach"):
        out.sum().backward()
    assert not nf.gaussian_augment(x.detach(), 2, seed=3, backend=backend).requires_grad
    assert NO_GRADIENT.startswith("gaussian_augment")


OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
# Triton's interpreter runs kernels as Python, which AOTAutograd cannot trace; on a GPU all checks run.
# With requires_grad inputs, AOTAutograd would trace the backward, which raises by design.
OPCHECK_NO_AOT = OPCHECK_ALL[:3]


@pytest.mark.parametrize("backend,device", [c for c in CASES if c.values[0] != "torch"])
def test_opcheck(backend, device):
    require_backend(BACKENDS, backend, device)
    op = op_for(backend)
    interpreted = (backend, device) == ("triton", "cpu")
    for requires_grad in (False, True):
        checks = OPCHECK_NO_AOT if interpreted or requires_grad else OPCHECK_ALL
        x = torch.rand(3, 2, 5, device=device, requires_grad=requires_grad)
        for args in (
            (x, 2, 0.3, 0.0, 1.0, True, 11, 4, None),
            (x.transpose(1, 2), 1, 0.0, None, 0.5, False, -2, 0, torch.float64),
            (x.detach()[:0], 3, 0.3, None, None, True, 1, 0, None),
        ):
            torch.library.opcheck(op, args, test_utils=checks)
        u8 = torch.randint(0, 255, (2, 6), dtype=torch.uint8, device=device)
        torch.library.opcheck(op, (u8, 2, 0.1, 0.0, 1.0, True, 3, 0, torch.float16), test_utils=checks)


@pytest.mark.parametrize("backend,device", fast_backend_cases(reference=False))
def test_torch_compile_fullgraph(backend, device, monkeypatch):
    require_backend(BACKENDS, backend, device)
    torch._dynamo.reset()
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", backend)

    def augment_and_normalise(x, offset):
        return (nf.gaussian_augment(x * 0.5, 3, 0.2, seed=21, offset=offset) - 0.5) * 2.0

    compiled = torch.compile(augment_and_normalise, fullgraph=True)
    x = torch.rand(6, 3, 4, 4, device=device)
    torch.testing.assert_close(compiled(x, 5), augment_and_normalise(x, 5))
    torch.testing.assert_close(compiled(x, 6), (expected(x * 0.5, sigma=0.2, seed=21, offset=6) - 0.5) * 2.0)
    # The op alone, compiled: the same bits as the reference (the launch options survive tracing).
    augment = torch.compile(lambda v: nf.gaussian_augment(v, 3, 0.2, None, seed=21, offset=6), fullgraph=True)
    assert torch.equal(augment(x).cpu(), expected(x.cpu(), sigma=0.2, clip_min=None, clip_max=None, seed=21, offset=6))

    with pytest.raises(Exception, match="explicit seed"):
        torch.compile(lambda v: nf.gaussian_augment(v, 2), fullgraph=True)(x)


BAD_CALLS = [
    ({"copies": -1}, ValueError, "copies must be >= 0"),
    ({"copies": 2.0}, TypeError, "copies must be an int"),
    ({"sigma": -0.1}, ValueError, "sigma must be >= 0"),
    ({"sigma": float("nan")}, ValueError, "sigma must be finite"),
    ({"sigma": float("inf")}, ValueError, "sigma must be finite"),
    ({"sigma": 1e39}, ValueError, "sigma must be finite in float32"),
    ({"clip": (1.0, 0.0)}, ValueError, "clip must have low <= high"),
    ({"clip": (0.0, float("nan"))}, ValueError, r"clip\[1\] must be finite"),
    ({"clip": 1.0}, TypeError, "clip must be None or a pair"),
    ({"out_dtype": torch.uint8}, TypeError, "out_dtype=uint8 cannot hold noisy values"),
    ({"out_dtype": torch.int32}, TypeError, "out_dtype=int32 cannot hold"),
    ({"out_dtype": "float32"}, TypeError, "out_dtype must be a torch.dtype"),
    ({"out_dtype": torch.float16, "clip": (0.0, 1e6)}, ValueError, "out_dtype=float16 cannot hold clip_max"),
    ({"offset": -1}, ValueError, "offset must be >= 0"),
    ({"seed": 2**64}, ValueError, "seed must be <="),
    ({"seed": 1.5}, TypeError, "seed must be an int"),
    ({"backend": "gpu"}, ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD_CALLS)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nf.gaussian_augment(torch.rand(2, 3), **kwargs)


@pytest.mark.parametrize(
    "x,error,match",
    [
        (torch.ones(3, dtype=torch.int32), TypeError, "x must have dtype"),
        (torch.ones(3, dtype=torch.bool), TypeError, "x must have dtype"),
        (torch.ones(3, dtype=torch.complex64), TypeError, "x must have dtype"),
        (torch.tensor(0.5), ValueError, "x must have at least 1 dimension"),
        ([0.5], TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_input_tensor(x, error, match):
    with pytest.raises(error, match=match):
        nf.gaussian_augment(x)


@pytest.mark.parametrize("backend", ["native", pytest.param("triton", marks=pytest.mark.triton)])
def test_direct_op_calls_check_their_arguments(backend):
    require_backend(BACKENDS, backend, "cpu")
    x = torch.rand(2, 3)
    good = {"copies": 1, "sigma": 0.1, "clip_min": 0.0, "clip_max": 1.0, "seed": 0}
    for kwargs, error, name in [
        ({"copies": -1}, ValueError, "copies"),
        ({"sigma": -1.0}, ValueError, "sigma"),
        ({"sigma": float("nan")}, ValueError, "sigma"),
        ({"clip_min": 2.0}, ValueError, "clip_min"),
        ({"clip_max": float("inf")}, ValueError, "clip_max"),
        ({"offset": -5}, ValueError, "offset"),
        ({"out_dtype": torch.int64}, TypeError, "out_dtype"),
    ]:
        with pytest.raises(error, match=name):
            call(backend, x, **{**good, **kwargs})
    with pytest.raises(TypeError, match="x must"):
        call(backend, x.to(torch.int16), **good)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        call(backend, torch.tensor(1.0), **good)


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
    assert X86_FMA.match("vfmadd231ps") and X86_FMA.match("vfnmsub132sd") and not X86_FMA.match("vmulps")


@pytest.mark.slow
def test_cuda_noise_kernel_has_no_fused_multiply_add(tmp_path):
    """nvcc compiles the CUDA kernel to PTX for sm_90 (as the build does, without a GPU): in every instantiation of
    the kernel, no fma and no multiply or add left without its rounding mode, which ptxas could fuse."""
    nvcc = nvidia_tool("nvcc")
    if torch.version.cuda is None or nvcc is None:
        pytest.skip("needs a CUDA build of torch and nvcc")
    ptx = tmp_path / "gaussian_augment.ptx"
    root = Path(__file__).resolve().parents[1]
    toolkit = Path(nvcc).resolve().parents[1]
    wheels = [Path(p) for p in glob.glob(str(Path(torch.__file__).parents[1] / "nvidia" / "*" / "include"))]
    includes = [root / "csrc", *map(Path, cpp_extension.include_paths()), toolkit / "include", *wheels]
    command = [nvcc, "-ptx", "-arch=compute_90", "-O3", "-std=c++20", "-o", str(ptx)]
    command += [*cpp_extension.COMMON_NVCC_FLAGS, "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"]
    command += [f"-I{path}" for path in includes] + [str(root / "csrc" / "cuda" / "gaussian_augment.cu")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    kernels = re.split(r"\n(?=(?:\.visible )?\.entry )", ptx.read_text())[1:]
    kernels = [k for k in kernels if "augment_kernel" in k.split("(", 1)[0]]
    assert len(kernels) == 5 * 4, len(kernels)  # input dtypes x output dtypes
    for kernel in kernels:
        name = kernel.split("(", 1)[0]
        assert not PTX_FMA.findall(kernel), name
        assert not PTX_UNROUNDED.findall(kernel), (name, sorted(set(PTX_UNROUNDED.findall(kernel))))
        assert re.search(r"\bmul\.rn\.f32\b", kernel), name  # the noise is there


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
