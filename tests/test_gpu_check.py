"""benchmarks/gpu_check.sh, the lent GPU machine's one command: its time budget, run on the CPU with no build.

The GPU steps themselves run only there; what CI can check is that the script keeps its budget and its promises:
every benchmark suite is in its `all` phase, the steps that do not fit are named as skipped, and what it writes
stays within the 8 files the device tool returns.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from nemesis_fast.bench import SUITES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def run_script(phase: str, out: Path, *, timeout: float, **settings: str) -> subprocess.CompletedProcess:
    """gpu_check.sh PHASE on the CPU, no build, its files under `out`, with extra environment `settings`."""
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "SKIP_BUILD": "1", "OUT": str(out), **settings}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # python3 is this interpreter
    return subprocess.run(["bash", str(SCRIPT), phase], env=env, capture_output=True, text=True, timeout=timeout)


def test_the_all_phase_runs_every_benchmark_suite():
    text = SCRIPT.read_text()
    (line,) = re.findall(r"^\s*all\) suites=\((.*)\) ;;$", text, flags=re.MULTILINE)
    assert sorted(entry.split(":")[0] for entry in line.split()) == sorted(SUITES)


def test_steps_beyond_the_budget_are_skipped_and_named(tmp_path):
    out = tmp_path / "out"
    done = run_script("all", out, BUDGET="40", timeout=120)
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 1, done.stderr  # something was skipped: the check is incomplete, and says so
    assert re.search(r"^backend_info: (ok|stopped at its \d+s limit), \d+s$", summary, flags=re.MULTILINE), summary
    for suite in SUITES:
        assert re.search(rf"^bench {suite}: skipped, -?\d+s of the 40s budget left$", summary, flags=re.MULTILINE)
    assert len(list(out.iterdir())) <= 8


def test_tests_args_names_the_tests_to_run(tmp_path):
    out = tmp_path / "out"
    chosen = "tests/test_gaussian_augment.py::test_triton_row_count_is_64_bit"
    done = run_script("tests", out, BUDGET="120", TESTS_ARGS=chosen, timeout=240)
    assert done.returncode == 0, (out / "summary.txt").read_text()
    ran = {line.split()[3] for line in (out / "durations.log").read_text().splitlines()}
    assert ran == {chosen}
