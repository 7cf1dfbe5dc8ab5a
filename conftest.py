"""Session setup for tests and benchmarks: Triton's interpreter on machines without a GPU, and the cuda
marker's skip."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must precede the first import of triton (nemesis_fast imports it) to run Triton kernels on the CPU.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _interpreter_fails_on_numpy() -> str:
    """Why Triton's interpreter cannot run the kernels here, or "": triton before 3.7 converts 1-element arrays to
    ints, which numpy 2.4 refuses (triton-lang/triton#9171)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        triton, numpy = (tuple(int(v) for v in version(p).split(".")[:2]) for p in ("triton", "numpy"))
    except (PackageNotFoundError, ValueError):
        return ""
    if triton < (3, 7) and numpy >= (2, 4):
        return f"Triton {version('triton')}'s interpreter fails on numpy {version('numpy')} (needs triton >= 3.7)"
    return ""


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    interpreter = _interpreter_fails_on_numpy()
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
        elif interpreter and "triton" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=interpreter))


def pytest_runtest_logreport(report):
    """With NEMESIS_TEST_LOG_DIR set, every test's outcome and seconds go to durations.log, and every failure's
    traceback to failures.log, as they happen: a run stopped at a time limit (the GPU machine's) still tells what
    failed, why, and which tests it never reached."""
    folder = os.environ.get("NEMESIS_TEST_LOG_DIR")
    if not folder or os.environ.get("PYTEST_XDIST_WORKER"):  # the controller writes, once per report
        return
    if report.when == "call" or report.outcome != "passed":
        with open(os.path.join(folder, "durations.log"), "a") as log:
            log.write(f"{report.duration:8.2f} s  {report.outcome:7}  {report.nodeid} ({report.when})\n")
    if report.failed:
        with open(os.path.join(folder, "failures.log"), "a") as log:
            log.write(f"== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")
