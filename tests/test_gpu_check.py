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


def test_the_all_phase_runs_every_benchmark_suite():
    text = SCRIPT.read_text()
    (line,) = re.findall(r"^\s*all\) suites=\((.*)\) ;;$", text, flags=re.MULTILINE)
    assert sorted(entry.split(":")[0] for entry in line.split()) == sorted(SUITES)


def test_steps_beyond_the_budget_are_skipped_and_named(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "SKIP_BUILD": "1", "BUDGET": "40", "OUT": str(out)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # python3 is this interpreter
    done = subprocess.run(["bash", str(SCRIPT), "all"], env=env, capture_output=True, text=True, timeout=120)
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 1, done.stderr  # something was skipped: the check is incomplete, and says so
    assert re.search(r"^backend_info: (ok|stopped at its \d+s limit), \d+s$", summary, flags=re.MULTILINE), summary
    for suite in SUITES:
        assert re.search(rf"^bench {suite}: skipped, -?\d+s of the 40s budget left$", summary, flags=re.MULTILINE)
    assert len(list(out.iterdir())) <= 8


def test_tests_args_names_the_tests_to_run(tmp_path):
    out = tmp_path / "out"
    chosen = "tests/test_gaussian_augment.py::test_triton_row_count_is_64_bit"
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "SKIP_BUILD": "1", "BUDGET": "120", "OUT": str(out)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["TESTS_ARGS"] = chosen
    done = subprocess.run(["bash", str(SCRIPT), "tests"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (out / "summary.txt").read_text()
    ran = {line.split()[3] for line in (out / "durations.log").read_text().splitlines()}
    assert ran == {chosen}
