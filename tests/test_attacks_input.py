"""Attacks reject bad settings, images, labels and models with an error that names the argument."""

from __future__ import annotations

import math

import pytest
import torch
from _attack_cases import CLASSES, NAMES, attacks, data, small_model
from torch import nn

from nemesis_fast.attacks import FGSM, PGD, Attack, CarliniWagnerL2, DeepFool, RandFGSM


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda m: FGSM(m, -0.1), ValueError, "eps must be >= 0"),
        (lambda m: FGSM(m, math.nan), ValueError, "eps must be finite"),
        (lambda m: FGSM(m, math.inf), ValueError, "eps must be finite"),
        (lambda m: FGSM(m, "0.1"), TypeError, "eps must be a real number"),
        (lambda m: FGSM(m, 0.1, norm="1"), ValueError, "norm must be one of"),
        (lambda m: FGSM(m, 0.1, clip=(1.0, 0.0)), ValueError, "clip must have low <= high"),
        (lambda m: FGSM(m, 0.1, clip=(0.5, 0.5)), ValueError, "clip must have low < high"),
        (lambda m: FGSM(m, 0.1, clip=(0.0, math.nan)), ValueError, r"clip\[1\] must be finite"),
        (lambda m: FGSM(m, 0.1, targeted=1), TypeError, "targeted must be a bool"),
        (lambda m: FGSM("model", 0.1), TypeError, "model must be a callable"),
        (lambda m: RandFGSM(m, 0.1, 0.2), ValueError, "alpha must be <= 0.1"),
        (lambda m: RandFGSM(m, 0.1, -0.01), ValueError, "alpha must be >= 0"),
        (lambda m: RandFGSM(m, 0.1, 0.05, seed=-1), ValueError, "seed must be >= 0"),
        (lambda m: RandFGSM(m, 0.1, 0.05, seed=1.5), TypeError, "seed must be an int"),
        (lambda m: PGD(m, 0.1, math.nan, 3), ValueError, "alpha must be finite"),
        (lambda m: PGD(m, 0.1, 0.01, -1), ValueError, "steps must be >= 0"),
        (lambda m: PGD(m, 0.1, 0.01, 2.5), TypeError, "steps must be an int"),
        (lambda m: PGD(m, 0.1, 0.01, 3, random_start=None), TypeError, "random_start must be a bool"),
        (lambda m: DeepFool(m, max_iter=-1), ValueError, "max_iter must be >= 0"),
        (lambda m: DeepFool(m, overshoot=-0.1), ValueError, "overshoot must be >= 0"),
        (lambda m: DeepFool(m, candidates=1), ValueError, "candidates must be >= 2"),
        (lambda m: DeepFool(m, norm="1"), ValueError, "norm must be one of"),
        (lambda m: CarliniWagnerL2(m, confidence=-1.0), ValueError, "confidence must be >= 0"),
        (lambda m: CarliniWagnerL2(m, initial_const=0.0), ValueError, "initial_const must be > 0"),
        (lambda m: CarliniWagnerL2(m, initial_const=1e308), ValueError, "initial_const must be < 1e"),
        (lambda m: CarliniWagnerL2(m, binary_search_steps=0), ValueError, "binary_search_steps must be >= 1"),
        (lambda m: CarliniWagnerL2(m, learning_rate=math.inf), ValueError, "learning_rate must be finite"),
        (lambda m: CarliniWagnerL2(m, abort_early="yes"), TypeError, "abort_early must be a bool"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(small_model())


def test_deepfool_has_no_targeted_mode():
    class Untargeted(Attack):
        supports_targeted = False

    model = small_model()
    x, y = data()
    with pytest.raises(ValueError, match="targeted=True: Untargeted has no targeted mode"):
        Untargeted(model, targeted=True)
    with pytest.raises(ValueError, match="target: DeepFool has no targeted mode"):
        DeepFool(model)(x, y, target=(y + 1) % CLASSES)


@pytest.mark.parametrize("name", NAMES)
def test_bad_images_and_labels(name):
    model = small_model()
    attack = attacks(model)[name]
    x, y = data()
    nan = x.clone()
    nan[3, 0, 1, 1] = math.nan
    inf = x.clone()
    inf[0, 1, 0, 0] = math.inf
    cases = [
        ((nan, y), ValueError, "x must be finite"),
        ((inf, y), ValueError, "x must be finite"),
        ((x + 0.5, y), ValueError, "x must lie inside clip"),
        ((x - 0.5, y), ValueError, "x must lie inside clip"),
        ((x.long(), y), TypeError, "x must have dtype"),
        ((x[0, 0, 0], y), ValueError, "x must have at least 2 dimensions"),
        ((x.numpy(), y), TypeError, "x must be a torch.Tensor"),
        ((x, y[:-1]), ValueError, "y must hold one label per image"),
        ((x, y[:, None]), ValueError, "y must have 1 dimensions"),
        ((x, y.float()), TypeError, "y must have dtype"),
        ((x, y + CLASSES), ValueError, r"y must hold labels in \[0, 5\)"),
        ((x, y - CLASSES), ValueError, r"y must hold labels in \[0, 5\)"),
    ]
    if attack.supports_targeted:
        cases += [
            ((x, y, y), ValueError, "target must differ from y"),
            ((x, y, (y + 1) % CLASSES + CLASSES), ValueError, r"target must hold classes in \[0, 5\)"),
            ((x, y, y[:-1]), ValueError, "target must hold one label per image"),
        ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            attack.run(*args)
    assert model.training is False and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "output,match",
    [
        (lambda out: out[:, 0], r"model must map \(B, \.\.\.\) images to \(B, classes\) logits"),
        (lambda out: out[:, :, None], "model must map"),
        (lambda out: out[:1], "model must map"),
        (lambda out: (out,), "model must map"),
        (lambda out: out[:, :1], "at least 2 classes"),
    ],
)
def test_model_with_a_wrong_output_shape(output, match):
    model = small_model()
    x, y = data()
    with pytest.raises(ValueError, match=match):
        PGD(lambda images: output(model(images)), 0.1, 0.01, 2)(x, y.clamp(max=0))


def test_model_with_non_finite_logits_is_refused():
    model = small_model()
    x, y = data()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="model must give finite logits"):
            DeepFool(lambda images, bad=bad: model(images) * bad, 5)(x, y)
    x[0, 0, 0, 0] = float("nan")  # NaN in the first image, on a first call: x is to blame, not the model
    with pytest.raises(ValueError, match="x must be finite"):
        DeepFool(model, 5)(x, y)


