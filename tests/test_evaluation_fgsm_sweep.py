"""The evaluation's FGSM eps sweep takes each model's gradient on a chunk once (SweptFGSM) and gives, at every eps,
what a fresh FGSM gives: the same verdicts and norms white-box, the same images black-box; the kept gradients are
another model's never, and are dropped when the next model starts."""

from __future__ import annotations

import torch
from _evaluation_cases import TINY, write_config

from nemesis_fast.attacks import FGSM
from nemesis_fast.attacks.base import Attack
from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.parallel import Workers


def _evaluation(tmp_path) -> Evaluation:
    text = TINY.replace("train_samples = 600", "train_samples = 100").replace('dataset = "mnist"\n', "")
    path = write_config(tmp_path, text, dataset="mnist", synthetic=True, out_dir=str(tmp_path / "run"))
    return Evaluation(load_config(path), Workers(), log=lambda m: None, progress=False)


def test_an_fgsm_sweep_gives_each_eps_what_a_fresh_fgsm_gives(tmp_path, monkeypatch):
    evaluation = _evaluation(tmp_path)
    attacks, labels = evaluation.attacks, evaluation.config.attack.fgsm_labels
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
                assert torch.equal(entry["l2"], expected.l2.float().cpu())
    # per sweep of a model: one gradient a chunk for its three eps, one for each fresh FGSM; "standard" again (its
    # entries cached) takes no gradient for its units
    sweep = ["SweptFGSM", "FGSM", "SweptFGSM", "FGSM"] + ["FGSM"] * 4
    assert gradients == sweep * 2 + ["FGSM"] * 6

    source = evaluation.models.get(SOURCE)
    for eps in (0.1, 0.3):
        for chunk in chunks:
            x, y = attacks.test_chunk(chunk)
            crafted = attacks.adversarial("fgsm", eps, chunk)["x_adv"]
            assert torch.equal(crafted, FGSM(source, eps, labels=labels)(x, y).cpu())
    assert sorted(attacks._fgsm_gradients) == [(SOURCE, True, chunk) for chunk in chunks]  # the defenses' dropped
