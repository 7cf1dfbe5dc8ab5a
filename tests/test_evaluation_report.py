"""The evaluation's report, on hand-made cells: the gradient-masking checks, a BPDA defense's row, the eps at which
a sweep meets the paper, the sweep and authors' tables and curves, the perturbation quartiles."""

from __future__ import annotations

import math

import pytest
import torch

from nemesis_fast.attacks import FGSM
from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.checks import fgsm_zero_gradient, gradient_masking_checks, softmax_underflow
from nemesis_fast.evaluation.config import MASKED
from nemesis_fast.evaluation.paper import (
    PAPER_MNIST_BLACKBOX,
    authors_curve,
    comparison,
    eps_meeting_paper,
    paper_value,
)
from nemesis_fast.evaluation.plots import plot_sweep
from nemesis_fast.evaluation.report import Cell, Results, perturbation_stats
from nemesis_fast.evaluation.runner import _either
from nemesis_fast.evaluation.tables import authors_table, blackbox_table, sections, sweep_table


def _results(cells: list, blackbox_eps: list[float]) -> Results:
    config = load_config(overrides={"defenses": ["standard"], "blackbox_eps": blackbox_eps}).to_dict()
    return Results(config=config, version="t", device="cpu", world_size=1, cells=cells)


def _c(attack: str, setting: str, eps: float, accuracy: float, samples: int = 1000) -> Cell:
    return Cell("standard", attack, setting, eps, accuracy, samples, 0.0, 0.0, 0.0, 0.0)


def test_gradient_masking_checks_flag_what_athalye_et_al_would():
    honest = [_c("fgsm", "whitebox", 0.1, 40), _c("pgd", "whitebox", 0.1, 10), _c("pgd", "whitebox", 1.0, 0)]
    honest += [_c("fgsm", "whitebox", 1.0, 5), _c("fgsm", "blackbox", 0.1, 80)]
    (check,) = gradient_masking_checks(_results(honest, [0.1]))
    assert (check.iterative, check.whitebox, check.chance, check.flagged) == ("pass", "pass", "pass", False)
    masked = [_c("fgsm", "whitebox", 0.1, 40), _c("pgd", "whitebox", 0.1, 60), _c("pgd", "whitebox", 1.0, 50)]
    masked += [_c("fgsm", "whitebox", 1.0, 5), _c("fgsm", "blackbox", 0.1, 20)]
    (check,) = gradient_masking_checks(_results(masked, [0.1]))
    assert check.iterative == "FAIL (PGD 50.0% > 5.0% at eps 1)"  # the worst of the two eps
    assert check.whitebox.startswith("FAIL (white-box 40.0% > 20.0% at eps 0.1)")
    assert check.chance.startswith("FAIL (50.0% at eps 1") and check.flagged
    small = [_c("pgd", "whitebox", 0.3, 12, samples=100), _c("fgsm", "whitebox", 0.3, 10, samples=100)]
    # White-box against black-box takes the strongest white-box attack at each eps, not single-step FGSM alone.
    overshoot = honest + [_c("fgsm", "whitebox", 0.9, 25), _c("pgd", "whitebox", 0.9, 0)]
    overshoot += [_c("fgsm", "blackbox", 0.9, 9)]
    (check,) = gradient_masking_checks(_results(overshoot, [0.1, 0.9]))
    assert check.whitebox == "pass"
    (check,) = gradient_masking_checks(_results(overshoot[:-2] + overshoot[-1:], [0.1, 0.9]))
    assert check.whitebox == "FAIL (white-box 25.0% > 9.0% at eps 0.9)"
    (check,) = gradient_masking_checks(_results(small, []))  # within sampling error; no large eps: not run
    assert (check.iterative, check.whitebox) == ("pass", "not run")
    assert check.chance == "not run (whitebox_eps has no eps >= 0.5)"
    assert check.own_gradient == "n/a"
    # Through its own gradient the defense looks robust where BPDA breaks it: flagged, though its BPDA rows pass.
    hiding = honest + [_c("fgsm", "whitebox-gradient-masking", 0.1, 75), _c("pgd", "whitebox-gradient-masking", 1.0, 0)]
    (check,) = gradient_masking_checks(_results(hiding, [0.1]))
    assert (check.iterative, check.whitebox, check.chance) == ("pass", "pass", "pass")
    assert check.own_gradient == "FAIL (FGSM through its own gradient 75.0% > 40.0% at eps 0.1)" and check.flagged
    (check,) = gradient_masking_checks(_results(honest + [_c("fgsm", "whitebox-gradient-masking", 0.1, 41)], [0.1]))
    assert check.own_gradient == "pass" and not check.flagged


