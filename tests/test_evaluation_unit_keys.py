"""The evaluation's attacks as the config sets them (R+FGSM's alpha scales with the sweep's eps, PGD's step is
pgd_step_ratio * eps / steps) and the cache keys that must tell units apart (a black-box unit's eps, a certify
unit's smoothing settings)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.runner import Evaluation, Unit
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.parallel import Workers

TINY = {"test_samples": 16, "batch_size": 8, "defenses": ["standard"], "blackbox_eps": [0.1, 0.3]}


def _evaluation(tmp_path, **overrides):
    config = load_config(overrides={**TINY, "out_dir": str(tmp_path / "o"), **overrides})
    return Evaluation(config, Workers(), log=lambda m: None, progress=False)


class _Constant(nn.Module):
    """Predicts class `label` whatever the image."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.label), 10).float()


def _with_models(evaluation, **models):
    """`evaluation` with `models` (name: module) in place of trained ones."""
    evaluation.models.prepared = True
    for name, model in models.items():
        evaluation.models._install(name, model)
    return evaluation


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


def test_a_blackbox_units_key_holds_the_source_and_the_test_images(tmp_path):
    key = _evaluation(tmp_path).attacks.blackbox_key("fgsm", None, (0, 8))
    deeper = _evaluation(tmp_path, training={"source_depth": 8}).attacks.blackbox_key("fgsm", None, (0, 8))
    assert key != deeper  # another source crafts other examples
    other = _evaluation(tmp_path)
    other.data.test_images = other.data.test_images.flip(0)  # other images at the same bounds
    assert other.attacks.blackbox_key("fgsm", None, (0, 8)) != key


def test_each_defense_judges_the_sources_examples_against_the_true_labels(tmp_path):
    torch.manual_seed(0)
    source = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    evaluation = _with_models(_evaluation(tmp_path), **{SOURCE: source, "standard": _Constant(7)})
    verdict = evaluation.attacks.blackbox("fgsm", None, (0, 8))
    labels = evaluation.data.test_labels[:8]
    assert 0 < int((labels == 7).sum()) < 8
    assert torch.equal(verdict["correct"]["standard"], labels == 7)  # the defense's answer, not the source's


