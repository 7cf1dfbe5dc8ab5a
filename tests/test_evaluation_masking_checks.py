"""The gradient-masking checks' sampling allowance (two binomial standard errors of *both* accuracies, plus 0.5
points) and the chance check's threshold eps (at least 0.5, inclusive), computed by hand."""

from __future__ import annotations

from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.checks import gradient_masking_checks
from nemesis_fast.evaluation.report import Cell, Results


def _results(cells):
    config = load_config(overrides={"defenses": ["standard"], "blackbox_eps": []}).to_dict()
    return Results(config=config, version="t", device="cpu", world_size=1, cells=cells)


def _c(attack, eps, accuracy, samples=100):
    return Cell("standard", attack, "whitebox", eps, accuracy, samples, 0.0, 0.0, 0.0, 0.0)


def test_the_slack_is_two_standard_errors_of_the_difference_plus_half_a_point():
    # FGSM 40%, PGD 54% on 100 images: slack = 2 * sqrt(54*46/100 + 40*60/100) + 0.5 = 14.48 > 14: pass
    (check,) = gradient_masking_checks(_results([_c("fgsm", 0.1, 40.0), _c("pgd", 0.1, 54.0)]))
    assert check.iterative == "pass"
    # PGD 55%: slack = 2 * sqrt(24.75 + 24) + 0.5 = 14.46 < 15: fail
    (check,) = gradient_masking_checks(_results([_c("fgsm", 0.1, 40.0), _c("pgd", 0.1, 55.0)]))
    assert check.iterative == "FAIL (PGD 55.0% > 40.0% at eps 0.1)"


def test_the_chance_check_runs_at_eps_one_half():
    (check,) = gradient_masking_checks(_results([_c("fgsm", 0.5, 50.0), _c("pgd", 0.5, 50.0)]))
    assert check.chance.startswith("FAIL (50.0% at eps 0.5, chance 10%)")
    (check,) = gradient_masking_checks(_results([_c("fgsm", 0.5, 5.0), _c("pgd", 0.5, 5.0)]))
    assert check.chance == "pass"
