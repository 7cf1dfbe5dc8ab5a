"""Each [defense] setting of the evaluation reaches the recipe settings (and so the cache key) of its model: none
accepted and ignored."""

from __future__ import annotations

from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.parallel import Workers


def test_defense_settings_reach_the_recipes(tmp_path):
    defense = {
        "label_smoothing": 0.8,
        "gda_sigma": 0.2,
        "gda_copies": 3,
        "fgsm_adversarial_eps": 0.2,
        "vat_eps": 1.5,
        "vat_xi": 1e-5,
    }
    config = load_config(overrides={"out_dir": str(tmp_path / "o"), "defense": defense})
    models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
    assert models.recipe_settings("label_smoothing")["confidence"] == 0.8
    gda = models.recipe_settings("gda")
    assert (gda["sigma"], gda["copies"]) == (0.2, 3)
    assert models.recipe_settings("fgsm_adversarial")["eps"] == 0.2
    vat = models.recipe_settings("vat")
    assert (vat["eps"], vat["xi"]) == (1.5, 1e-5)
    assert models.key("label_smoothing")["recipe_settings"]["confidence"] == 0.8
