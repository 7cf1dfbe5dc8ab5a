"""The black-box table's comparison with the paper: the difference is this run minus the paper, "!" only beyond 5
points; the authors' white-box table takes feature squeezing's BPDA row, not its own-gradient row."""

from __future__ import annotations

from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.config import MASKED
from nemesis_fast.evaluation.report import Cell, Results
from nemesis_fast.evaluation.tables import authors_table, blackbox_table, whitebox_table


def _results(defenses, cells, **overrides):
    config = load_config(overrides={"defenses": defenses, "blackbox_eps": [], **overrides}).to_dict()
    return Results(config=config, version="t", device="cpu", world_size=1, cells=cells)


def test_difference_is_run_minus_paper_and_marked_beyond_five_points():
    cells = [Cell("standard", "fgsm", "blackbox", 0.3, 96.0, 100, 0, 0, 0, 0)]
    cells += [Cell("standard", "rfgsm", "blackbox", 0.3, 30.0, 100, 0, 0, 0, 0)]
    results = _results(["standard"], cells, blackbox_attacks=["fgsm", "rfgsm"])
    header, rows = blackbox_table(results)
    assert header[2:] == ["FGSM", "R+FGSM"]
    assert rows[0][2] == "96.00 (94.46, +1.5)"  # paper 94.46: within 5 points, no mark
    assert rows[0][3] == "30.00 (40.70, -10.7 !)"  # paper 40.70: 10.7 points below


def test_feature_squeezing_is_compared_with_the_authors_through_bpda():
    cells = [Cell("feature_squeezing", "fgsm", "whitebox", 0.1, 80.0, 100, 0, 0, 0, 0)]
    cells += [Cell("feature_squeezing", "fgsm", MASKED, 0.1, 99.0, 100, 0, 0, 0, 0)]
    _, rows = authors_table(_results(["feature_squeezing"], cells), "whitebox", "fgsm")
    assert rows[0][:2] == ["Feature squeezing", "93.8 / 80.0"]


def test_the_whitebox_table_has_the_gradient_masking_rows_after_the_defenses():
    cells = [Cell("feature_squeezing", "fgsm", "whitebox", 0.1, 80.0, 100, 0, 0, 0, 0)]
    cells += [Cell("feature_squeezing", "fgsm", MASKED, 0.1, 99.0, 100, 0, 0, 0, 0)]
    _, rows = whitebox_table(_results(["feature_squeezing"], cells, whitebox_eps=[0.1]), "fgsm")
    assert rows == [["Feature squeezing", "80.00"], ["Feature squeezing (gradient masking)", "99.00"]]


def test_the_blackbox_table_takes_each_attack_at_its_configured_eps_not_the_sweeps():
    cells = [Cell("standard", "fgsm", "blackbox", 0.3, 96.0, 100, 0, 0, 0, 0)]
    cells += [Cell("standard", "fgsm", "blackbox", 0.1, 99.0, 100, 0, 0, 0, 0)]
    results = _results(["standard"], cells, blackbox_attacks=["fgsm"], blackbox_eps=[0.1, 0.3])
    assert blackbox_table(results)[1][0][2].startswith("96.00 ")
