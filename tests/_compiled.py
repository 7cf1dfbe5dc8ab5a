"""Reading compiled kernels without running them: nvcc for the CUDA sources, the NVIDIA binary tools (Triton bundles
cuobjdump and nvdisasm; a CUDA toolkit has them too) and GNU objdump for the CPU code."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

# Multiply-adds that a compiler makes by contracting a multiply and an add (PTX, x86).
PTX_FMA = re.compile(r"\bfma\.rn(\.ftz)?\.f(32|64)\b")
PTX_UNROUNDED = re.compile(r"\b(mul|add|sub)(\.ftz)?\.f(32|64)\b")  # no .rn: ptxas may fuse it into an FMA
X86_FMA = re.compile(r"\bv?f(n)?m(add|sub)(132|213|231)(ss|sd|ps|pd)\b")


def nvidia_tool(name: str) -> str | None:
    """The path of an NVIDIA binary tool (cuobjdump, nvdisasm, ptxas): Triton's copy, CUDA_HOME's, PATH's."""
    places = []
    try:
        import triton

        places.append(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)
    except ImportError:
        pass
    places += [Path(os.environ.get("CUDA_HOME", "/nonexistent")) / "bin" / name]
    places += [Path(p) / "bin" / name for p in sorted(glob.glob("/usr/local/cuda*"), reverse=True)]
    for place in places:
        if place.is_file() and os.access(place, os.X_OK):
            return str(place)
    return shutil.which(name)


def nvcc_compile(source: Path, output: Path, *arch: str) -> None:
    """nvcc compiles one of csrc/cuda/*.cu as the build does, to `output` (-ptx or -cubin, with `arch`: e.g.
    ("-ptx", "-arch=compute_90")). Skips the test without a CUDA build of torch or nvcc."""
    import torch
    from torch.utils import cpp_extension

    nvcc = nvidia_tool("nvcc")
    if torch.version.cuda is None or nvcc is None:
        import pytest

        pytest.skip("needs a CUDA build of torch and nvcc")
    toolkit = Path(nvcc).resolve().parents[1]
    wheels = [Path(p) for p in glob.glob(str(Path(torch.__file__).parents[1] / "nvidia" / "*" / "include"))]
    includes = [source.parents[1], *map(Path, cpp_extension.include_paths()), toolkit / "include", *wheels]
    command = [nvcc, *arch, "-O3", "-std=c++20", "-o", str(output)]
    command += [*cpp_extension.COMMON_NVCC_FLAGS, "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"]
    command += [f"-I{path}" for path in includes] + [str(source)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]


def run_tool(*command: str) -> str:
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{' '.join(command)} failed: {run.stderr[-2000:]}"
    return run.stdout


def _sections(listing: str, header: str) -> dict[str, list[str]]:
    """The lines of a tool's listing grouped under the headers that match `header` (its group 1 names the section;
    a repeated name continues its section); lines before the first header are dropped."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in listing.splitlines():
        match = re.match(header, line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return sections


def sass_by_function(binary: str | Path) -> dict[str, list[str]]:
    """SASS instructions of every kernel in a cubin, or in the fatbins of a shared library, by (mangled) name."""
    listing = run_tool(nvidia_tool("cuobjdump") or "cuobjdump", "-sass", str(binary))
    return {
        name: [
            re.sub(r"^@!?U?P\w+\s+", "", line.split("*/", 1)[1].split(";")[0].strip())  # without its predicate
            for line in lines
            if re.match(r"\s*/\*[0-9a-f]{4,}\*/", line)
        ]
        for name, lines in _sections(listing, r"\s*Function : (\S+)").items()
    }


def innermost_loops(binary: str | Path) -> dict[str, list[list[str]]]:
    """Per kernel of a cubin, the bodies of its innermost loops: the instructions (without predicates) from the
    target of a backward branch to the branch, where that is the body's only branch."""
    listing = run_tool(nvidia_tool("cuobjdump") or "cuobjdump", "-sass", str(binary))
    loops = {}
    for name, lines in _sections(listing, r"\s*Function : (\S+)").items():
        code = [
            (int(m.group(1), 16), re.sub(r"^@!?U?P\w+\s+", "", m.group(2).strip()))
            for line in lines
            for m in [re.match(r"\s*/\*([0-9a-f]{4,})\*/\s*(.*?);", line)]
            if m
        ]
        index = {address: i for i, (address, _) in enumerate(code)}
        bodies = [
            [text for _, text in code[index[target] : i + 1]]
            for i, (address, text) in enumerate(code)
            for m in [re.search(r"\bBRA (0x[0-9a-f]+)", text)]
            if m and (target := int(m.group(1), 16)) < address and target in index
        ]
        loops[name] = [body for body in bodies if sum(op.startswith("BRA") for op in body) == 1]
    return loops


def opcodes(body: list[str]) -> Counter:
    """How many instructions of each opcode (without its modifiers: LDS.128 counts as LDS) `body` holds."""
    return Counter(op.split()[0].split(".")[0] for op in body)


def resource_usage(cubin: str | Path) -> dict[str, dict[str, int]]:
    """Per kernel of a cubin: REG, STACK, SHARED, LOCAL... as cuobjdump -res-usage reports them."""
    listing = run_tool(nvidia_tool("cuobjdump") or "cuobjdump", "-res-usage", str(cubin))
    return {
        name: {k: int(v) for line in lines for k, v in re.findall(r"(\w+):(\d+)", line)}
        for name, lines in _sections(listing, r"\s*Function (\S+):").items()
    }


def x86_functions(shared_library: str | Path) -> dict[str, list[str]]:
    """Instructions of every function of an x86 shared library, by demangled name (objdump -d -C)."""
    listing = run_tool(shutil.which("objdump") or "objdump", "-d", "-C", "--no-show-raw-insn", str(shared_library))
    return {
        name: [line.split("\t", 1)[1].strip() for line in lines if "\t" in line]
        for name, lines in _sections(listing, r"[0-9a-f]+ <(.*)>:$").items()
    }
