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
    written = json.loads(report.read_text())
    rows = {r["config"]: r for r in written["rows"]}
    assert (rows["K=1"]["shipped"], rows["K=1"]["equal"], rows["K=2"]["equal"]) == (True, True, False)
    assert "copy_GB_per_s" not in written and all(r["ms"] is None for r in rows.values())  # --tiny: untimed
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
    printed = capsys.readouterr()
    assert "broken: c: K=1: failed: RuntimeError: no kernel image" in printed.err
    assert printed.out.count("| broken | c | K=1 (shipped) |") == 1  # each op's table holds its own rows alone


def test_triton_ops_off_a_gpu_need_the_interpreter(tiles, monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert tiles.main(["--device", "cpu", "--tiny", "--ops", "jsma"]) == 2
    assert "TRITON_INTERPRET=1" in capsys.readouterr().err


def test_the_shipped_configuration_is_the_modules_constants_now(tiles):
    module = types.SimpleNamespace(K=2, W=4)
    candidates = [{"K": 1, "W": 4}, {"K": 2, "W": 4}, {"K": 2, "W": 8}]
    assert tiles.with_shipped(module, candidates) == [{"K": 2, "W": 4}, {"K": 1, "W": 4}, {"K": 2, "W": 8}]


def test_each_configuration_has_its_own_label_and_changes_only_what_it_names(tiles):
    pytest.importorskip("triton")
    for op, cases_of in tiles.OPS.items():
        module, configs, _ = cases_of(torch.device("cpu"), True)
        shipped = configs[0]
        assert shipped == {name: getattr(module, name) for name in shipped}, op
        labels = [tiles.label(config) for config in configs]
        assert len(set(labels)) == len(configs) >= 3, labels
        for config, label in zip(configs, labels):
            assert config.keys() == shipped.keys(), label
            for name, value in config.items():
                if isinstance(value, dict):  # launch options: the warps alone change
                    assert {**value, "num_warps": None} == {**shipped[name], "num_warps": None}, label
                    assert f"num_warps={value['num_warps']}" in label.split(), label
                else:
                    assert f"{name}={value}" in label.split(), label


def flat(value: object) -> list[torch.Tensor]:
    """The tensors in `value` (a tensor, or nested tuples and lists of them and of other things)."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in flat(item)] if isinstance(value, (tuple, list)) else []


def fake_kernels(monkeypatch, module, fakes: dict) -> list:
    """`module`'s kernels replaced by `fakes` (name -> function): the calls, (name, arguments, result), in order."""
    calls = []
    for name, fake in fakes.items():

        def record(*args, name=name, fake=fake):
            result = fake(*args)
            calls.append((name, args, result))
            return result

        monkeypatch.setattr(module, name, record)
    return calls


def test_the_jsma_cases_search_the_pairs_they_count_on_scores_as_named(tiles, monkeypatch):
    pytest.importorskip("triton")
    module, configs, cases = tiles.jsma_cases(torch.device("cpu"), True)
    calls = fake_kernels(monkeypatch, module, {"jsma_saliency_search_triton": lambda *args: None})
    for case, (call, work, unit) in cases.items():
        calls.clear()
        call()
        ((_, (target, other, domain, increase), _),) = calls
        batch, n = target.shape
        assert f"B = {batch}, n = {n}" in case and (work, unit) == (batch * n * (n - 1) / 2, "pairs/s"), case
        assert domain.dtype == torch.bool and domain.shape == (batch, n) and domain.all() and increase is True
        constant = [score.unique().numel() == 1 for score in (target, other)]
        assert constant == [case.startswith("equal scores")] * 2, case
    # the tiny size cuts every tile, after whole column tiles of the widest
    assert all(n % config["ROWS"] and n % config["COLS"] for config in configs) and n > 2 * max(
        config["COLS"] for config in configs
    )


def test_the_bounded_relu_cases_compare_every_output_and_count_the_bytes_moved(tiles, monkeypatch):
    pytest.importorskip("triton")
    module, configs, cases = tiles.bounded_relu_cases(torch.device("cpu"), True)
    fakes = {
        "bounded_relu_triton": lambda x, t: torch.empty_like(x),
        "bounded_relu_backward_triton": lambda grad, out, t: torch.empty_like(grad),
        "bounded_relu_masked_triton": lambda x, t: (
            torch.empty_like(x),
            torch.empty((len(x) + 7) // 8, dtype=torch.uint8),
        ),
        "bounded_relu_masked_backward_triton": lambda grad, mask: torch.empty_like(grad),
    }
    calls = fake_kernels(monkeypatch, module, fakes)
    kernels = {}
    for case, (call, work, unit) in cases.items():
        calls.clear()
        returned = call()
        kernels[case.split(",")[0]] = [name for name, _, _ in calls]
        made = [t for _, _, result in calls for t in flat(result)]
        assert sorted(map(id, flat(returned))) == sorted(map(id, made)), case  # every output checked for equality
        if len(calls) == 2:  # the backward takes the forward's output (or its mask) after the incoming gradient
            forward, backward = calls
            assert all(any(t is o for o in flat(forward[2])) for t in flat(backward[1])[1:]), case
        moved = sum(t.nbytes for _, args, result in calls for t in flat(args) + flat(result))
        assert unit == "GB/s" and work == pytest.approx(moved / 1e9, rel=1e-4), case
    assert kernels == {
        "forward": ["bounded_relu_triton"],
        "forward + backward": ["bounded_relu_triton", "bounded_relu_backward_triton"],
        "save='mask' forward + backward": ["bounded_relu_masked_triton", "bounded_relu_masked_backward_triton"],
    }
    # the tiny size: whole blocks of every size, then a part one, and a mask's last byte in part
    n = len(flat(calls[0][1])[0])
    assert n % 8 and all(n % c["BLOCK"] and n % (8 * c["BYTES"]) for c in configs)
    assert n > max(c["BLOCK"] for c in configs)


def test_the_gaussian_augment_cases_count_the_bytes_written_as_named(tiles, monkeypatch):
    pytest.importorskip("triton")
    module, _, cases = tiles.gaussian_augment_cases(torch.device("cpu"), True)

    def augment(x, copies, sigma, clip_min, clip_max, include_original, seed, offset, out_dtype):
        return torch.empty(len(x) * (copies + include_original), *x.shape[1:], dtype=out_dtype or x.dtype)

    calls = fake_kernels(monkeypatch, module, {"gaussian_augment_triton": augment})
    features = []
    for case, (call, work, unit) in cases.items():
        calls.clear()
        returned = call()
        ((_, (x, copies, *_), result),) = calls
        images, _, size, _ = x.shape
        assert case == f"{images} images of 3x{size}x{size} x ({copies} + 1), float32" and returned is result
        assert unit == "GB written/s" and work == pytest.approx(result.nbytes / 1e9), case
        features.append(x[0].numel() % 4)
    assert 0 in features and any(features)  # four features at a time, and the one-feature kernel


def test_the_timed_rows_and_the_table_set_each_configuration_beside_the_shipped_one(
    tiles, tmp_path, monkeypatch, capsys
):
    module = types.SimpleNamespace(K=1)
    calls = {1: 0, 2: 0, 3: 0}

    def call():
        calls[module.K] += 1
        if module.K == 3:
            raise RuntimeError("out of resources")
        return torch.zeros(1)

    timed = []

    def time_interleaved(providers, device, *, failures):
        timed.append(sorted(providers))
        return {"K=1": 2.0, "K=2": 4.0}

    monkeypatch.setitem(
        tiles.OPS, "fake", lambda device, tiny: (module, [{"K": 1}, {"K": 2}, {"K": 3}], {"c": (call, 8.0, "u")})
    )
    monkeypatch.setattr(tiles, "time_interleaved", time_interleaved)
    monkeypatch.setattr(tiles, "copy_bandwidth_gbps", lambda device: 100.0)
    monkeypatch.setattr(tiles, "device_name", lambda device: f"the {device}")
    report = tmp_path / "fake.json"
    assert tiles.main(["--ops", "fake", "--json", str(report)]) == 1  # K=3 failed
    written = json.loads(report.read_text())
    assert (written["device"], written["copy_GB_per_s"]) == ("the cuda", 100.0)  # --device's default: the GPU
    assert timed == [["K=1", "K=2"]] and calls == {1: 2, 2: 1, 3: 1}  # a configuration that failed: not timed
    rows = {r["config"]: (r["ms"], r["throughput"], r["vs_shipped"]) for r in written["rows"]}
    assert rows == {"K=1": (2.0, 4000.0, 1.0), "K=2": (4.0, 2000.0, 0.5), "K=3": (None, None, None)}
    table = capsys.readouterr().out.splitlines()
    assert "| fake | c | K=1 (shipped) | 2 | 4000 u | 1.000x | True |" in table, table
    assert "| fake | c | K=2 | 4 | 2000 u | 0.500x | True |" in table, table
    assert "| fake | c | K=3 | failed: RuntimeError: out of resources | - | - | None |" in table, table


def test_the_json_keeps_the_ops_finished_before_a_stop(tiles, tmp_path, monkeypatch):
    class Stopped(BaseException):
        pass

    def stopped(device, tiny):
        raise Stopped

    fine = types.SimpleNamespace(K=1)
    monkeypatch.setitem(
        tiles.OPS, "fine", lambda device, tiny: (fine, [{"K": 1}, {"K": 2}], {"c": (lambda: torch.ones(1), 1.0, "u")})
    )
    monkeypatch.setitem(tiles.OPS, "stopped", stopped)
    report = tmp_path / "ops.json"
    with pytest.raises(Stopped):
        tiles.main(["--device", "cpu", "--tiny", "--ops", "fine", "stopped", "--json", str(report)])
    assert [(r["op"], r["config"]) for r in json.loads(report.read_text())["rows"]] == [
        ("fine", "K=1"),
        ("fine", "K=2"),
    ]