def _fitted(evaluation, images: int = 8) -> nn.Module:
    """A linear model that classifies the first `images` test images (and their 1-bit squeezes) correctly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x = evaluation.data.test_images[:images].float() / 255
    x, y = torch.cat([x, x.round()]), evaluation.data.test_labels[:images].repeat(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def test_a_whitebox_cell_counts_the_adversarials_the_defense_gets_right(tmp_path):
    evaluation = _evaluation(tmp_path)
    model = _fitted(evaluation)
    attacks = _with_models(evaluation, standard=model).attacks
    x, y = attacks.test_chunk((0, 8))
    assert bool((attacks.predict(model, x) == y).all())
    adversarial = attacks.predict(model, attacks.make("fgsm", model, 0, 0.3)(x, y)) == y
    assert not bool(adversarial.all())
    assert torch.equal(attacks.whitebox("standard", "fgsm", 0.3, (0, 8))["correct"], adversarial)


def test_the_masking_row_attacks_feature_squeezing_through_its_own_gradient(tmp_path):
    evaluation = _evaluation(tmp_path, defenses=["feature_squeezing"])
    attacks = _with_models(evaluation, standard=_fitted(evaluation)).attacks
    x, y = attacks.test_chunk((0, 8))
    clean = attacks.predict(attacks.models.get("feature_squeezing"), x) == y
    own = attacks.whitebox("feature_squeezing", "fgsm", 0.6, (0, 8), bpda=False)["correct"]
    assert torch.equal(own, clean)  # rounding's gradient is zero: FGSM moves no pixel
    bpda = attacks.whitebox("feature_squeezing", "fgsm", 0.6, (0, 8))["correct"]
    assert int(bpda.sum()) < int(clean.sum())  # the straight-through gradient fools it


def test_a_chunk_is_the_test_images_at_its_bounds(tmp_path):
    attacks = _evaluation(tmp_path).attacks
    x, y = attacks.test_chunk((8, 16))
    assert torch.equal(x, attacks.data.test_images[8:16].float() / 255)
    assert torch.equal(y, attacks.data.test_labels[8:16])


def test_a_minimal_perturbation_unit_records_which_clean_images_the_defense_gets_right(tmp_path):
    evaluation = _evaluation(tmp_path)
    model = _fitted(evaluation)  # on the first 8 images: the next 8 it gets partly wrong
    attacks = _with_models(evaluation, standard=model).attacks
    x, y = attacks.test_chunk((8, 16))
    clean = attacks.predict(model, x) == y
    assert 0 < int(clean.sum()) < 8
    assert torch.equal(attacks.perturbation("standard", "deepfool", (8, 16))["clean_correct"], clean)


def test_each_column_attacks_the_test_images_its_setting_names(tmp_path):
    evaluation = _evaluation(
        tmp_path,
        whitebox_attacks=["fgsm", "pgd"],
        whitebox_eps=[0.1],
        perturbation_attacks=["deepfool"],
        perturbation_samples=8,
        certify={"images": 8},
        attack={"cw_test_samples": 8, "pgd_test_samples": 8},
    )
    units = evaluation._work()
    assert len(set(units)) == len(units)  # black-box FGSM at 0.3, the table's and the sweep's, is one run
    chunks: dict[tuple, set] = {}
    for u in units:
        chunks.setdefault((u.kind, u.attack, u.eps), set()).add(u.chunk)
    every, first = {(0, 8), (8, 16)}, {(0, 8)}
    assert chunks[("blackbox", "cw", None)] == first  # the first cw_test_samples
    assert chunks[("blackbox", "jsma", None)] == chunks[("blackbox", "fgsm", 0.3)] == every
    assert chunks[("whitebox", "pgd", 0.1)] == first and chunks[("whitebox", "fgsm", 0.1)] == every
    assert chunks[("perturbation", "deepfool", None)] == first and chunks[("certify", None, None)] == first


def test_only_the_defenses_certify_names_are_certified(tmp_path):
    evaluation = _evaluation(tmp_path, defenses=["standard", "gda"], certify={"images": 8, "defenses": ["gda"]})
    assert {u.defense for u in evaluation._work() if u.kind == "certify"} == {"gda"}


def test_an_images_certificate_does_not_depend_on_the_chunk_it_is_certified_in(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=False))
    nn.init.normal_(model[1].weight, std=0.02)  # unsure under the noise: each draw counts
    rows = []
    for size in (8, 4):
        evaluation = _evaluation(tmp_path / str(size), batch_size=size, certify={"images": 8, "n0": 10, "n": 50})
        certification = _with_models(evaluation, standard=model).certification
        parts = [certification.run("standard", chunk) for chunk in evaluation.chunks(8)]
        rows.append(torch.cat([p["p_lower"] for p in parts]))
    assert torch.equal(rows[0], rows[1])


def test_test_samples_takes_the_first_test_images_and_certify_sigma_is_the_smoothings(tmp_path):
    few, more = _evaluation(tmp_path), _evaluation(tmp_path, test_samples=32)
    assert torch.equal(few.data.test_images, more.data.test_images[:16])
    assert torch.equal(few.data.test_labels, more.data.test_labels[:16])
    sigma = _evaluation(tmp_path, certify={"images": 8, "sigma": 0.5}, defense={"gda_sigma": 0.2})
    assert sigma.certification.settings()["sigma"] == 0.5


def test_a_models_key_holds_the_runs_seed(tmp_path):
    assert _evaluation(tmp_path).models.key("standard") != _evaluation(tmp_path, seed=1).models.key("standard")


def test_each_defenses_blackbox_cell_counts_its_own_verdicts_and_clean_accuracy_is_on_the_test_images(tmp_path):
    evaluation = _evaluation(tmp_path, defenses=["standard", "gda"])
    unit = Unit("blackbox", (0, 2), "fgsm", eps=0.3)
    norms = {k: torch.zeros(2) for k in ("l2", "linf", "l0")}
    verdicts = {"standard": torch.tensor([True, True]), "gda": torch.tensor([True, False])}
    cells, _, _ = evaluation._cells([unit], {unit: {**norms, "seconds": 0.0, "correct": verdicts}})
    assert {c.defense: c.accuracy for c in cells} == {"standard": 100.0, "gda": 50.0}
    clean = evaluation._clean_accuracy({"standard": _Constant(7)})["standard"]
    assert clean == pytest.approx(100 * (evaluation.data.test_labels == 7).double().mean().item())
