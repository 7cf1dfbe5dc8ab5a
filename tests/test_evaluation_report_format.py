"""The report: perturbation quartiles at the nearest rank (the rank rounded half up), cell labels with eps as
given, and the CSV's empty eps for cells without one."""

from __future__ import annotations

import csv
import io

import torch

from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.report import Cell, Results, perturbation_stats, to_csv


def test_quartiles_take_the_nearest_rank_rounded_half_up():
    norm = torch.tensor([1.0, 2.0, 3.0, 4.0])
    everything = torch.ones(4, dtype=torch.bool)
    stats = perturbation_stats("standard", "cw", norm, everything, everything, 0.0)
    # ranks 0.75, 1.5, 2.25 of 0..3: 1, 2, 2
    assert (stats.q25, stats.median, stats.q75) == (2.0, 3.0, 3.0)


def test_cell_labels_keep_the_eps_as_given():
    cell = Cell("standard", "fgsm", "whitebox", 0.01, 50.0, 10, 0.0, 0.0, 0.0, 0.0)
    assert cell.label.endswith("eps=0.01")
    assert (
        Cell("standard", "fgsm", "blackbox", 0.01, 50.0, 10, 0.0, 0.0, 0.0, 0.0).label
        == cell.label[: -len(" eps=0.01")]
    )


def test_csv_leaves_a_missing_eps_empty():
    config = load_config(overrides={"defenses": ["standard"]}).to_dict()
    cells = [Cell("standard", "deepfool", "blackbox", None, 12.5, 10, 1.0, 0.5, 3.0, 0.1)]
    rows = list(csv.DictReader(io.StringIO(to_csv(Results(config, "t", "cpu", 1, cells=cells)))))
    assert rows[0]["eps"] == "" and rows[0]["attack"] == "deepfool" and float(rows[0]["accuracy"]) == 12.5