def test_a_nan_prediction_on_an_adversarial_image_is_refused_not_counted_as_a_success():
    model = small_model()
    x, y = data()

    def nan_for_image_3(images):
        logits = model(images)
        return torch.where(images.flatten(1)[:, :1] == x[3].flatten()[0], math.nan, logits)

    x_adv = FGSM(nan_for_image_3, 0.0)(x, y)  # calling returns the images
    assert torch.equal(x_adv, x)
    with pytest.raises(ValueError, match=r"NaN logits for 1 of the 12 adversarial images \(indices \[3\]\)"):
        FGSM(nan_for_image_3, 0.0).run(x, y)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_clip_beyond_the_range_of_the_images_dtype_is_named(dtype):
    model = small_model(dtype)
    x, y = data(dtype=dtype)
    with pytest.raises(ValueError, match=r"clip=\(0.0, 1e\+300\) holds a bound beyond the range"):
        PGD(model, 0.1, 0.01, 2, clip=(0.0, 1e300))(x, y)


def test_model_on_another_device_is_named():
    model = small_model().to("meta")
    x, y = data()
    with pytest.raises(ValueError, match="x is on cpu but the model's parameters are on meta"):
        FGSM(model, 0.1)(x, y)


def test_model_whose_class_count_changes():
    model = small_model()
    x, y = data()
    attack = FGSM(model, 0.1)
    attack(x, y)
    attack.model = nn.Sequential(model, nn.Linear(CLASSES, CLASSES + 1))
    with pytest.raises(ValueError, match="model gave 6 logits per image, earlier 5"):
        attack(x, y)
