"""Parallel test workers (pytest-xdist, as benchmarks/gpu_check.sh runs the GPU tests) share the machine's cores
instead of each taking all of them (conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemesis_fast.parallel.workers import usable_cores

pytest.importorskip("xdist")

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
CORES = usable_cores()
SET_BY_THE_RUN = (
    "OMP_NUM_THREADS",
    "TORCHINDUCTOR_COMPILE_THREADS",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
)


def _worker_reports(folder: Path, **environment: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in SET_BY_THE_RUN}
    env.update(environment, NEMESIS_THREAD_PROBE_OUT=str(folder))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(WORKERS)]
    done = subprocess.run(
        [*command, "tests/xdist_thread_probe.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reports = [json.loads(path.read_text()) for path in sorted(folder.glob("gw*.json"))]
    assert len(reports) == 4, done.stdout
    return reports


def test_each_worker_takes_its_share_of_the_cores(tmp_path):
    share = max(1, CORES // WORKERS)
    for report in _worker_reports(tmp_path):
        assert report == {"threads": share, "omp": str(share), "compile_threads": 1}


@pytest.mark.skipif(CORES < 2, reason="one core: every worker's share is the whole of it")
def test_a_thread_count_given_wins(tmp_path):
    given = str(CORES)  # more than a worker's share (torch takes no more threads than the machine has cores)
    for report in _worker_reports(tmp_path, OMP_NUM_THREADS=given, TORCHINDUCTOR_COMPILE_THREADS="2"):
        assert report == {"threads": CORES, "omp": given, "compile_threads": 2}
