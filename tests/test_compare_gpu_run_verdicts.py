"""compare_gpu_run: a GPU cell below the CPU's is judged like one above; the markdown's flags and count; only
cw_test_samples of the attack settings is trimmed."""

import math

import pytest
from _support import load_script

from nemesis_fast.evaluation import load_config, preset_path  # noqa: E402

compare = load_script("compare_gpu_run")


def test_a_gpu_cell_three_points_below_the_cpu_is_beyond_sampling_error():
    # se = 100 * sqrt((0.93*0.07 + 0.90*0.10) / 1000) = 1.2468 points; |-3| > 2.49
    cell = compare.compare_cell(cpu=93.0, gpu=90.0, n=1000)
    assert cell["difference"] == pytest.approx(-3.0)
    assert cell["standard_error"] == pytest.approx(100 * math.sqrt((0.93 * 0.07 + 0.9 * 0.1) / 1000))
    assert not cell["within_sampling_error"]
    assert compare.compare_cell(cpu=92.0, gpu=90.0, n=1000)["within_sampling_error"]  # 2 < 2 * 1.28


def test_markdown_flags_the_cells_beyond_two_errors_and_counts_the_others():
    near = compare.compare_cell(cpu=90.0, gpu=91.0, n=1000)
    far = compare.compare_cell(cpu=90.0, gpu=80.0, n=1000)
    columns = ["clean", *(a for a, _ in compare.COLUMNS)]
    rows = {"standard": {c: near for c in columns}, "gda": {c: (far if c == "cw" else near) for c in columns}}
    text = compare.markdown(rows, "H100")
    assert f"{2 * len(columns) - 1} of {2 * len(columns)} cells within two standard errors." in text
    assert text.count(" !)") == 1 and "80.00 / 90.00 (-10.00 +- " in text


def test_another_attack_images_setting_than_cw_is_a_difference():
    paper = load_config(preset_path("paper")).to_dict()
    check = load_config(preset_path("paper_gpu_check"), {"device": "cpu"}).to_dict()
    check["attack"]["pgd_test_samples"] = paper["attack"]["pgd_test_samples"] + 1
    with pytest.raises(SystemExit, match="the GPU run's 'attack' differs"):
        compare.check_same_experiment(check, paper)
