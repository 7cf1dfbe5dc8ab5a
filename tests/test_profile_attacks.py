"""scripts/profile_attacks.py (`gpu_check.sh profile`) runs through on the CPU: it catches each part's exception so
that one failure does not hide the other profiles, so a broken part shows only as a traceback in its output. The
Jacobian products' paths it times each compute the same K products."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _support import load_script

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


def test_the_timed_paths_of_the_jacobian_products_compute_the_same_products(monkeypatch, capsys):
    pytest.importorskip("torchattacks")  # the script imports the drop-in
    profile = load_script("profile_attacks")
    from nemesis_fast.bench.attacks import timing_model

    results, vmapped = [], []  # each timed path's result; whether it went through torch.func.vmap
    vmap = torch.func.vmap

    def counted_vmap(*args, **kwargs):
        vmapped[-1] = True
        return vmap(*args, **kwargs)

    def milliseconds(path, calls, device):
        vmapped.append(False)
        results.append(path())
        return 1.0

    monkeypatch.setattr(torch.func, "vmap", counted_vmap)
    monkeypatch.setattr(profile, "milliseconds", milliseconds)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    profile.jacobian_paths(timing_model(torch.device("cpu")), x, "ReLU")  # (B, K): (2, 2), (8, 2), (2, 10)
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert len(header.split("ms per call: ")[1].split(" / ")) == len(rows[0].split(": ")[1].split(" / ")) == 4
    assert len(results) == 12 and vmapped == [False, False, False, True] * 3  # torch.func's path, its vmap
    for images, k, (batched, products, (_, stacked), func) in zip(
        (2, 8, 2), (2, 2, 10), [results[i : i + 4] for i in (0, 4, 8)]
    ):
        assert stacked.shape == (k, images, *x.shape[1:])
        for other in (batched[0], torch.stack([grads for (grads,) in products]), func[0]):
            torch.testing.assert_close(other, stacked, rtol=1e-4, atol=1e-6)
