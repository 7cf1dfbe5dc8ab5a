"""Reading compiled kernels without running them: the NVIDIA binary tools (Triton bundles cuobjdump and nvdisasm;
a CUDA toolkit has them too) and GNU objdump for the CPU code."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
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


def run_tool(*command: str) -> str:
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{' '.join(command)} failed: {run.stderr[-2000:]}"
    return run.stdout


def sass_by_function(binary: str | Path) -> dict[str, list[str]]:
    """SASS instructions of every kernel in a cubin, or in the fatbins of a shared library, by (mangled) name."""
    listing = run_tool(nvidia_tool("cuobjdump") or "cuobjdump", "-sass", str(binary))
    functions: dict[str, list[str]] = {}
    current = None
    for line in listing.splitlines():
        header = re.match(r"\s*Function : (\S+)", line)
        if header:
            current = functions.setdefault(header.group(1), [])
        elif current is not None and re.match(r"\s*/\*[0-9a-f]{4,}\*/", line):
            instruction = line.split("*/", 1)[1].split(";")[0].strip()
            current.append(re.sub(r"^@!?U?P\w+\s+", "", instruction))  # without its predicate
    return functions


def resource_usage(cubin: str | Path) -> dict[str, dict[str, int]]:
    """Per kernel of a cubin: REG, STACK, SHARED, LOCAL... as cuobjdump -res-usage reports them."""
    listing = run_tool(nvidia_tool("cuobjdump") or "cuobjdump", "-res-usage", str(cubin))
    usage: dict[str, dict[str, int]] = {}
    current = None
    for line in listing.splitlines():
        header = re.match(r"\s*Function (\S+):", line)
        if header:
            current = usage.setdefault(header.group(1), {})
        elif current is not None:
            current.update({k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)})
    return usage


def x86_functions(shared_library: str | Path) -> dict[str, list[str]]:
    """Instructions of every function of an x86 shared library, by demangled name (objdump -d -C)."""
    listing = run_tool(shutil.which("objdump") or "objdump", "-d", "-C", "--no-show-raw-insn", str(shared_library))
    functions: dict[str, list[str]] = {}
    current = None
    for line in listing.splitlines():
        header = re.match(r"[0-9a-f]+ <(.*)>:$", line)
        if header:
            current = functions.setdefault(header.group(1), [])
        elif current is not None and "\t" in line:
            current.append(line.split("\t", 1)[1].strip())
    return functions
