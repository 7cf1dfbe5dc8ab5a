"""scripts/tune_triton_tiles.py (`gpu_check.sh profile`): every launch configuration it would time gives the shipped
configuration's output bit for bit (on a CPU through Triton's interpreter, at tiny sizes that its tiles cut), and
its equality check and its restoring of the shipped constants can fail."""

from __future__ import annotations

import json
import types

import pytest
import torch
from _support import load_script

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def tiles():
    return load_script("tune_triton_tiles")


def test_every_configuration_gives_the_shipped_output(tiles, tmp_path):
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = tmp_path / "tiles.json"
    assert tiles.main(["--device", device, "--tiny", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    for op in tiles.OPS:
        configs = {(r["case"], r["config"]) for r in rows if r["op"] == op}
        cases = {case for case, _ in configs}
        assert len(configs) >= 3 * len(cases) >= 3, op  # the shipped configuration and at least two others
    assert all(r["equal"] is True and r["note"] is None for r in rows), [r for r in rows if r["equal"] is not True]
    assert sum(r["shipped"] for r in rows) == 7  # one a case: JSMA 2, bounded_relu 3, gaussian_augment 2


def test_a_configuration_that_fails_or_differs_is_reported(tiles, tmp_path, monkeypatch, capsys):
    module = types.SimpleNamespace(K=1)

    def call():
        if module.K == 3:
            raise RuntimeError("out of resources")
        return torch.tensor([float(module.K == 2)])

    monkeypatch.setitem(
        tiles.OPS, "fake", lambda device, tiny: (module, [{"K": 1}, {"K": 2}, {"K": 3}], {"c": (call, 1.0, "u")})
    )
    report = tmp_path / "fake.json"
    assert tiles.main(["--device", "cpu", "--tiny", "--ops", "fake", "--json", str(report)]) == 1
    rows = {r["config"]: r for r in json.loads(report.read_text())["rows"]}
    assert (rows["K=1"]["shipped"], rows["K=1"]["equal"], rows["K=2"]["equal"]) == (True, True, False)
    assert rows["K=3"]["equal"] is None and rows["K=3"]["note"] == "failed: RuntimeError: out of resources"
    assert "fake: c: K=2: another output" in capsys.readouterr().err and module.K == 1


def test_the_shipped_constants_come_back_after_a_failure(tiles):
    pytest.importorskip("triton")
    from nemesis_fast.triton import jsma_saliency_search as module

    shipped = (module.ROWS, module.COLS, module.NUM_WARPS)
    with pytest.raises(RuntimeError), tiles.configured(module, {"ROWS": 64, "COLS": 128, "NUM_WARPS": 8}):
        assert (module.ROWS, module.COLS, module.NUM_WARPS) == (64, 128, 8)
        raise RuntimeError
    assert shipped == (module.ROWS, module.COLS, module.NUM_WARPS)


def test_a_configuration_that_fails_while_timed_is_reported(tiles, tmp_path, monkeypatch, capsys):
    module = types.SimpleNamespace(K=1)
    calls = {1: 0, 2: 0}

    def call():
        calls[module.K] += 1
        if module.K == 2 and calls[2] > 1:  # equal on its first call, then failing
            raise RuntimeError("launch failed")
        return torch.zeros(1)

    monkeypatch.setitem(tiles.OPS, "fake", lambda device, tiny: (module, [{"K": 1}, {"K": 2}], {"c": (call, 2.0, "u")}))
    monkeypatch.setattr(tiles, "copy_bandwidth_gbps", lambda device: 1.0)
    report = tmp_path / "fake.json"
    assert tiles.main(["--device", "cpu", "--ops", "fake", "--json", str(report)]) == 1
    rows = {r["config"]: r for r in json.loads(report.read_text())["rows"]}
    assert rows["K=1"]["ms"] > 0 and rows["K=1"]["throughput"] == pytest.approx(2.0 / (rows["K=1"]["ms"] / 1e3))
    assert rows["K=2"]["equal"] is True and rows["K=2"]["note"] == "failed: RuntimeError: launch failed"
    assert "fake: c: K=2: failed: RuntimeError: launch failed" in capsys.readouterr().err


def test_a_failing_shipped_configuration_is_reported_and_the_other_ops_still_run(tiles, tmp_path, monkeypatch, capsys):
    broken, working = types.SimpleNamespace(K=1), types.SimpleNamespace(K=1)

    def fails():
        raise RuntimeError("no kernel image")

    def works():
        return torch.tensor([1.0])

    monkeypatch.setitem(
        tiles.OPS, "broken", lambda device, tiny: (broken, [{"K": 1}, {"K": 2}], {"c": (fails, 1.0, "u")})
    )
    monkeypatch.setitem(
        tiles.OPS, "fine", lambda device, tiny: (working, [{"K": 1}, {"K": 2}], {"c": (works, 1.0, "u")})
    )
    report = tmp_path / "ops.json"
    assert tiles.main(["--device", "cpu", "--tiny", "--ops", "broken", "fine", "--json", str(report)]) == 1
    rows = {(r["op"], r["config"]): r for r in json.loads(report.read_text())["rows"]}
    assert rows["broken", "K=1"]["note"] == "failed: RuntimeError: no kernel image"
    assert rows["broken", "K=2"]["note"] == "not run: the shipped configuration failed"
    assert rows["fine", "K=1"]["equal"] is True and rows["fine", "K=2"]["equal"] is True
    assert "broken: c: K=1: failed: RuntimeError: no kernel image" in capsys.readouterr().err


def test_triton_ops_off_a_gpu_need_the_interpreter(tiles, monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert tiles.main(["--device", "cpu", "--tiny", "--ops", "jsma"]) == 2
    assert "TRITON_INTERPRET=1" in capsys.readouterr().err
