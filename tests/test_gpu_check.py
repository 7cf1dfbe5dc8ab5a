"""benchmarks/gpu_check.sh, the lent GPU machine's one command: its time budget, run on the CPU with no build.

The GPU steps themselves run only there; what CI can check is that the script keeps its budget and its promises:
every benchmark suite is in its `all` phase, the steps that do not fit are named as skipped, and what it writes
stays within the 8 files the device tool returns.
"""

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from _support import script_sandbox

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
    # -n 0 (after the script's -n 12): no workers, which on a 2-core machine took most of the 105 s limit to start
    done = run_script("tests", out, BUDGET="120", TESTS_ARGS=f"{chosen} -n 0", timeout=240)
    assert done.returncode == 0, (out / "summary.txt").read_text()
    ran = {line.split()[3] for line in (out / "durations.log").read_text().splitlines()}
    assert ran == {chosen}


# The script's own logic, in a copy of the repository with python3 replaced by a recorder (no Python runs).

RECORDER = """#!/usr/bin/env bash
# Stands in for python3: records each call with the MNIST folder, TRITON_INTERPRET and PYTHONPATH it sees; the
# build fails with $FAKE_BUILD_RC, pip --target with $FAKE_PIP_RC, pip --target and bench --json write a file there,
# the evaluation a finished run's results.json (with $FAKE_EVALUATE_RC set: nothing, and that exit status). A call
# whose arguments hold $FAKE_HANG hangs (an evaluation with its run folder begun) in a child sleep, its pid written
# to $FAKE_LOG.hung; $FAKE_ON_TERM: ignore (SIGTERM ignored) or slow (a second to stop).
seen="MNIST=${NEMESIS_FAST_MNIST-<unset>} | TRITON_INTERPRET=${TRITON_INTERPRET-<unset>}"
echo "$* | $seen | PYTHONPATH=${PYTHONPATH-<unset>}" >> "$FAKE_LOG"
previous=""
for arg in "$@"; do
  [ "$previous" = --target ] && mkdir -p "$arg/peer" && touch "$arg/peer/__init__.py"
  [ "$previous" = --json ] && echo '{}' > "$arg"
  previous=$arg
done
if [ -n "${FAKE_HANG:-}" ] && [[ "$*" == *"$FAKE_HANG"* ]]; then
  case "$*" in *" evaluate "*) mkdir -p runs/paper-gpu-check/cache && echo 1 > runs/paper-gpu-check/cache/a.pt ;; esac
  case "${FAKE_ON_TERM:-}" in
    ignore) trap '' TERM ;;
    slow) trap 'sleep 1; exit 143' TERM ;;
  esac
  sleep 30 &
  echo "$!" >> "$FAKE_LOG.hung"
  wait
fi
case "$*" in
  *"pip install"*"--target"*) exit "${FAKE_PIP_RC:-0}" ;;
  *"pip install"*"-e ."*) exit "${FAKE_BUILD_RC:-0}" ;;
  *" evaluate "*) [ -n "${FAKE_EVALUATE_RC:-}" ] && exit "$FAKE_EVALUATE_RC"
    mkdir -p runs/paper-gpu-check && echo '{}' > runs/paper-gpu-check/results.json ;;
esac
exit 0
"""


