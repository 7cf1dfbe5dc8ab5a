"""The evaluation's attacks as the config sets them (R+FGSM's alpha scales with the sweep's eps, PGD's step is
pgd_step_ratio * eps / steps) and the cache keys that must tell units apart (a black-box unit's eps, a certify
unit's smoothing settings)."""

from __future__ import annotations

import pytest
from torch import nn

from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.parallel import Workers

TINY = {"test_samples": 16, "batch_size": 8, "defenses": ["standard"], "blackbox_eps": [0.1, 0.3]}


def _evaluation(tmp_path, **overrides):
    config = load_config(overrides={**TINY, "out_dir": str(tmp_path / "o"), **overrides})
    return Evaluation(config, Workers(), log=lambda m: None, progress=False)


def test_rfgsm_alpha_keeps_its_ratio_to_eps_and_pgds_step(tmp_path):
    attacks = _evaluation(tmp_path).attacks  # MNIST: rfgsm_eps 0.3, rfgsm_alpha 0.05; PGD 40 steps, ratio 2.5
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    rfgsm = attacks.make("rfgsm", model, 0, 0.15)
    assert rfgsm.eps == 0.15 and rfgsm.alpha == pytest.approx(0.025)
    pgd = attacks.make("pgd", model, 0, 0.2)
    assert pgd.alpha == pytest.approx(2.5 * 0.2 / 40) and pgd.steps == 40


def test_a_blackbox_units_key_holds_its_eps(tmp_path):
    attacks = _evaluation(tmp_path).attacks
    assert attacks.blackbox_key("fgsm", 0.1, (0, 8)) != attacks.blackbox_key("fgsm", 0.3, (0, 8))


def test_a_certify_units_key_holds_the_smoothing_settings(tmp_path):
    keys = [
        _evaluation(tmp_path, certify={"images": 8, "n": n}).certification.key("standard", (0, 8)) for n in (100, 200)
    ]
    assert keys[0] != keys[1]
