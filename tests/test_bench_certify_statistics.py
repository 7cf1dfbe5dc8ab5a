"""bench.certify's figures by hand: standard errors of the mean, paired differences nemesis_fast - ART and their
z-scores, the agreement note, the summary's abstention and accuracy, the speed-up and the time split's shares."""

import math
import sys

import pytest
import torch
from torch import nn

from nemesis_fast.bench import certify


def test_standard_error_is_the_sample_std_over_root_n():
    values = torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    # mean 0.75, sample variance (0.5625 + 3 * 0.0625) / 3 = 0.25: std 0.5, se 0.5 / 2
    assert certify._standard_error(values) == pytest.approx(0.25)


def test_summary_counts_abstentions_as_neither_right_nor_class_zero():
    prediction, labels = torch.tensor([0, -1, 2, 0]), torch.tensor([0, 1, 2, 3])
    out = certify._summary(prediction, torch.tensor([0.5, 0.0, 0.25, 1.0]), labels)
    assert out["abstain"] == pytest.approx(0.25) and out["accuracy"] == pytest.approx(0.5)
    assert out["mean_radius"] == pytest.approx(0.4375)
    assert out["abstain_se"] == pytest.approx(math.sqrt(0.25) / 2)  # std of 0,1,0,0 is 0.5


def test_paired_differences_are_ours_minus_arts_with_their_z_scores():
    ours = {"prediction": torch.tensor([-1, -1, 3, 3]), "radius": torch.tensor([0.0, 0.0, 0.6, 0.2])}
    art = {"prediction": torch.tensor([-1, 3, 3, 3]), "radius": torch.tensor([0.0, 0.3, 0.2, 0.2])}
    out = certify._paired(ours, art)
    # abstain: diffs 0, 1, 0, 0 -> mean 0.25, se 0.25, z 1; radius: 0, -0.3, 0.4, 0 -> mean 0.025
    assert out["abstain_diff"] == pytest.approx(0.25) and out["abstain_diff_se"] == pytest.approx(0.25)
    assert out["abstain_z"] == pytest.approx(1.0)
    radius_se = torch.tensor([0.0, -0.3, 0.4, 0.0], dtype=torch.float64).std().item() / 2
    assert out["mean_radius_diff"] == pytest.approx(0.025) and out["mean_radius_diff_se"] == pytest.approx(radius_se)
    assert out["mean_radius_z"] == pytest.approx(0.025 / radius_se)


def test_z_is_none_where_every_image_differs_alike():
    assert certify._z(0.5, 0.0) is None and certify._z(0.0, 0.0) == 0.0 and certify._z(-1.0, 0.5) == -2.0
    alike = certify._paired({"prediction": torch.tensor([1, 2]), "radius": torch.tensor([0.5, 0.75])},
                            {"prediction": torch.tensor([1, 2]), "radius": torch.tensor([0.25, 0.5])})  # fmt: skip
    assert alike["mean_radius_diff"] == 0.25 and alike["mean_radius_z"] is None
    assert certify._agreement(alike).startswith("no sampling error to judge by")


def test_agreement_needs_both_z_scores_below_three_in_size():
    assert certify._agreement({"abstain_z": 0.5, "mean_radius_z": -2.9}).startswith("agree within")
    assert certify._agreement({"abstain_z": 0.5, "mean_radius_z": -3.5}) == "DIFFER beyond sampling error"
    assert certify._agreement({"abstain_z": 3.0, "mean_radius_z": 0.0}) == "DIFFER beyond sampling error"


def test_speedup_is_the_baselines_time_over_the_providers(monkeypatch):
    monkeypatch.setattr(certify, "time_interleaved", lambda runnable, *a, **k: {"ours": 10.0, "ART": 40.0})
    providers = {"ours": lambda warmup=False: None, "ART": lambda warmup=False: None}
    by = {row.provider: row for row in certify._time("case", providers, torch.device("cpu"), 4, "ART")}
    assert by["ours"].speedup == pytest.approx(4.0) and by["ART"].speedup == pytest.approx(1.0)
    assert by["ours"].items_per_s == pytest.approx(400.0)


def test_time_split_shares_are_of_certifys_time(monkeypatch):
    monkeypatch.setattr(certify, "time_interleaved", lambda parts, *a, **k: {"noise": 10.0, "overhead": 30.0})
    row = certify._time_split(nn.Identity(), torch.zeros(2, 1, 28, 28), 100, 50, certify_ms=200.0)
    assert row.extra["noise_share"] == pytest.approx(0.05) and row.extra["all_but_model_share"] == pytest.approx(0.15)


def test_arts_smoother_without_statsmodels_takes_the_drop_ins_scipy_bound(monkeypatch):
    pytest.importorskip("art")
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    from nemesis_fast.certify import clopper_pearson_lower

    monkeypatch.setitem(sys.modules, "statsmodels", None)  # as where it is not installed
    art = PyTorchRandomizedSmoothing(
        nn.Linear(4, 2), nn.CrossEntropyLoss(), (4,), 2, sample_size=10, scale=0.25, alpha=0.01, device_type="cpu"
    )
    art = certify.with_statsmodels_or_scipy_bound(art)
    assert art.substituted_bound
    assert art._lower_confidence_bound(27, 30) == float(clopper_pearson_lower(27, 30, 0.01))