def start_recorded(phase: str, tmp_path: Path, **settings: str) -> tuple[subprocess.Popen, Path, Path]:
    """gpu_check.sh PHASE started in a copy of the repository (`tmp_path`/repo) with python3 a recorder: the process
    (its output piped), the recorder's log of calls, and the output folder."""
    repo, bin_dir, log = script_sandbox(tmp_path, SCRIPT, "benchmarks/gpu_check.sh", RECORDER)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEMESIS_FAST_MNIST", "MNIST_DIR")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "FAKE_LOG": str(log), "TMPDIR": str(tmp_path / "tmp")}
    env |= {"GPU_CHECK_DEVICE": "cpu", "OUT": str(out), "BUDGET": "300", **settings}
    script = ["bash", str(repo / "benchmarks" / "gpu_check.sh"), phase]
    running = subprocess.Popen(script, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return running, log, out


def run_recorded(
    phase: str, tmp_path: Path, *, timeout: float = 60, **settings: str
) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    """gpu_check.sh PHASE in a copy of the repository (`tmp_path`/repo) with python3 a recorder: the result, the
    python3 calls it made (arguments, then what they saw), and the output folder."""
    running, log, out = start_recorded(phase, tmp_path, **settings)
    try:
        stdout, stderr = running.communicate(timeout=timeout)
    except BaseException:
        running.kill()
        end_hung_calls(log)
        raise
    done = subprocess.CompletedProcess(running.args, running.returncode, stdout, stderr)
    return done, log.read_text().splitlines() if log.exists() else [], out


def alive(pid: int) -> bool:
    """Whether process `pid` runs (not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def hung_calls(log: Path) -> list[int]:
    """The pids of the recorder's hanging children (FAKE_HANG) so far."""
    hung = Path(f"{log}.hung")
    return [int(pid) for pid in hung.read_text().split()] if hung.exists() else []


def wait_for(condition, seconds: float = 20) -> None:
    """Waits until `condition()` holds, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)


def end_hung_calls(log: Path) -> None:
    """Ends the recorder's hanging children that a failed test left running (each by its pid)."""
    for pid in hung_calls(log):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


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


def test_paper_says_so_when_it_ends_with_nothing_to_carry(tmp_path):
    """An evaluation that ends before its run folder exists (on a CPU dry run: stopped within the first epoch)."""
    done, _, out = run_recorded("paper", tmp_path, SKIP_BUILD="1", FAKE_EVALUATE_RC="124")
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 1 and "paper_gpu_check preset: stopped at its" in summary
    assert "paper: unfinished, with no run folder begun: nothing to carry" in summary
    assert not list(out.glob("paper-*"))


def test_profile_times_the_triton_tiles_after_the_attacks(tmp_path):
    done, calls, out = run_recorded("profile", tmp_path, SKIP_BUILD="1", TRITON_INTERPRET="0")
    scripts = [call.split(" | ")[:3:2] for call in calls if call.startswith("scripts/")]
    assert scripts == [
        ["scripts/profile_attacks.py --device cpu", "TRITON_INTERPRET=0"],
        # the dry run on a CPU: the tiles through Triton's interpreter, at its sizes
        [f"scripts/tune_triton_tiles.py --device cpu --json {out}/tiles.json --tiny", "TRITON_INTERPRET=1"],
    ]
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 0 and "profile attacks: ok" in summary and "Triton tiles: ok" in summary, summary


def test_profile_on_a_gpu_times_the_tiles_at_their_sizes_within_its_own_budget(tmp_path):
    # BUDGET empty: the phase's default (540 s: the attacks' 200 s and the tiles' 120 s fit with time to spare)
    done, calls, out = run_recorded(
        "profile", tmp_path, SKIP_BUILD="1", BUDGET="", GPU_CHECK_DEVICE="cuda:1", TRITON_INTERPRET="0"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (tiles,) = [call.split(" | ") for call in calls if call.startswith("scripts/tune_triton_tiles.py")]
    assert tiles[:3:2] == [
        f"scripts/tune_triton_tiles.py --device cuda:1 --json {out}/tiles.json",
        "TRITON_INTERPRET=0",
    ]
    assert ", budget 540s, " in (out / "summary.txt").read_text().splitlines()[0]
    assert "== profile attacks (limit 200s)" in (out / "profile.log").read_text().splitlines()
    assert "== Triton tiles (limit 120s)" in (out / "tiles.log").read_text().splitlines()


def test_the_carried_mnist_model_goes_where_the_fixture_looks(tmp_path):
    carried = tmp_path / "repo" / "runs" / "test-cache"
    carried.mkdir(parents=True)
    (carried / "mnist_cnn_0123.pt").write_bytes(b"weights")
    done, calls, _ = run_recorded("tests", tmp_path, SKIP_BUILD="1")
    assert done.returncode == 0, done.stdout + done.stderr
    # tempfile.gettempdir() is $TMPDIR here, the folder the fixture's cache (nemesis_fast._io.temp_cached) is under
    assert (tmp_path / "tmp" / "nemesis_fast_test_cache" / "mnist_cnn_0123.pt").read_bytes() == b"weights"
    assert [call for call in calls if "-m pytest" in call]


@pytest.mark.parametrize("tests_args", [None, "tests/test_zeta.py::test_one"])
def test_the_kernels_tests_come_first(tmp_path, tests_args):
    """Without TESTS_ARGS the test files go to pytest with the kernels' first, so that a run stopped at its budget
    has checked them; TESTS_ARGS names the tests itself."""
    folder = tmp_path / "repo" / "tests"
    folder.mkdir(parents=True)
    names = ["test_attacks", "test_bounded_relu", "test_gaussian_augment_ops", "test_jsma_saliency_search"]
    names += ["test_pyramid_compile", "test_triton_compile", "test_zeta"]
    for name in names + ["_support"]:
        (folder / f"{name}.py").write_text("")
    settings = {} if tests_args is None else {"TESTS_ARGS": tests_args}
    done, calls, _ = run_recorded("tests", tmp_path, SKIP_BUILD="1", **settings)
    assert done.returncode == 0, done.stdout + done.stderr
    (pytest_call,) = [call.split(" | ")[0] for call in calls if "-m pytest" in call]
    given = [arg for arg in pytest_call.split() if arg.startswith(("tests/", "benchmarks"))]
    expected = [f"tests/{name}.py" for name in names[1:6] + [names[0], names[6]]] + ["benchmarks"]
    assert given == (expected if tests_args is None else [tests_args])


@pytest.mark.parametrize("settings,limit", [({}, "180"), ({"TEST_TIMEOUT": "60"}, "60")])
def test_a_test_hung_in_the_gpu_is_ended_and_named(tmp_path, settings, limit):
    # pytest-timeout's signal cannot reach a worker held in C (a kernel that never returns); its thread method ends
    # the worker, and xdist names the test. The recorder answers `python3 -c "import pytest_timeout"` with success.
    done, calls, _ = run_recorded("tests", tmp_path, SKIP_BUILD="1", **settings)
    assert done.returncode == 0, done.stdout + done.stderr
    (pytest_call,) = [call for call in calls if "-m pytest" in call]
    assert f"--timeout={limit} --timeout-method=thread" in pytest_call


@pytest.mark.parametrize("phase,limit", [("tests", 285), ("all", 150)])
def test_the_tests_phase_gives_the_tests_the_whole_budget(tmp_path, phase, limit):
    done, _, out = run_recorded(phase, tmp_path, SKIP_BUILD="1")
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [line for line in (out / "tests.log").read_text().splitlines() if line.startswith("== tests")]
    given = int(re.fullmatch(r"== tests \(limit (\d+)s\)", line).group(1))
    assert limit - 5 <= given <= limit  # BUDGET 300 less the 15 s kept for packing, less the seconds already spent


# Faults: a step that outlives its limit, the whole command stopped from outside, settings and folders that are off.


def test_a_step_that_ignores_sigterm_is_killed_soon_after_its_limit(tmp_path):
    begun = time.monotonic()
    done, _, out = run_recorded(
        "tests", tmp_path, timeout=40, SKIP_BUILD="1", TESTS_SECONDS="2", FAKE_HANG="-m pytest", FAKE_ON_TERM="ignore"
    )
    assert time.monotonic() - begun < 20  # not the 30 s that the hanging call would take
    summary = (out / "summary.txt").read_text()
    assert re.search(r"^tests: stopped at its 2s limit \(SIGKILL: it outlived SIGTERM by 5s\), [6-9]s$", summary, re.M)
    assert done.returncode == 1
    wait_for(lambda: not any(alive(pid) for pid in hung_calls(tmp_path / "calls.log")), 5)  # its children too


@pytest.mark.parametrize("stop", ["SIGTERM twice", "SIGKILL"])
def test_stopped_from_outside_it_keeps_what_the_suites_measured(tmp_path, stop):
    running, log, out = start_recorded(
        "bench", tmp_path, SKIP_BUILD="1", FAKE_HANG="bench attacks", FAKE_ON_TERM="slow"
    )
    try:
        wait_for(lambda: hung_calls(log))
        if stop == "SIGKILL":
            running.send_signal(signal.SIGKILL)
        else:  # as `timeout` does: to the script, then to its process group, here a moment later
            running.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            running.send_signal(signal.SIGTERM)
        running.communicate(timeout=20)
        with tarfile.open(out / "bench.tgz") as packed:
            names = sorted(Path(name).name for name in packed.getnames() if name.endswith(".json"))
        before = ["bounded_relu.json", "gaussian_augment.json", "jsma.json"]
        if stop == "SIGKILL":  # the suites that had ended, packed as each ended
            assert names == before
        else:  # the running suite's rows too, and the step named
            assert names == sorted([*before, "attacks.json"])
            assert running.returncode == 128 + signal.SIGTERM
            summary = (out / "summary.txt").read_text()
            assert re.search(r"^bench attacks: stopped by SIGTERM \(the whole command's limit\), \d+s$", summary, re.M)
            wait_for(lambda: not any(alive(pid) for pid in hung_calls(log)), 5)
        assert not list(out.glob("*.tmp"))
    finally:
        running.kill()
        end_hung_calls(log)


def test_paper_stopped_from_outside_packs_the_unfinished_run(tmp_path):
    running, log, out = start_recorded("paper", tmp_path, SKIP_BUILD="1", FAKE_HANG=" evaluate ", FAKE_ON_TERM="slow")
    try:
        wait_for(lambda: hung_calls(log))
        running.send_signal(signal.SIGTERM)
        running.communicate(timeout=20)
    finally:
        running.kill()
        end_hung_calls(log)
    assert running.returncode == 128 + signal.SIGTERM
    summary = (out / "summary.txt").read_text()
    assert "paper_gpu_check preset: stopped by SIGTERM" in summary and "paper: unfinished" in summary
    packed = b"".join(part.read_bytes() for part in sorted(out.glob("paper-run.tgz.part-*")))
    with tarfile.open(fileobj=io.BytesIO(packed)) as run:
        assert "paper-gpu-check/cache/a.pt" in run.getnames()


def test_a_failed_install_of_the_peers_wheels_is_reported(tmp_path):
    (tmp_path / "repo" / ".whl").mkdir(parents=True)
    (tmp_path / "repo" / ".whl" / "peer-1.0-py3-none-any.whl").write_bytes(b"")
    done, calls, out = run_recorded("bench", tmp_path, SKIP_BUILD="1", FAKE_PIP_RC="1")
    assert done.returncode == 1
    summary = (out / "summary.txt").read_text()
    assert "peers' wheels (peer-1.0-py3-none-any.whl): failed (exit 1)" in summary, summary
    assert all("PYTHONPATH=<unset>" in call for call in calls if "pip install" not in call)


def test_no_wheels_carried_is_said(tmp_path):
    done, _, out = run_recorded("bench", tmp_path, SKIP_BUILD="1")
    assert done.returncode == 0
    assert "peers' wheels: none in .whl/" in (out / "summary.txt").read_text()


def test_an_unusable_tmpdir_does_not_put_the_runs_folder_at_the_root(tmp_path):
    (tmp_path / "repo" / ".whl").mkdir(parents=True)
    (tmp_path / "repo" / ".whl" / "peer-1.0-py3-none-any.whl").write_bytes(b"")
    done, calls, _ = run_recorded("bench", tmp_path, SKIP_BUILD="1", TMPDIR=str(tmp_path / "missing"))
    assert done.returncode == 0, done.stderr
    (install,) = [call for call in calls if "pip install" in call]
    target = Path(install.split("--target ")[1].split()[0])
    assert target.parent != Path("/") and target.name == "site", install
    assert not target.parent.exists()  # removed when the run ends


@pytest.mark.parametrize("setting", [{"BUDGET": "7m"}, {"BUDGET": "450.5"}, {"TESTS_SECONDS": "2m"}])
def test_a_budget_that_is_not_whole_seconds_is_refused(tmp_path, setting):
    done, calls, _ = run_recorded("tests", tmp_path, SKIP_BUILD="1", **setting)
    assert done.returncode == 2 and "must be whole seconds" in done.stderr, done.stderr
    assert not calls


def test_tests_args_on_several_lines_are_all_run(tmp_path):
    done, calls, _ = run_recorded("tests", tmp_path, SKIP_BUILD="1", TESTS_ARGS="tests/a.py::one\n  tests/b.py\n")
    assert done.returncode == 0
    (tests,) = [call for call in calls if "-m pytest" in call]
    assert tests.split(" | ")[0].endswith(" tests/a.py::one tests/b.py"), tests


def test_a_hanging_nvidia_smi_does_not_hold_the_call(tmp_path):
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "nvidia-smi"  # a GPU in a bad state: nvidia-smi never answers
    fake.write_text('#!/usr/bin/env bash\necho "$$" >> "$FAKE_LOG.hung"\nexec sleep 120\n')
    fake.chmod(0o755)
    done, calls, out = run_recorded("bench", tmp_path, timeout=40, SKIP_BUILD="1")
    assert done.returncode == 0 and len([call for call in calls if " bench " in call]) == 5


@pytest.mark.parametrize("skip_build,builds", [("0", True), ("", True), ("1", False)])
def test_skip_build_0_builds(tmp_path, skip_build, builds):
    done, calls, out = run_recorded("bench", tmp_path, SKIP_BUILD=skip_build)
    assert done.returncode == 0
    assert bool([call for call in calls if "pip install -q --no-build-isolation --no-deps -e ." in call]) == builds
