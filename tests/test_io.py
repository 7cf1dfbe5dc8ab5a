"""temp_cached: a value computed once, even when several processes ask for it at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from nemesis_fast._io import temp_cached

ASK = """
import sys, time
import torch
from nemesis_fast._io import temp_cached

def compute():
    with open(sys.argv[1], "a") as log:
        log.write("computed\\n")
    time.sleep(1.0)  # long enough for the other processes to arrive while it computes
    return torch.arange(5)

print(temp_cached("nemesis_fast_io_test/value.pt", compute).tolist())
"""


def test_processes_that_ask_at_once_compute_the_value_once(tmp_path):
    log = tmp_path / "computed.log"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    askers = [
        subprocess.Popen([sys.executable, "-c", ASK, str(log)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [asker.communicate(timeout=120)[0] for asker in askers]
    assert all(asker.returncode == 0 for asker in askers)
    assert outputs == ["[0, 1, 2, 3, 4]\n"] * 3
    assert log.read_text() == "computed\n"


def test_refresh_computes_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile reads TMPDIR again
    calls = []

    def compute():
        calls.append(1)
        return torch.tensor([len(calls)])

    assert temp_cached("value.pt", compute).item() == 1
    assert temp_cached("value.pt", compute).item() == 1
    assert temp_cached("value.pt", compute, refresh=True).item() == 2
    assert temp_cached("value.pt", compute).item() == 2
    assert len(calls) == 2
