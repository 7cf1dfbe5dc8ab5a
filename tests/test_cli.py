"""`nemesis-fast bench`: the benchmark suite from the command line (train and evaluate have their own files)."""

from __future__ import annotations

import json

import pytest

from nemesis_fast.cli import main


def test_bench_prints_a_table_and_writes_json(tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert main(["bench", "bounded_relu", "--device", "cpu", "--size", "4096", "--json", str(report)]) == 0
    assert "forward" in capsys.readouterr().out
    written = json.loads(report.read_text())
    assert written["complete"] is True
    (only,) = written["reports"]
    assert only["device"] and only["rows"]


def test_bench_json_keeps_the_rows_of_a_suite_stopped_part_way(tmp_path, monkeypatch):
    # On a lent GPU each suite runs under a time limit: the rows measured before the stop must stay in the file.
    from nemesis_fast import bench
    from nemesis_fast.bench.harness import Case, Report

    def stopped_suite(device, **kwargs):
        report = Report("stopped", device)
        report.run(Case("first", {"noop": lambda: None}, baseline="noop", min_seconds=0.0))
        raise KeyboardInterrupt  # stands for the time limit's kill, after the first row was measured

    monkeypatch.setattr(bench, "suite", lambda name: stopped_suite)
    report = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        main(["bench", "bounded_relu", "--device", "cpu", "--json", str(report)])
    written = json.loads(report.read_text())
    assert written["complete"] is False
    (only,) = written["reports"]
    assert only["title"] == "stopped" and [row["case"] for row in only["rows"]] == ["first"]


def test_bench_bad_arguments_end_in_one_line():
    with pytest.raises(SystemExit, match="unknown benchmark nope; choose from bounded_relu"):
        main(["bench", "nope", "--device", "cpu"])
    with pytest.raises(SystemExit, match="--device must name a device such as 'cpu' or 'cuda:0', got 'gpu'"):
        main(["bench", "bounded_relu", "--device", "gpu"])
    with pytest.raises(SystemExit, match="--device is 'cuda:99', but"):
        main(["bench", "bounded_relu", "--device", "cuda:99"])
