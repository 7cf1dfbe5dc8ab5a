"""scripts/compare_authors_curves.py: a source check's models against the authors' black-box curves."""

import json

import pytest
from _support import load_script

compare = load_script("compare_authors_curves")

EPS = [0.1, 0.2, 0.3]
CURVES = {
    "fgsm": {"standard": [90.0, None, 30.0], "gda": [99.0, 90.0, 60.0]},
    "rfgsm": {"standard": [95.0, 70.0, 40.0]},
}


def cell(**accuracy):
    return {
        "images": 10,
        "accuracy": {model: dict(zip(("run_source", "variant_source"), v)) for model, v in accuracy.items()},
    }


def test_differences_are_taken_where_both_curves_are_known_and_checks_count_as_their_defense():
    check = {
        "cells": {
            "fgsm 0.1": cell(standard=(92.0, 88.0), **{"standard-first1000": (None, 80.0)}),
            "fgsm 0.2": cell(standard=(60.0, 50.0)),  # the authors' point is hidden: not compared
            "fgsm 0.3": cell(standard=(33.0, 27.0), gda=(65.0, 55.0)),
            "fgsm 0.08": cell(standard=(95.0, 95.0)),  # not on the authors' grid
            "deepfool None": cell(standard=(88.0, 80.0)),
        }
    }
    found = compare.differences(check, CURVES, EPS)
    assert found[("standard", "run_source", "fgsm")] == pytest.approx([2.0, 3.0])
    assert found[("standard", "variant_source", "fgsm")] == pytest.approx([-2.0, -3.0])
    assert found[("standard-first1000", "variant_source", "fgsm")] == pytest.approx([-10.0])
    assert ("standard-first1000", "run_source", "fgsm") not in found  # no run verdicts for a check's model
    assert found[("gda", "variant_source", "fgsm")] == pytest.approx([-5.0])
    assert compare.summary([2.0, -4.0]) == "3.0 (-1.0; 2 eps)"
    assert compare.own("gda") and not compare.own("fgsm_adversarial") and not compare.own("standard-first1000")


def test_the_committed_curves_cover_both_figures_and_every_defense():
    authors = json.loads(compare.CURVES.read_text())
    assert authors["eps"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    for figure in ("resnet/relu", "cnn/relu"):
        for attack in ("fgsm", "rfgsm"):
            curves = authors["sources"][figure][attack]
            assert len(curves) == 7 and all(len(v) == 5 for v in curves.values()), (figure, attack)
