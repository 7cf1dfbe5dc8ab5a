"""Attack properties that test_attacks.py checks in part: batch result == per-sample result for the attacks that
draw random numbers (R+FGSM, PGD with its random start, in Linf and L2, and with restarts), with draws made per
sample; the norm bounds in every image dtype, to the one rounding the docstrings allow (test_attacks.py bounds
float32 images, within an absolute 1e-5); a zero budget (eps, steps, max_iter) is the identity in every dtype, in
targeted mode and without a clip too. (Success of the L2 and Linf variants on MNIST:
test_pyramid_attacks_mnist.py.)"""

from __future__ import annotations

import hashlib

import pytest
import torch
from _attack_cases import CLASSES, data, small_model

from nemesis_fast.attacks import FGSM, PGD, CarliniWagnerL2, DeepFool, RandFGSM

IMAGE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
EPS = 0.1


def per_sample_draws(attack) -> list[int]:
    """Makes `attack` draw its random numbers per sample: the numbers of sample i come from a generator seeded with
    a hash of that sample's values, so that sample i gets the same numbers in a batch as alone. Returns the list in
    which each draw records its number of samples."""
    draws = []

    def draw(fn, shape, like):
        draws.append(shape[0])
        rows = []
        for sample in like.detach().cpu():
            digest = hashlib.sha256(sample.contiguous().view(torch.uint8).numpy().tobytes()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
            rows.append(fn(shape[1:], generator=generator, dtype=like.dtype))
        return torch.stack(rows).to(like.device) if rows else torch.empty(shape, dtype=like.dtype)

    attack._draw = draw
    return draws


RANDOM_ATTACKS = {
    "randfgsm": lambda model: RandFGSM(model, EPS, EPS / 2),
    "pgd": lambda model: PGD(model, EPS, EPS / 4, 5),
    "pgd-l2": lambda model: PGD(model, 4 * EPS, EPS, 5, norm="2"),
    "pgd-restarts": lambda model: PGD(model, EPS / 4, EPS / 16, 3, restarts=3),
    "pgd-l2-restarts": lambda model: PGD(model, EPS, EPS / 4, 3, norm="2", restarts=3),
}


@pytest.mark.parametrize("name", RANDOM_ATTACKS)
def test_batch_result_equals_per_sample_result_with_random_draws(name):
    model = small_model(torch.float64)
    x, y = data(8, torch.float64)
    attack = RANDOM_ATTACKS[name](model)
    assert not attack.deterministic
    draws = per_sample_draws(attack)
    batch = attack.run(x, y)
    assert draws and draws[0] == len(x)
    if "restarts" in name:  # some images are rerun, some not
        assert 0 < batch.success.sum() < len(x) and (batch.iterations > attack.steps).any()
    for i in range(len(x)):
        single = attack.run(x[i : i + 1], y[i : i + 1])
        torch.testing.assert_close(single.x_adv[0], batch.x_adv[i], rtol=0, atol=1e-9)
        assert single.iterations.item() == batch.iterations[i].item()
        assert single.success.item() == batch.success[i].item()


LINF_ATTACKS = {
    "fgsm": lambda model, clip: FGSM(model, EPS, clip=clip),
    "pgd": lambda model, clip: PGD(model, EPS, EPS / 4, 5, clip=clip, seed=0),
    "pgd-no-start": lambda model, clip: PGD(model, EPS, EPS / 4, 5, random_start=False, clip=clip),
    "pgd-restarts": lambda model, clip: PGD(model, EPS, EPS / 4, 2, restarts=2, clip=clip, seed=0),
}


def images(dtype: torch.dtype, clip):
    """Images in the clip range, or in [-4, 4] (where half precision rounds coarsely) without one."""
    return data(16, dtype, low=-4.0, high=4.0) if clip is None else data(16, dtype, low=clip[0], high=clip[1])


@pytest.mark.parametrize("clip", [(0.0, 1.0), None])
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
def test_linf_bounds_hold_to_one_rounding_in_every_dtype(dtype, clip):
    """x_adv within [x - eps, x + eps], each bound rounded once to x's dtype (as the docstrings say: "within eps up
    to one rounding in x's dtype"); R+FGSM's two steps, within their two roundings."""
    model = small_model(dtype)
    x, y = images(dtype, clip)
    low, high = x - EPS, x + EPS
    for name, make in LINF_ATTACKS.items():
        x_adv = make(model, clip).run(x, y).x_adv
        assert x_adv.dtype == dtype and torch.isfinite(x_adv).all(), name
        assert ((x_adv >= low) & (x_adv <= high)).all(), (name, (x_adv.double() - x.double()).abs().max().item())
        if clip is not None:
            assert x_adv.min() >= clip[0] and x_adv.max() <= clip[1], name
    alpha = EPS / 2
    x_adv = RandFGSM(model, EPS, alpha, clip=clip, seed=0).run(x, y).x_adv
    assert ((x_adv >= (x - alpha) - (EPS - alpha)) & (x_adv <= (x + alpha) + (EPS - alpha))).all()
    assert (x_adv.double() - x.double()).abs().max() > EPS / 2  # the steps were taken


@pytest.mark.parametrize("clip", [(0.0, 1.0), None])
def test_l2_bounds_in_float64(clip):
    """In float64 the L2 norm of x_adv - x is eps to float64's rounding (test_attacks.py allows 1e-5)."""
    model = small_model(torch.float64)
    x, y = images(torch.float64, clip)
    eps = 4 * EPS
    for attack in (
        FGSM(model, eps, norm="2", clip=clip),
        PGD(model, eps, EPS, 5, norm="2", clip=clip, seed=0),
        PGD(model, eps, EPS, 3, norm="2", restarts=2, clip=clip, seed=0),
    ):
        result = attack.run(x, y)
        assert (result.l2 <= eps * (1 + 1e-12)).all(), (type(attack).__name__, result.l2.max().item())
        assert result.l2.max() > eps / 2


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("clip", [(0.0, 1.0), None])
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
def test_a_zero_budget_is_the_identity(dtype, clip, targeted):
    """eps = 0 (FGSM, R+FGSM, PGD in both norms, with random starts and restarts), steps = 0 (PGD without a random
    start), max_iter = 0 (DeepFool, Carlini-Wagner): x itself, in every dtype, targeted or not."""
    model = small_model(dtype)
    x, y = images(dtype, clip)
    target = (y + 1) % CLASSES if targeted else None
    attacks = [
        FGSM(model, 0.0, clip=clip),
        FGSM(model, 0.0, norm="2", clip=clip),
        RandFGSM(model, 0.0, 0.0, clip=clip, seed=0),
        PGD(model, 0.0, 0.05, 3, clip=clip, seed=0),
        PGD(model, 0.0, 0.05, 3, norm="2", clip=clip, seed=0),
        PGD(model, 0.0, 0.05, 2, restarts=2, clip=clip, seed=0),
        PGD(model, 0.3, 0.05, 0, random_start=False, clip=clip),
        CarliniWagnerL2(model, max_iter=0, binary_search_steps=2, clip=clip),
    ]
    if not targeted:  # DeepFool has no targeted mode
        attacks.append(DeepFool(model, max_iter=0, clip=clip))
    for attack in attacks:
        result = attack.run(x, y, target=target)
        assert torch.equal(result.x_adv, x), type(attack).__name__
        assert result.l0.sum() == 0 and result.l2.sum() == 0 and result.linf.sum() == 0, type(attack).__name__
