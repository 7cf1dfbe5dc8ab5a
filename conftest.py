"""Session setup for tests and benchmarks: Triton's interpreter on machines without a GPU, the cuda marker's skip,
each pytest-xdist worker's share of the cores, and the GPU machine's test logs."""

from __future__ import annotations

import os

import pytest
import torch

_IS_XDIST_WORKER = False  # set by pytest_configure


def pytest_configure(config):
    """In a pytest-xdist worker, torch takes the worker's share of the cores (at least one thread), unless
    OMP_NUM_THREADS says otherwise, and inductor compiles in the worker rather than in a pool of compile processes
    per worker. torch's default, every core in every worker, oversubscribes the CPU n-fold, and OpenMP's waiting
    threads then slow the workers' CPU work many times over: 8.8x with 6 workers on 2 cores (the CPU references and
    the MNIST model's training; on the GPU machine 12 workers share 16 cores). A worker is told by its `workerinput`,
    not by the environment, which a pytest run started inside a worker inherits."""
    global _IS_XDIST_WORKER
    workerinput = getattr(config, "workerinput", None)
    _IS_XDIST_WORKER = workerinput is not None
    if _IS_XDIST_WORKER and "OMP_NUM_THREADS" not in os.environ:
        from nemesis_fast.parallel.workers import usable_cores  # here: after TRITON_INTERPRET is set, below

        threads = max(1, usable_cores() // int(workerinput["workercount"]))
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for the processes a test starts
        torch.set_num_threads(threads)
        if "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ:
            os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
            from torch._inductor import config as inductor  # imported already where a conftest below imported it

            inductor.compile_threads = 1


if not torch.cuda.is_available():
    # Must precede the first import of triton (nemesis_fast imports it) to run Triton kernels on the CPU.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    from nemesis_fast.triton import INTERPRETER_PROBLEM as interpreter  # after TRITON_INTERPRET is set, above

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
    if not folder or _IS_XDIST_WORKER:  # the controller writes, once per report
        return
    if report.when == "call" or report.outcome != "passed":
        with open(os.path.join(folder, "durations.log"), "a") as log:
            log.write(f"{report.duration:8.2f} s  {report.outcome:7}  {report.nodeid} ({report.when})\n")
    if report.failed:
        with open(os.path.join(folder, "failures.log"), "a") as log:
            log.write(f"== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")
