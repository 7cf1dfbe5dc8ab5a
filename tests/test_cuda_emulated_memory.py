"""The emulated CUDA kernels (test_cuda_emulated.py) again, built with AddressSanitizer, in a process started with
its runtime preloaded: a kernel that reads or writes outside its tensors (past an output's end, a mask byte too
many, a sample past the batch) fails here, where on a GPU it would corrupt memory or fault. Left out: the grid
tests (they search nothing) and the gradient-like JSMA inputs (the same accesses as the random ones, at 3x the
time under the sanitizer)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _cuda_emulator as emulator
import pytest

ROOT = Path(__file__).resolve().parent.parent


def runtime_libraries() -> list[str]:
    """AddressSanitizer's runtime and libstdc++ (ASan's C++ interceptors need it loaded before any library
    throws), as gcc names them; empty where gcc has no ASan runtime."""
    found = []
    for name in ("libasan.so", "libstdc++.so"):
        path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(path):
            return []
        found.append(path)
    return found


@pytest.mark.slow
def test_kernels_stay_inside_their_tensors():
    libraries = runtime_libraries()
    if not libraries:
        pytest.skip("gcc has no AddressSanitizer runtime here")
    env = {
        **os.environ,
        emulator.ADDRESS_SANITIZER: "1",
        "LD_PRELOAD": " ".join(libraries),
        "ASAN_OPTIONS": "detect_leaks=0",  # Python and torch keep their allocations to the end
    }
    tests = str(ROOT / "tests" / "test_cuda_emulated.py")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        tests,
        "-k",
        "not grid and not gradient_like",
    ]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=840)
    output = run.stdout + run.stderr
    assert "AddressSanitizer" not in output, output[-6000:]
    assert run.returncode == 0, output[-6000:]
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-2000:]
