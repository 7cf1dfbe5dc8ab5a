"""scripts/prepare_gpu_carry.sh, which puts in place the folders that gpu_check.sh's calls carry: run in a copy of
the repository with python3 a stub (no training, no network), so that it is loud where a part fails and keeps no
part that would fail on the GPU machine."""

import gzip
import os
import subprocess
from pathlib import Path

from _support import script_sandbox

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_gpu_carry.sh"
MNIST = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
WHEELS = (
    "torchattacks-3.5.1-py3-none-any.whl",
    "adversarial_robustness_toolbox-1.20.1-py3-none-any.whl",
    "pytest_timeout-2.4.0-py3-none-any.whl",
)

STUB = """#!/usr/bin/env bash
# Stands in for python3: the fixture's cache file is $FAKE_TMP/nemesis_fast_test_cache/mnist_cnn_0123.pt; pytest
# writes it, or fails as a fixture whose model is not accurate does ($FAKE_PYTEST_FAIL).
echo "$*" >> "$FAKE_LOG"
case "$*" in
  "-c "*) echo "$FAKE_TMP/nemesis_fast_test_cache/mnist_cnn_0123.pt" ;;
  "-m pytest"*)
    if [ -n "${FAKE_PYTEST_FAIL:-}" ]; then echo "E   AssertionError: MNIST test accuracy 0.1000 < 0.97"; exit 1; fi
    cache="$FAKE_TMP/nemesis_fast_test_cache"
    mkdir -p "$cache" && echo weights > "$cache/mnist_cnn_0123.pt" ;;
  *) echo "unexpected call" >&2; exit 3 ;;
esac
"""


def prepare(tmp_path: Path, **settings: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """prepare_gpu_carry.sh in `tmp_path`/repo (its certify model and wheels in place, MNIST in `tmp_path`/source):
    the result and the stub's calls."""
    repo, bin_dir, log = script_sandbox(tmp_path, SCRIPT, "scripts/prepare_gpu_carry.sh", STUB)
    source = tmp_path / "source"
    (repo / "runs" / "certify-models").mkdir(parents=True, exist_ok=True)
    (repo / "runs" / "certify-models" / "gda.pt").write_bytes(b"model")
    (repo / ".whl").mkdir(exist_ok=True)
    for wheel in WHEELS:
        (repo / ".whl" / wheel).write_bytes(b"")
    source.mkdir(exist_ok=True)
    for name in MNIST:
        (source / name).write_bytes(gzip.compress(name.encode() * 100))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log)}
    env |= {"FAKE_TMP": str(tmp_path / "tmp"), "MNIST_SOURCE": str(source), **settings}
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "prepare_gpu_carry.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    return done, log.read_text().splitlines() if log.exists() else []


def test_it_puts_the_parts_in_place_and_a_second_run_keeps_them(tmp_path):
    done, calls = prepare(tmp_path)
    assert done.returncode == 0, done.stderr
    repo = tmp_path / "repo"
    assert all(
        (repo / "runs" / "mnist-data" / name).read_bytes() == (tmp_path / "source" / name).read_bytes()
        for name in MNIST
    )
    assert (repo / "runs" / "test-cache" / "mnist_cnn_0123.pt").read_text() == "weights\n"
    again, calls = prepare(tmp_path)
    assert again.returncode == 0, again.stderr
    assert not [call for call in calls if "pytest" in call]  # nothing trained again


def test_a_failing_training_of_the_tests_model_says_why(tmp_path):
    done, _ = prepare(tmp_path, FAKE_PYTEST_FAIL="1")
    assert done.returncode != 0
    assert "MNIST test accuracy 0.1000 < 0.97" in done.stderr, done.stderr
    assert not (tmp_path / "repo" / "runs" / "test-cache").exists()


def test_an_mnist_file_cut_short_is_copied_again(tmp_path):
    kept = tmp_path / "repo" / "runs" / "mnist-data"
    kept.mkdir(parents=True)
    whole = gzip.compress(MNIST[0].encode() * 100)
    (kept / MNIST[0]).write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    done, _ = prepare(tmp_path)
    assert done.returncode == 0, done.stderr
    assert (kept / MNIST[0]).read_bytes() == (tmp_path / "source" / MNIST[0]).read_bytes()
    assert not list(kept.glob("*.tmp"))


def test_two_versions_of_a_wheel_are_refused(tmp_path):
    (tmp_path / "repo" / ".whl").mkdir(parents=True)
    (tmp_path / "repo" / ".whl" / "torchattacks-3.5.0-py3-none-any.whl").write_bytes(b"")
    done, _ = prepare(tmp_path)
    assert done.returncode == 1
    assert "more than one version in .whl of: torchattacks" in done.stderr, done.stderr
