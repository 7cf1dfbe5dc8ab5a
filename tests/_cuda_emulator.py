"""The package's CUDA kernels run on the CPU: csrc/cuda/*.cu rewritten into host C++ against the emulator in
tests/cuda_emulator (see emu.h there), compiled with g++ and loaded as the ops nemesis_fast_emu::<op>, which take
CPU tensors and have the schemas of nemesis_fast::<op>.

The rewriting is textual and checked: every rule must match as often as the sources need it, so a change to the
.cu files that the emulator would silently miss fails the build instead."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import nemesis_fast  # noqa: F401  (loads nemesis_fast._C, whose schemas the emulated ops take)

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
EMULATOR = Path(__file__).resolve().parent / "cuda_emulator"
NAMESPACE = "nemesis_fast_emu"
KERNEL_FILES = ("bounded_relu", "gaussian_augment", "jsma_saliency_search")
OPS = (
    "bounded_relu",
    "bounded_relu_backward",
    "bounded_relu_masked",
    "bounded_relu_masked_backward",
    "gaussian_augment",
    "jsma_saliency_search",
)
ORDERS = {"forward": 0, "reverse": 1, "shuffled": 2}
# UBSan's alignment and array-bounds checks, reported by the emulator's own handlers (emu_ops.cpp), not its runtime.
SANITIZE = ["-fsanitize=alignment,bounds"]
# With this variable set, the build adds AddressSanitizer (for a process started with its runtime preloaded: see
# test_cuda_emulated_memory.py), which catches a kernel's accesses outside its tensors.
ADDRESS_SANITIZER = "NEMESIS_FAST_EMULATOR_ASAN"


@dataclass(frozen=True)
class Rule:
    """A regex substitution (re.subn's pattern and replacement)."""

    pattern: str
    replacement: str | Callable[[re.Match], str]


# (A launch split over lines keeps its line breaks, inside the argument list: errors name the .cu file's lines.)
LAUNCH = Rule(
    r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<([^;]*?)>>>\s*\(",
    lambda m: f"::emu::Launch({m[2]})({m[1]}, " + "\n" * m[0].count("\n"),
)
SHARED = Rule(
    r"__shared__\s+(?:__align__\((\d+)\)\s+)?([\w:]+)\s+(\w+)\[(\w+)\];",
    lambda m: f"EMU_SHARED({m[2]}, {m[3]}, [{m[4]}], {m[1] or 16});",
)
REGISTRATION = Rule(r"TORCH_LIBRARY_IMPL\(nemesis_fast, CUDA, m\)", f"TORCH_LIBRARY_IMPL({NAMESPACE}, CPU, m)")
DEVICE_INDEX = Rule(r"(\w+)\.device\(\)\.index\(\)", r"::emu::device_index(\1.device())")
EMPTY = Rule(r"\bat::(empty|empty_like)\(", r"::emu::\1(")

# How often each rule applies to each .cu file: the launches, shared arrays and device lookups they hold.
CU_RULES = {
    "bounded_relu": [(LAUNCH, 4), (SHARED, 0), (REGISTRATION, 1), (DEVICE_INDEX, 0), (EMPTY, 3)],
    "gaussian_augment": [(LAUNCH, 1), (SHARED, 0), (REGISTRATION, 1), (DEVICE_INDEX, 0), (EMPTY, 0)],
    "jsma_saliency_search": [(LAUNCH, 3), (SHARED, 6), (REGISTRATION, 1), (DEVICE_INDEX, 1), (EMPTY, 7)],
}


def rewrite(text: str, rules: list[tuple[Rule, int | None]], name: str) -> str:
    """`text` with each rule applied; a rule that applies other than `expected` times (unless None) fails."""
    for rule, expected in rules:
        text, applied = re.subn(rule.pattern, rule.replacement, text)
        if expected is not None and applied != expected:
            raise AssertionError(f"{name}: {rule.pattern!r} applied {applied} times, expected {expected}")
    return text


def emulated_sources(build: Path) -> list[Path]:
    """Writes the rewritten kernels (and the shared headers, whose at::empty calls fill too) under `build`."""
    build.mkdir(parents=True, exist_ok=True)
    for header in sorted(CSRC.glob("*.h")):
        _write(build / header.name, rewrite(header.read_text(), [(EMPTY, None)], header.name))
    sources = []
    for stem in KERNEL_FILES:
        text = rewrite((CSRC / "cuda" / f"{stem}.cu").read_text(), CU_RULES[stem], f"{stem}.cu")
        target = build / f"{stem}.emu.cpp"
        _write(target, f'#include "{EMULATOR / "emu.h"}"\n#line 1 "csrc/cuda/{stem}.cu"\n{text}')
        sources.append(target)
    return sources


def _write(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def _fingerprint() -> str:
    files = [*sorted(CSRC.glob("*.h")), *(CSRC / "cuda" / f"{s}.cu" for s in KERNEL_FILES)]
    files += sorted(p for p in EMULATOR.rglob("*") if p.is_file())
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(str(EMULATOR).encode())  # the rewritten sources name it: one build folder per checkout
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def load() -> object:
    """torch.ops.nemesis_fast_emu, built on first use (about a minute on 2 cores; cached under the temp folder)."""
    _library()
    return getattr(torch.ops, NAMESPACE)


@functools.cache
def _library() -> torch.library.Library:
    """Builds and loads the emulated kernels (they register under the CPU key in C++) and defines their schemas;
    the Library is cached because dropping it would remove the definitions."""
    from torch.utils.cpp_extension import load as load_extension

    asan = os.environ.get(ADDRESS_SANITIZER) == "1"
    variant = _fingerprint() + ("_asan" if asan else "")
    build = Path(tempfile.gettempdir()) / "nemesis_fast_cuda_emulator" / variant
    sources = [*emulated_sources(build / "src"), EMULATOR / "emu_ops.cpp"]
    (build / "obj").mkdir(parents=True, exist_ok=True)
    address = ["-fsanitize=address", "-fno-omit-frame-pointer"] if asan else []
    load_extension(
        name=f"nemesis_fast_cuda_emulator_{variant}",
        sources=[str(s) for s in sources],
        extra_include_paths=[str(EMULATOR / "include"), str(build / "src")],
        extra_cflags=["-O2", "-ffp-contract=off", "-Wno-unknown-pragmas", "-std=c++20", *SANITIZE, *address],
        extra_ldflags=address,
        build_directory=str(build / "obj"),
        is_python_module=False,
        verbose=False,
    )
    library = torch.library.Library(NAMESPACE, "FRAGMENT")
    for op in OPS:
        schema = str(getattr(torch.ops.nemesis_fast, op).default._schema)
        library.define(schema.removeprefix("nemesis_fast::"))
    return library


def configure(
    *,
    multiprocessors: int = 4,
    blocks_per_sm: int = 8,
    concurrent_blocks: int = 2,
    order: str = "forward",
    seed: int = 0,
    fill: int = 0x3C,
) -> None:
    """The emulated device and schedule for the launches that follow (see Config in cuda_emulator/threads.h)."""
    load().configure(multiprocessors, blocks_per_sm, concurrent_blocks, ORDERS[order], seed, fill)


def counters() -> dict[str, int]:
    """Launches, blocks, threads and fiber switches since the last configure()."""
    return dict(zip(("launches", "blocks", "threads", "switches"), load().counters()))