def test_a_softmax_that_underflows_flags_jsma_on_the_softmax():
    honest = [_c("fgsm", "whitebox", 0.1, 40), _c("pgd", "whitebox", 0.1, 10)]
    results = _results(honest, [])
    (check,) = gradient_masking_checks(results)
    assert check.softmax == "n/a" and not check.flagged  # JSMA on the logits, or no JSMA: nothing measured
    results.softmax_underflow = {"standard": 1.0}
    assert gradient_masking_checks(results)[0].softmax == "pass"
    results.softmax_underflow = {"standard": 76.9}
    (check,) = gradient_masking_checks(results)
    assert check.softmax == "FAIL (76.9% of (image, target) pairs: probability 0, so gradient 0)" and check.flagged


def test_softmax_underflow_counts_the_other_classes_at_probability_0():
    # Logits (0, -50, -200) for image 0: exp(-200) is 0 in float32, exp(-50) is not. Image 1: (0, 0, 0), none.
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3]

    images = torch.tensor([[0.0, -50.0, -200.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).reshape(2, 1, 2, 2)
    labels = torch.tensor([0, 2])
    assert softmax_underflow(Fixed(), images, labels, torch.device("cpu")) == 100 * 1 / 4
    # A label whose own probability is 0 is not one of its targets.
    assert softmax_underflow(Fixed(), images[:1], torch.tensor([2]), torch.device("cpu"), batch_size=1) == 0.0
    assert math.isnan(softmax_underflow(Fixed(), images[:0], labels[:0], torch.device("cpu")))
    # The probability JSMA follows is exactly 0 there, and so is its gradient.
    x = images[:1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(Fixed()(x).softmax(1)[0, 2], x)
    assert torch.count_nonzero(grad) == 0


def test_a_zero_fgsm_gradient_flags_the_defense():
    results = _results([_c("fgsm", "whitebox", 0.1, 40), _c("pgd", "whitebox", 0.1, 10)], [])
    (check,) = gradient_masking_checks(results)
    assert check.zero_gradient == "n/a" and not check.flagged  # no white-box FGSM: nothing measured
    results.fgsm_zero_gradient = {"standard": 1.0}
    assert gradient_masking_checks(results)[0].zero_gradient == "pass"
    results.fgsm_zero_gradient = {"standard": 43.3}
    (check,) = gradient_masking_checks(results)
    assert check.zero_gradient == "FAIL (43.3% of test images: gradient 0, so FGSM leaves them unchanged)"
    assert check.flagged


@pytest.mark.parametrize("labels", ["predicted", "true"])
def test_fgsm_zero_gradient_counts_the_images_fgsm_leaves_unchanged(labels):
    # Logits 200 x (the first three pixels). Image 0 (1, 0, 0), label 0: its float32 softmax is one-hot, so the
    # cross-entropy on its label, its prediction, has gradient 0. Image 1 (0.01, 0, 0): not one-hot. Image 2
    # (0.9, 0.1, 0), label 1: one-hot on its prediction 0, whose gradient is 0, but not on its label.
    class Scaled(torch.nn.Module):
        def forward(self, x):
            return 200 * x.flatten(1)[:, :3]

    images = torch.tensor([[1.0, 0, 0, 0], [0.01, 0, 0, 0], [0.9, 0.1, 0, 0]]).reshape(3, 1, 2, 2)
    y = torch.tensor([0, 0, 1])
    attack = FGSM(Scaled(), 0.5, labels=labels)
    zero = fgsm_zero_gradient(attack, images, y, torch.device("cpu"), batch_size=2)
    assert zero == pytest.approx(100 * (2 if labels == "predicted" else 1) / 3)
    unchanged = (attack.run(images, y).x_adv == images).flatten(1).all(1)
    assert unchanged.sum().item() == round(3 * zero / 100)  # FGSM leaves exactly those images where they are
    assert math.isnan(fgsm_zero_gradient(attack, images[:0], y[:0], torch.device("cpu")))


def test_a_bpda_defenses_row_counts_an_image_fooled_when_either_attack_fools_it():
    t, f = True, False
    bpda = {"correct": torch.tensor([t, t, f, f]), "seconds": 1.0}
    own = {"correct": torch.tensor([t, f, t, f]), "seconds": 2.0}
    for key, values in (("l2", [1.0, 2.0, 3.0, 4.0]), ("linf", [0.1] * 4), ("l0", [5.0] * 4)):
        bpda[key], own[key] = torch.tensor(values), 10 * torch.tensor(values)
    row = _either("whitebox", bpda, own)
    assert row["correct"].tolist() == [t, f, f, f] and row["seconds"] == 3.0
    assert row["l2"].tolist() == [1.0, 20.0, 3.0, 4.0]  # the perturbation of the attack that fooled (BPDA's first)
    fooled_b, fooled_o = torch.tensor([t, t, f, f, t]), torch.tensor([t, f, t, f, t])
    clean = torch.tensor([t] * 5)
    bpda = {"norm": torch.tensor([1.0, 2.0, 3.0, 4.0, 9.0]), "fooled": fooled_b, "clean_correct": clean, "seconds": 1}
    own = {"norm": torch.tensor([2.0, 1.0, 1.5, 0.5, 5.0]), "fooled": fooled_o, "clean_correct": clean, "seconds": 1}
    row = _either("perturbation", bpda, own)
    assert row["fooled"].tolist() == [t, t, t, f, t]
    assert row["norm"][row["fooled"]].tolist() == [1.0, 2.0, 1.5, 5.0]  # the smaller of those that fooled


def test_the_eps_at_which_a_sweep_meets_the_papers_value():
    points = [(0.1, 90.0), (0.01, 99.0), (0.05, 95.0), (0.2, 60.0)]
    assert eps_meeting_paper(points, 94.46) == pytest.approx(0.05 + 0.05 * (95 - 94.46) / 5)
    assert eps_meeting_paper(points, 99.5) == 0.01  # already below at the first eps
    assert eps_meeting_paper(points, 10.0) is None
    assert paper_value("mnist", "gda_brelu", "rfgsm") == 75.50 and paper_value("cifar10", "standard", "fgsm") is None


def test_the_sweep_table_counts_the_cells_within_5_points_at_each_eps():
    cells = [_c("fgsm", "blackbox", 0.05, 96.0), _c("fgsm", "blackbox", 0.3, 31.0)]  # paper: 94.46
    header, rows = sweep_table(_results(cells, [0.05, 0.3]), "fgsm")
    assert header == ["defense", "0.05", "0.3", "paper", "meets paper at eps"]
    assert rows[0][0] == "CNN" and rows[0][-2:] == ["94.46", "0.056"]
    assert rows[-1] == ["within 5 points of the paper", "1/1", "0/1", "", ""]


def test_a_cell_exactly_5_points_from_the_papers_is_within_and_one_at_it_at_the_first_eps_meets_it_there():
    assert comparison("mnist", "gda_brelu", "rfgsm", 80.5)["within"]  # paper 75.50: +5.0 exactly
    assert comparison("mnist", "gda_brelu", "rfgsm", 70.5)["within"]
    assert not comparison("mnist", "gda_brelu", "rfgsm", 80.51)["within"]
    cells = [_c("fgsm", "blackbox", 0.05, 94.46), _c("fgsm", "blackbox", 0.3, 31.0)]  # paper: 94.46
    _, rows = sweep_table(_results(cells, [0.05, 0.3]), "fgsm")
    assert rows[0][-1] == "<= 0.05"  # at the paper's value already at the smallest eps


def test_the_papers_fgsm_and_rfgsm_columns_are_the_authors_curves_at_eps_01_and_03():
    """The finding the `paper` preset's table eps rest on: each paper cell within 1 point of the authors' own
    black-box curve, except the R+FGSM cell of FGSM adversarial training (another of their models)."""
    for defense, cells in PAPER_MNIST_BLACKBOX.items():
        fgsm, rfgsm = (
            authors_curve("mnist", "blackbox", "fgsm", defense),
            authors_curve("mnist", "blackbox", "rfgsm", defense),
        )
        assert fgsm[0.1] == pytest.approx(cells["fgsm"], abs=1.0), defense
        if defense != "fgsm_adversarial":
            assert rfgsm[0.3] == pytest.approx(cells["rfgsm"], abs=1.0), defense
    assert authors_curve("mnist", "blackbox", "rfgsm", "fgsm_adversarial")[0.3] > 49.77 + 30  # the paper: 49.77
    assert authors_curve("cifar10", "blackbox", "fgsm", "standard") == {}
    assert authors_curve("mnist", "blackbox", "deepfool", "standard") == {}
    assert 0.5 not in authors_curve("mnist", "blackbox", "fgsm", "standard")  # hidden in their plot


def test_the_authors_table_puts_their_curve_beside_the_runs(tmp_path):
    cells = [_c("fgsm", "blackbox", 0.1, 90.0), _c("fgsm", "blackbox", 0.3, 31.5), _c("fgsm", "blackbox", 0.05, 97.0)]
    results = _results(cells, [0.05, 0.1, 0.3])
    assert plot_sweep(results, tmp_path / "sweep.png") and (tmp_path / "sweep.png").stat().st_size > 0
    header, rows = authors_table(results, "blackbox", "fgsm")
    assert header == ["defense", *(f"{i / 10:g}" for i in range(1, 11))]
    assert rows[0][:5] == ["CNN", "94.0 / 90.0", "68.3", "31.0 / 31.5", "11.9"] and rows[0][5] == "-"
    config = load_config(overrides={"defenses": ["standard", "gda_brelu"], "blackbox_eps": []}).to_dict()
    white = [Cell("gda_brelu", "fgsm", "whitebox", 0.1, 80.0, 100, 0, 0, 0, 0)]
    white += [Cell("gda_brelu", "fgsm", MASKED, 0.1, 95.0, 100, 0, 0, 0, 0)]
    results = Results(config=config, version="t", device="cpu", world_size=1, cells=white)
    _, rows = authors_table(results, "whitebox", "fgsm")
    assert rows[0][:2] == ["CNN", "73.9"]  # no cell of this run: the authors' value alone
    assert rows[1][:2] == ["GDA + BReLU (gradient masking)", "97.2 / 95.0"]  # they used its own gradient
    results.config["dataset"] = "cifar10"
    assert authors_table(results, "whitebox", "fgsm") == (["defense"], [])


def test_perturbation_quartiles_count_unfooled_images_as_infinitely_far():
    norm = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 9.0])
    fooled = torch.tensor([True, True, True, False, False, True])
    clean = torch.tensor([True, True, True, True, True, False])  # the last image was misclassified: left out
    stats = perturbation_stats("standard", "deepfool", norm, fooled, clean, 0.0)
    assert (stats.samples, stats.values) == (5, [1.0, 2.0, 3.0]) and stats.success == pytest.approx(60.0)
    assert (stats.q25, stats.median, stats.q75) == (2.0, 3.0, math.inf)


def test_columns_on_fewer_test_images_say_so():
    """C&W and PGD on the first N test images sat beside FGSM on all of them, with nothing in the tables to say."""
    fgsm_eps = load_config().attack.fgsm_eps
    cells = [_c("fgsm", "blackbox", fgsm_eps, 90, samples=20), _c("cw", "blackbox", None, 40, samples=10)]
    cells += [_c("pgd", "whitebox", 0.1, 30, samples=10), _c("fgsm", "whitebox", 0.1, 20, samples=20)]
    results = _results(cells, [])
    results.config["whitebox_attacks"], results.config["whitebox_eps"] = ["fgsm", "pgd"], [0.1]
    header, _ = blackbox_table(results)
    assert header[header.index("FGSM") + 1 :] == ["R+FGSM", "DeepFool", "JSMA", "C&W (first 10 images)"]
    titles = [title for title, *_ in sections(results)]
    assert "White-box PGD accuracy (%) against eps (first 10 images)" in titles
    assert "White-box FGSM accuracy (%) against eps" in titles


def test_only_mnists_own_test_images_are_set_beside_the_papers_numbers(tmp_path):
    """The paper's table and the authors' curves are MNIST's: a run on other images in MNIST's format (here the
    sample's pixels inverted, as a Fashion-MNIST stands for) or on synthetic data shows its cells alone."""
    import dataclasses
    import gzip

    from nemesis_fast.data import load_mnist
    from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR
    from nemesis_fast.evaluation.dataset import load_data

    other = tmp_path / "other"
    other.mkdir()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = load_mnist(MNIST_SAMPLE_DIR, split)
        pixels = (255 - images[:, 0]).numpy()
        header = (0x803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in pixels.shape)
        (other / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + pixels.tobytes()))
        header = (0x801).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
        (other / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.byte().numpy().tobytes()))
    config = load_config(overrides={"test_samples": 8})
    assert load_data(config).paper_data  # the shipped sample, cut to 8 test images
    for not_mnist in ({"data_dir": str(other)}, {"synthetic": True}):
        assert not load_data(load_config(overrides={"test_samples": 8, **not_mnist})).paper_data
    config = load_config(overrides={"defenses": ["standard"], "blackbox_eps": [0.1], "attack": {"fgsm_eps": 0.1}})
    results = Results(config=config.to_dict(), version="t", device="cpu", world_size=1)
    results.cells = [_c("fgsm", "blackbox", 0.1, 96.0)]
    assert "(94.46" in blackbox_table(results)[1][0][2]
    elsewhere = dataclasses.replace(results, paper_data=False)
    assert blackbox_table(elsewhere)[1][0][2] == "96.00" and sweep_table(elsewhere, "fgsm")[0] == ["defense", "0.1"]
    assert authors_table(elsewhere, "blackbox", "fgsm") == (["defense"], [])
