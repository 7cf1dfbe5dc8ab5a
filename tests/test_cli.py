"""`nemesis-fast bench`: the benchmark suite from the command line (train and evaluate have their own files)."""

from __future__ import annotations

import json

import pytest

from nemesis_fast.cli import main


def test_bench_prints_a_table_and_writes_json(tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert main(["bench", "bounded_relu", "--device", "cpu", "--size", "4096", "--json", str(report)]) == 0
    assert "forward" in capsys.readouterr().out
    (only,) = json.loads(report.read_text())["reports"]
    assert only["device"] and only["rows"]


def test_bench_bad_arguments_end_in_one_line():
    with pytest.raises(SystemExit, match="unknown benchmark nope; choose from bounded_relu"):
        main(["bench", "nope", "--device", "cpu"])
    with pytest.raises(SystemExit, match="--device must name a device such as 'cpu' or 'cuda:0', got 'gpu'"):
        main(["bench", "bounded_relu", "--device", "gpu"])
    with pytest.raises(SystemExit, match="--device is 'cuda:99', but"):
        main(["bench", "bounded_relu", "--device", "cuda:99"])
