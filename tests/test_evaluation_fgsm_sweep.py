"""The evaluation's FGSM eps sweep takes each model's gradient on a chunk once (SweptFGSM) and gives, at every eps,
what a fresh FGSM gives: the same verdicts and norms white-box, the same images black-box; the kept gradients are
another model's never, and are dropped when the next model starts."""

from __future__ import annotations

import pytest
import torch
from _evaluation_cases import TINY, write_config

from nemesis_fast.attacks import FGSM
from nemesis_fast.attacks.base import Attack
from nemesis_fast.attacks.norms import perturbation_norms
from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.parallel import Workers


def _evaluation(tmp_path, labels: str) -> Evaluation:
    text = TINY.replace("train_samples = 600", "train_samples = 100").replace('dataset = "mnist"\n', "")
    text = text.replace("jsma_gamma = 0.05", f"jsma_gamma = 0.05\nfgsm_labels = {labels!r}")
    path = write_config(tmp_path, text, dataset="mnist", synthetic=True, out_dir=str(tmp_path / "run"))
    return Evaluation(load_config(path), Workers(), log=lambda m: None, progress=False)


@pytest.mark.parametrize("labels", ["true", "predicted"])
def test_an_fgsm_sweep_gives_each_eps_what_a_fresh_fgsm_gives(tmp_path, monkeypatch, labels):
    """Bit for bit, with the config's fgsm_labels (the tiny models' predictions are often wrong: "predicted" steps
    along another gradient than "true" does), in the verdicts and in every norm."""
    evaluation = _evaluation(tmp_path, labels)
    attacks = evaluation.attacks
    assert evaluation.config.attack.fgsm_labels == labels
    chunks = evaluation.chunks()[:2]
    gradients = []
    original = Attack.loss_gradient

    def counted(self, *args):
        gradients.append(type(self).__name__)
        return original(self, *args)

    monkeypatch.setattr(Attack, "loss_gradient", counted)
    for defense in ("standard", "gda_brelu", "standard"):
        model = attacks.target(defense)
        for eps in (0.1, 0.2, 0.3):
            for chunk in chunks:
                x, y = attacks.test_chunk(chunk)
                entry = attacks.whitebox(defense, "fgsm", eps, chunk)
                expected = FGSM(model, eps, labels=labels).run(x, y)
                assert torch.equal(entry["correct"], (expected.predictions == y).cpu())
                for norm in ("l0", "l2", "linf"):
                    assert torch.equal(entry[norm], getattr(expected, norm).float().cpu()), norm
    # per sweep of a model: one gradient a chunk for its three eps, one for each fresh FGSM; "standard" again (its
    # entries cached) takes no gradient for its units
    sweep = ["SweptFGSM", "FGSM", "SweptFGSM", "FGSM"] + ["FGSM"] * 4
    assert gradients == sweep * 2 + ["FGSM"] * 6

    source = evaluation.models.get(SOURCE)
    for eps in (0.1, 0.3):
        for chunk in chunks:
            x, y = attacks.test_chunk(chunk)
            crafted, expected = attacks.adversarial("fgsm", eps, chunk), FGSM(source, eps, labels=labels)(x, y)
            assert torch.equal(crafted["x_adv"], expected.cpu())
            for norm, value in zip(("l0", "l2", "linf"), perturbation_norms(expected, x)):
                assert torch.equal(crafted[norm], value.float().cpu()), norm
    assert sorted(attacks._fgsm_gradients) == [(SOURCE, True, chunk) for chunk in chunks]  # the defenses' dropped
