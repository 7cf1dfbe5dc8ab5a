"""benchmarks/gpu_check.sh, the lent GPU machine's one command: its time budget, run on the CPU with no build.

The GPU steps themselves run only there; what CI can check is that the script keeps its budget and its promises:
every benchmark suite is in its `all` phase, the steps that do not fit are named as skipped, and what it writes
stays within the 8 files the device tool returns.
"""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

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


# The script's own logic, in a copy of the repository with python3 replaced by a recorder (no Python runs).

RECORDER = """#!/usr/bin/env bash
# Stands in for python3: records each call with the MNIST folder and PYTHONPATH it sees; the build fails with
# $FAKE_BUILD_RC, pip --target and bench --json write a file there, the evaluation a finished run's results.json.
echo "$* | MNIST=${NEMESIS_FAST_MNIST-<unset>} | PYTHONPATH=${PYTHONPATH-<unset>}" >> "$FAKE_LOG"
previous=""
for arg in "$@"; do
  [ "$previous" = --target ] && mkdir -p "$arg/peer" && touch "$arg/peer/__init__.py"
  [ "$previous" = --json ] && echo '{}' > "$arg"
  previous=$arg
done
case "$*" in
  *"pip install"*"-e ."*) exit "${FAKE_BUILD_RC:-0}" ;;
  *" evaluate "*) mkdir -p runs/paper-gpu-check && echo '{}' > runs/paper-gpu-check/results.json ;;
esac
exit 0
"""


def run_recorded(phase: str, tmp_path: Path, **settings: str) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    """gpu_check.sh PHASE in a copy of the repository (`tmp_path`/repo) with python3 a recorder: the result, the
    python3 calls it made (arguments, then what they saw), and the output folder."""
    repo, bin_dir, out = tmp_path / "repo", tmp_path / "bin", tmp_path / "out"
    (repo / "benchmarks").mkdir(parents=True, exist_ok=True)
    (repo / "benchmarks" / "gpu_check.sh").write_text(SCRIPT.read_text())
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text(RECORDER)
    (bin_dir / "python3").chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEMESIS_FAST_MNIST", "MNIST_DIR")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "FAKE_LOG": str(log), "TMPDIR": str(tmp_path / "tmp")}
    env |= {"GPU_CHECK_DEVICE": "cpu", "OUT": str(out), "BUDGET": "300", **settings}
    done = subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu_check.sh"), phase], env=env, capture_output=True, text=True, timeout=60
    )
    return done, log.read_text().splitlines(), out


@pytest.mark.parametrize("relative", [False, True])
def test_the_mnist_folder_reaches_the_tests_alone_as_an_absolute_path(tmp_path, relative):
    mnist = tmp_path / "repo" / "runs" / "mnist data" if relative else tmp_path / "mnist data"
    mnist.mkdir(parents=True)
    (mnist / "train-images-idx3-ubyte.gz").write_bytes(b"")
    given = "runs/mnist data" if relative else str(mnist)
    done, calls, _ = run_recorded("all", tmp_path, SKIP_BUILD="1", MNIST_DIR=given)
    assert done.returncode == 0, done.stdout + done.stderr
    (tests,) = [call for call in calls if "-m pytest" in call]
    assert f"MNIST={mnist}" in tests  # resolved, not "$PWD/$MNIST_DIR"
    suites = [call for call in calls if "nemesis_fast.cli bench" in call]
    assert len(suites) == len(SUITES) and all("MNIST=<unset>" in call for call in suites), suites


def test_the_peers_wheels_go_into_the_runs_own_folder(tmp_path):
    (tmp_path / "repo" / ".whl").mkdir(parents=True)
    (tmp_path / "repo" / ".whl" / "peer-1.0-py3-none-any.whl").write_bytes(b"")
    done, calls, out = run_recorded("bench", tmp_path, SKIP_BUILD="1")
    assert done.returncode == 0, done.stdout + done.stderr
    (install,) = [call for call in calls if "pip install" in call]
    target = Path(install.split("--target ")[1].split()[0])
    assert target.parent.parent == tmp_path / "tmp" and target.name == "site", install  # $TMPDIR/<its own>/site
    later = [call for call in calls if "pip install" not in call]
    assert later and all(call.endswith(f"PYTHONPATH={target}") for call in later)
    assert not list((tmp_path / "tmp").iterdir())  # its folder is removed when it ends
    with tarfile.open(out / "bench.tgz") as packed:  # the suites' JSON, not the installed wheels
        assert sorted(Path(name).name for name in packed.getnames() if name.endswith(".json")) == sorted(
            f"{suite}.json" for suite in ("bounded_relu", "gaussian_augment", "jsma", "attacks", "training")
        )
        assert not [name for name in packed.getnames() if "site" in name or "peer" in name]


def test_paper_packs_a_finished_run_though_an_earlier_step_failed(tmp_path):
    done, calls, out = run_recorded("paper", tmp_path, FAKE_BUILD_RC="1")
    summary = (out / "summary.txt").read_text()
    assert "build: failed (exit 1)" in summary and "paper_gpu_check preset: ok" in summary
    assert done.returncode == 1  # the check as a whole failed: its build did
    assert (out / "paper-results.tgz").is_file() and not list(out.glob("paper-run.tgz.part-*"))
    assert "unfinished" not in summary


def test_the_carried_mnist_model_goes_where_the_fixture_looks(tmp_path):
    carried = tmp_path / "repo" / "runs" / "test-cache"
    carried.mkdir(parents=True)
    (carried / "mnist_cnn_0123.pt").write_bytes(b"weights")
    done, calls, _ = run_recorded("tests", tmp_path, SKIP_BUILD="1")
    assert done.returncode == 0, done.stdout + done.stderr
    # tempfile.gettempdir() is $TMPDIR here, the folder the fixture's cache (nemesis_fast._io.temp_cached) is under
    assert (tmp_path / "tmp" / "nemesis_fast_test_cache" / "mnist_cnn_0123.pt").read_bytes() == b"weights"
    assert [call for call in calls if "-m pytest" in call]


@pytest.mark.parametrize("phase,limit", [("tests", 285), ("all", 150)])
def test_the_tests_phase_gives_the_tests_the_whole_budget(tmp_path, phase, limit):
    done, _, out = run_recorded(phase, tmp_path, SKIP_BUILD="1")
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [line for line in (out / "tests.log").read_text().splitlines() if line.startswith("== tests")]
    given = int(re.fullmatch(r"== tests \(limit (\d+)s\)", line).group(1))
    assert limit - 5 <= given <= limit  # BUDGET 300 less the 15 s kept for packing, less the seconds already spent
