"""Run by tests/test_xdist_threads.py under pytest-xdist (not collected otherwise): each test writes the torch threads
and the environment its worker was given to a file named after the worker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch._inductor.config


@pytest.mark.parametrize("case", range(4))
def test_report_threads(case):
    folder = Path(os.environ["NEMESIS_THREAD_PROBE_OUT"])
    report = {
        "threads": torch.get_num_threads(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "compile_threads": torch._inductor.config.compile_threads,
    }
    (folder / f"{os.environ['PYTEST_XDIST_WORKER']}-{case}.json").write_text(json.dumps(report))
