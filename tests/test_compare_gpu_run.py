"""scripts/compare_gpu_run.py: the GPU run's table beside the CPU run's, cell by cell."""

import math

import pytest
from _support import load_script

from nemesis_fast.evaluation import load_config, preset_path

compare = load_script("compare_gpu_run")


def test_a_cell_is_within_sampling_error_up_to_two_standard_errors():
    cell = compare.compare_cell(cpu=90.0, gpu=92.0, n=1000)
    error = 100 * math.sqrt((0.9 * 0.1 + 0.92 * 0.08) / 1000)  # 1.28 points
    assert cell["standard_error"] == pytest.approx(error) and cell["difference"] == pytest.approx(2.0)
    assert cell["within_sampling_error"]
    assert not compare.compare_cell(cpu=90.0, gpu=93.0, n=1000)["within_sampling_error"]
    assert compare.compare_cell(cpu=100.0, gpu=100.0, n=500)["within_sampling_error"]  # no error, no difference


def test_only_the_trimmed_experiment_is_compared():
    paper = load_config(preset_path("paper")).to_dict()
    check = load_config(preset_path("paper_gpu_check"), {"device": "cpu", "out_dir": "elsewhere"}).to_dict()
    compare.check_same_experiment(check, paper)  # the trimming and where it ran are not differences
    check["attack"]["jsma_theta"] = 0.1
    with pytest.raises(SystemExit, match="the GPU run's 'attack' differs"):
        compare.check_same_experiment(check, paper)


def test_the_gpu_runs_table_cells_are_read_at_the_tables_eps():
    cells = [
        {"defense": "gda", "attack": "fgsm", "setting": "blackbox", "eps": 0.1, "accuracy": 97.0, "samples": 1000},
        {"defense": "gda", "attack": "fgsm", "setting": "blackbox", "eps": 0.3, "accuracy": 60.0, "samples": 1000},
        {"defense": "gda", "attack": "fgsm", "setting": "whitebox", "eps": 0.1, "accuracy": 91.0, "samples": 1000},
        {"defense": "gda", "attack": "cw", "setting": "blackbox", "eps": None, "accuracy": 86.0, "samples": 500},
    ]
    assert compare.gpu_cells({"cells": cells}) == {("gda", "fgsm"): (97.0, 1000), ("gda", "cw"): (86.0, 500)}
