"""scripts/profile_attacks.py (`gpu_check.sh profile`) runs through on the CPU: it catches each part's exception so
that one failure does not hide the other profiles, so a broken part shows only as a traceback in its output."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_part_of_the_profile_runs_on_the_cpu():
    pytest.importorskip("torchattacks")
    command = [sys.executable, "scripts/profile_attacks.py", "--device", "cpu", "--batch", "8", "--calls", "1"]
    run = subprocess.run([*command, "--attacks", "FGSM,JSMA"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert "=== FGSM, nemesis_fast:" in output and "JSMA (drop-in): 142 steps a call on 2 images" in output
    for label in ("ReLU", "the same weights, BReLU t = 1"):
        table = output.split(f"K products of the logits ({label})", 1)[1].splitlines()
        times = [line.split(":", 1)[1].split(" / ") for line in table[1:4]]
        assert [line.split(":")[0].strip() for line in table[1:4]] == ["B = 2, K = 2", "B = 8, K = 2", "B = 2, K = 10"]
        assert all(len(paths) == 4 and all(float(t) > 0 for t in paths) for paths in times), table[:4]
