"""Attack properties on small synthetic models: norm and clip bounds, eps = 0, batch = per sample, inputs and
model state untouched, exactness on linear models where the answer is known, seeds, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nemesis_fast.attacks import (
    FGSM,
    PGD,
    Attack,
    CarliniWagnerL2,
    DeepFool,
    RandFGSM,
    model_guard,
    perturbation_norms,
)
from nemesis_fast.attacks.jacobian import LogitJacobian, difference_weights, predicts
from nemesis_fast.nn import BoundedReLU

CLASSES = 5
SHAPE = (2, 4, 4)  # C, H, W


def small_model(dtype: torch.dtype = torch.float32, *, seed: int = 0, activation=nn.ReLU) -> nn.Module:
    """A conv net with batch norm and dropout (so eval mode matters), 5 classes, in `dtype`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(2, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            activation(),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(6 * 16, 16),
            activation(),
            nn.Linear(16, CLASSES),
        ).to(dtype)
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def data(n: int = 12, dtype: torch.dtype = torch.float32, *, seed: int = 1, low: float = 0.0, high: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(n, *SHAPE, generator=g, dtype=dtype)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return x, y


class Linear(nn.Module):
    """Logits W x + b over the flattened image: DeepFool's linearisation is exact."""

    def __init__(self, classes: int = CLASSES, dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        features = math.prod(SHAPE)
        self.weight = nn.Parameter(torch.randn(classes, features, generator=g, dtype=dtype))
        self.bias = nn.Parameter(torch.randn(classes, generator=g, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def linear_case(n: int = 16) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    """A float64 linear model, n images away from the box edges, labelled with the model's predictions."""
    model = Linear()
    x, _ = data(n, torch.float64, low=0.3, high=0.7)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def nearest_boundary(model: Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact L2 distance from each x to the nearest decision boundary of its class y (no box)."""
    logits = model(x)
    w = model.weight
    diffs = []
    for k in range(w.shape[0]):
        gap = (logits[:, k] - logits.gather(1, y[:, None]).squeeze(1)).abs()
        dist = gap / (w[k] - w[y]).norm(dim=1)
        diffs.append(torch.where(y == k, torch.inf, dist))
    return torch.stack(diffs, 1).amin(1)


def attacks(model, *, clip=(0.0, 1.0), eps=0.1):
    """One configured instance of every attack and option, small budgets."""
    return {
        "fgsm": FGSM(model, eps, clip=clip),
        "fgsm-l2": FGSM(model, 4 * eps, norm="2", clip=clip),
        "randfgsm": RandFGSM(model, eps, eps / 2, clip=clip, seed=0),
        "pgd": PGD(model, eps, eps / 4, 5, clip=clip, seed=0),
        "pgd-no-start": PGD(model, eps, eps / 4, 5, random_start=False, clip=clip),
        "pgd-l2": PGD(model, 4 * eps, eps, 5, norm="2", clip=clip, seed=0),
        "deepfool": DeepFool(model, max_iter=20, clip=clip),
        "deepfool-linf": DeepFool(model, max_iter=20, norm="inf", clip=clip),
        "cw": CarliniWagnerL2(
            model, initial_const=1.0, binary_search_steps=3, max_iter=30, learning_rate=0.1, clip=clip
        ),
    }


NAMES = list(attacks(nn.Identity()))
BOUNDS = {"fgsm": ("linf", 1), "fgsm-l2": ("l2", 4), "randfgsm": ("linf", 1), "pgd": ("linf", 1)}
BOUNDS |= {"pgd-no-start": ("linf", 1), "pgd-l2": ("l2", 4)}
TOL = 1e-5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("clip", [(0.0, 1.0), (-1.0, 2.0)])
def test_norm_and_clip_bounds_and_result_fields(name, clip):
    model = small_model()
    x, y = data(low=clip[0], high=clip[1])
    eps = 0.1
    result = attacks(model, clip=clip, eps=eps)[name].run(x, y)
    x_adv = result.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= clip[0] and x_adv.max() <= clip[1]
    assert torch.isfinite(x_adv).all()
    l0, l2, linf = perturbation_norms(x_adv, x)
    delta = (x_adv - x).flatten(1)
    torch.testing.assert_close(result.l2, delta.norm(dim=1))
    torch.testing.assert_close(result.linf, delta.abs().amax(1))
    assert torch.equal(result.l0, (delta != 0).sum(1)) and torch.equal(result.l0, l0)
    with torch.no_grad():
        predictions = model(x_adv).argmax(1)
    assert torch.equal(result.predictions, predictions)
    assert torch.equal(result.success, predictions != y)
    assert result.iterations.dtype == torch.int64 and result.iterations.shape == (len(x),)
    assert result.target is None
    if name in BOUNDS:
        which, scale = BOUNDS[name]
        assert (getattr(result, which) <= scale * eps + TOL).all(), getattr(result, which).max()
    assert result.success_rate > 0.5, name  # every attack fools this untrained model on most images


def test_iterations_reported():
    model = small_model()
    x, y = data()
    assert FGSM(model, 0.1).run(x, y).iterations.tolist() == [1] * len(x)
    assert PGD(model, 0.1, 0.02, 7).run(x, y).iterations.tolist() == [7] * len(x)
    deepfool = DeepFool(model, max_iter=20).run(x, y)
    assert ((deepfool.iterations >= 0) & (deepfool.iterations <= 20)).all()
    assert (deepfool.iterations[deepfool.success] >= 1).any()


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_eps_zero_is_the_identity(norm):
    model = small_model()
    x, y = data()
    for attack in (
        FGSM(model, 0.0, norm=norm),
        PGD(model, 0.0, 0.05, 3, norm=norm, seed=0),
        RandFGSM(model, 0.0, 0.0, seed=0),
    ):
        result = attack.run(x, y)
        assert torch.equal(result.x_adv, x), type(attack).__name__
        assert result.l0.sum() == 0 and result.l2.sum() == 0


DETERMINISTIC = ["fgsm", "fgsm-l2", "pgd-no-start", "deepfool", "deepfool-linf", "cw"]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_result_equals_per_sample_result(name):
    model = small_model(torch.float64)
    x, y = data(8, torch.float64)
    attack = attacks(model)[name]
    assert attack.deterministic
    batch = attack.run(x, y)
    for i in range(len(x)):
        single = attack.run(x[i : i + 1], y[i : i + 1])
        torch.testing.assert_close(single.x_adv[0], batch.x_adv[i], rtol=0, atol=1e-9)
        assert single.iterations.item() == batch.iterations[i].item()
        assert single.success.item() == batch.success[i].item()


@pytest.mark.parametrize("name", NAMES)
def test_inputs_model_mode_and_parameters_untouched(name):
    model = small_model()
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    model[0].weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data()
    x_before, y_before = x.clone(), y.clone()
    attacks(model)[name].run(x, y)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # batch norm statistics untouched too


def test_model_state_is_restored_after_an_error():
    class FailsOnSecondCall(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = small_model()
            self.calls = 0

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("boom")
            return self.inner(images)

    model = FailsOnSecondCall().train()
    x, y = data()
    with pytest.raises(RuntimeError, match="boom"):
        FGSM(model, 0.1)(x, y)
    assert all(m.training for m in model.modules()) and all(p.requires_grad for p in model.parameters())


def test_an_existing_parameter_gradient_is_left_alone():
    model = small_model()
    x, y = data()
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    PGD(model, 0.1, 0.02, 3).run(x, y)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_a_plain_function_model_and_an_empty_batch():
    model = small_model()
    x, y = data()
    expected = FGSM(model, 0.1)(x, y)
    torch.testing.assert_close(FGSM(lambda images: model(images), 0.1)(x, y), expected, rtol=0, atol=0)
    for name, attack in attacks(model).items():
        result = attack.run(x[:0], y[:0])
        assert result.x_adv.shape == (0, *SHAPE) and result.success.shape == (0,), name
        assert math.isnan(result.success_rate)


def test_inference_mode_input():
    model = small_model()
    x, y = data()
    expected = FGSM(model, 0.1)(x, y)
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
        torch.testing.assert_close(FGSM(model, 0.1)(x_inf, y_inf), expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ exactness


def reference_fgsm(model, x, labels, eps, sign):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels, reduction="sum"), x)
    return (x + sign * eps * grad.sign()).clamp(0, 1).detach()


def test_fgsm_and_targeted_fgsm_follow_the_definition():
    model = small_model(torch.float64)
    x, y = data(dtype=torch.float64)
    target = (y + 1) % CLASSES
    with model_guard(model):
        expected = reference_fgsm(model, x, y, 0.07, 1)
        expected_targeted = reference_fgsm(model, x, target, 0.07, -1)
    assert torch.equal(FGSM(model, 0.07)(x, y), expected)
    assert torch.equal(FGSM(model, 0.07)(x, y, target=target), expected_targeted)
    grad_l2 = FGSM(model, 0.5, norm="2", clip=(-1.0, 2.0)).run(x, y)
    torch.testing.assert_close(grad_l2.l2, torch.full_like(grad_l2.l2, 0.5), atol=1e-12, rtol=0)


def test_fgsm_and_randfgsm_on_predicted_labels_use_the_models_prediction():
    model = small_model(torch.float64)
    x, y = data(dtype=torch.float64)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    wrong = (predicted + 1) % CLASSES  # y given to the attack is ignored: the prediction at x is the label
    with model_guard(model):
        expected = reference_fgsm(model, x, predicted, 0.07, 1)
    assert torch.equal(FGSM(model, 0.07, labels="predicted")(x, wrong), expected)
    assert not torch.equal(FGSM(model, 0.07)(x, wrong), expected)
    eps, alpha = 0.2, 0.05
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    start = (x + alpha * noise.sign()).clamp(0, 1)
    with torch.no_grad():
        at_start = model(start).argmax(1)  # R+FGSM: the prediction at x', after the random step
    with model_guard(model):
        expected = reference_fgsm(model, start, at_start, eps - alpha, 1)
    assert torch.equal(RandFGSM(model, eps, alpha, labels="predicted", seed=5)(x, wrong), expected)
    with pytest.raises(ValueError, match="labels must be one of"):
        FGSM(model, 0.1, labels="guessed")


def test_pgd_restarts_only_rerun_the_images_not_yet_fooled():
    model = small_model()
    x, y = data(64)
    one = PGD(model, 0.05, 0.02, 3, seed=7).run(x, y)
    three = PGD(model, 0.05, 0.02, 3, restarts=3, seed=7).run(x, y)
    assert torch.equal(three.x_adv[one.success], one.x_adv[one.success])  # the first run's successes are kept
    assert (three.iterations[one.success] == 3).all() and (three.iterations[~one.success] > 3).all()
    assert three.success.sum() >= one.success.sum() and (three.linf <= 0.05 + 1e-6).all()
    with pytest.raises(ValueError, match="restarts > 1 needs random_start"):
        PGD(model, 0.1, 0.01, 3, random_start=False, restarts=2)


def test_carlini_wagner_confidence_margin_loss_lets_abort_early_fire():
    model, x, y = linear_case(8)
    settings = dict(confidence=10.0, initial_const=1.0, binary_search_steps=2, max_iter=200, learning_rate=0.05)
    early = CarliniWagnerL2(model, abort_early=True, **settings).run(x, y)
    assert (early.iterations < 400).all()  # max(m + kappa, 0) stops falling once the margin is met
    with torch.no_grad():
        logits = model(early.x_adv)
    top2 = logits.topk(2, dim=1).values
    found = early.success
    assert found.any() and ((top2[found, 0] - logits[found].gather(1, y[found, None]).squeeze(1)) >= 10 - 1e-6).all()


def test_randfgsm_is_exactly_r_plus_fgsm():
    model = small_model(torch.float64)
    x, y = data(dtype=torch.float64)
    eps, alpha = 0.2, 0.08
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    start = (x + alpha * noise.sign()).clamp(0, 1)
    with model_guard(model):
        expected = reference_fgsm(model, start, y, eps - alpha, 1)
    result = RandFGSM(model, eps, alpha, seed=5).run(x, y)
    assert torch.equal(result.x_adv, expected)
    assert (result.linf <= eps + 1e-12).all()


def test_pgd_without_random_start_follows_the_definition():
    model = small_model(torch.float64)
    x, y = data(dtype=torch.float64)
    eps, alpha = 0.1, 0.03
    expected = x.clone()
    with model_guard(model):
        for _ in range(4):
            expected = reference_fgsm(model, expected, y, alpha, 1)
            expected = torch.minimum(torch.maximum(expected, x - eps), x + eps).clamp(0, 1)
    torch.testing.assert_close(PGD(model, eps, alpha, 4, random_start=False)(x, y), expected, rtol=0, atol=1e-12)


def test_pgd_l2_start_is_inside_the_ball_and_steps_are_projected():
    model = small_model()
    x, y = data(64)
    zero_steps = PGD(model, 0.5, 0.1, 0, norm="2", seed=3).run(x, y)
    assert (zero_steps.l2 <= 0.5 + TOL).all() and (zero_steps.l2 > 0).all()
    walked = PGD(model, 0.5, 0.3, 6, norm="2", seed=3).run(x, y)
    assert (walked.l2 <= 0.5 + TOL).all()
    assert walked.success_rate >= FGSM(model, 0.5, norm="2").run(x, y).success_rate


def test_deepfool_is_exact_on_a_linear_model():
    model, x, y = linear_case()
    overshoot = 0.02
    result = DeepFool(model, overshoot=overshoot, clip=(-100.0, 100.0)).run(x, y)
    expected = (1 + overshoot) * (nearest_boundary(model, x, y) + 1e-4)
    torch.testing.assert_close(result.l2, expected, rtol=1e-9, atol=1e-12)
    assert result.success.all() and (result.iterations == 1).all()


def test_deepfool_candidates_limit_the_classes_searched():
    model = Linear(classes=8)
    x, _ = data(16, torch.float64, low=0.3, high=0.7)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    result = DeepFool(model, candidates=2, clip=(-100.0, 100.0)).run(x, y)
    runner_up = logits.topk(2).indices[:, 1]
    assert torch.equal(result.predictions, runner_up)  # the only boundary it may cross
    assert result.success.all()


def test_deepfool_linf_on_a_linear_model():
    model, x, y = linear_case()
    result = DeepFool(model, norm="inf", overshoot=0.0, clip=(-100.0, 100.0)).run(x, y)
    logits, w = model(x).detach(), model.weight.detach()
    gaps = (logits - logits.gather(1, y[:, None])).abs() / (w[None] - w[y][:, None]).abs().sum(2)
    expected = gaps.scatter(1, y[:, None], torch.inf).amin(1) + 1e-4
    torch.testing.assert_close(result.linf, expected, rtol=1e-9, atol=1e-12)
    assert result.success.all()


def test_carlini_wagner_nearly_reaches_the_minimal_l2_on_a_linear_model():
    model, x, y = linear_case()
    minimal = nearest_boundary(model, x, y)
    cw = CarliniWagnerL2(model, initial_const=1.0, binary_search_steps=6, max_iter=200, clip=(-3.0, 4.0))
    result = cw.run(x, y)
    assert result.success.all()
    assert (result.l2 >= minimal * (1 - 1e-6)).all()  # nothing closer than the boundary is adversarial
    assert (result.l2 <= minimal * 1.05).all(), (result.l2 / minimal).max()


def test_carlini_wagner_confidence_margin_and_targets():
    model, x, y = linear_case()
    target = (y + 2) % CLASSES
    cw = CarliniWagnerL2(model, 0.5, 1.0, 3, 60, clip=(-3.0, 4.0))  # confidence 0.5; c from 1, 3 x 60 steps
    result = cw.run(x, y, target=target)
    logits = model(result.x_adv).detach()
    wanted = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], -torch.inf).amax(1)
    assert result.success.all() and (wanted - others > 0.5).all()
    assert torch.equal(result.target, target)


def test_already_misclassified_images_are_left_alone():
    model, x, y = linear_case(8)
    wrong = (y + 1) % CLASSES
    for attack in (DeepFool(model), CarliniWagnerL2(model, max_iter=10, binary_search_steps=2)):
        result = attack.run(x, wrong)
        assert torch.equal(result.x_adv, x) and (result.iterations == 0).all() and result.success.all()


def test_carlini_wagner_keeps_x_where_it_finds_nothing():
    model = small_model()
    x, y = data()
    result = CarliniWagnerL2(model, initial_const=1e-6, binary_search_steps=1, max_iter=3).run(x, y)
    unchanged = (result.x_adv == x).flatten(1).all(1)
    assert torch.equal(unchanged, ~result.success | (result.l2 == 0))


def test_carlini_wagner_abort_early_saves_iterations():
    model, x, y = linear_case(8)
    settings = dict(initial_const=1.0, binary_search_steps=2, max_iter=200, learning_rate=0.05)
    full = CarliniWagnerL2(model, abort_early=False, **settings).run(x, y)
    early = CarliniWagnerL2(model, abort_early=True, **settings).run(x, y)
    assert (full.iterations == 400).all()
    assert (early.iterations < 400).all() and early.success.all()


@pytest.mark.parametrize("attack_name", ["fgsm", "pgd", "pgd-l2", "cw", "randfgsm"])
def test_targeted_mode(attack_name):
    model = Linear(dtype=torch.float32)
    x, y = data(32, low=0.3, high=0.7)
    target = (y + 1 + torch.arange(32) % (CLASSES - 1)) % CLASSES
    clip = (-3.0, 4.0)
    attack = {
        "fgsm": FGSM(model, 3.0, clip=clip),
        "randfgsm": RandFGSM(model, 3.0, 0.5, clip=clip, seed=0),
        "pgd": PGD(model, 3.0, 0.3, 20, clip=clip, seed=0),
        "pgd-l2": PGD(model, 20.0, 2.0, 20, norm="2", clip=clip, seed=0),
        "cw": CarliniWagnerL2(model, initial_const=1.0, binary_search_steps=3, max_iter=50, clip=clip),
    }[attack_name]
    result = attack.run(x, y, target=target)
    assert torch.equal(result.success, result.predictions == target)
    assert result.success.float().mean() >= 0.9
    untargeted = type(attack)(model, **_same_settings(attack)).run(x, y)
    assert not torch.equal(untargeted.x_adv, result.x_adv)


def _same_settings(attack: Attack) -> dict:
    keys = {
        FGSM: ("eps", "norm"),
        RandFGSM: ("eps", "alpha", "seed"),
        PGD: ("eps", "alpha", "steps", "norm", "seed"),
        CarliniWagnerL2: ("initial_const", "binary_search_steps", "max_iter"),
    }[type(attack)]
    return {k: getattr(attack, k) for k in keys} | {"clip": attack.clip}


def test_random_targets_are_wrong_classes_and_reproducible():
    model = small_model()
    x, y = data(64)
    first = PGD(model, 0.2, 0.05, 3, targeted=True, seed=11).run(x, y)
    second = PGD(model, 0.2, 0.05, 3, targeted=True, seed=11).run(x, y)
    assert first.target is not None and (first.target != y).all()
    assert ((first.target >= 0) & (first.target < CLASSES)).all()
    assert len(first.target.unique()) > 1
    assert torch.equal(first.target, second.target) and torch.equal(first.x_adv, second.x_adv)
    seeded = (FGSM(model, 0.2, targeted=True, seed=11), CarliniWagnerL2(model, max_iter=2, targeted=True, seed=11))
    for attack in seeded:
        assert torch.equal(attack.run(x, y).target, first.target)  # the same seed draws the same targets


def test_seeds_and_generators_make_runs_reproducible():
    model = small_model()
    x, y = data()
    for make in (lambda s: RandFGSM(model, 0.2, 0.1, seed=s), lambda s: PGD(model, 0.2, 0.05, 2, seed=s)):
        assert torch.equal(make(3)(x, y), make(3)(x, y))
        assert not torch.equal(make(3)(x, y), make(4)(x, y))
        gen = torch.Generator().manual_seed(9)
        attack = make(gen)
        first, second = attack(x, y), attack(x, y)
        assert not torch.equal(first, second)  # the generator's state advanced
        gen.manual_seed(9)
        assert torch.equal(attack(x, y), first)
    torch.manual_seed(0)
    unseeded = RandFGSM(model, 0.2, 0.1)(x, y)
    torch.manual_seed(0)
    assert torch.equal(RandFGSM(model, 0.2, 0.1)(x, y), unseeded)  # None: torch's global generator


def test_batched_gradients_fall_back_to_stacked_copies():
    model = small_model(activation=lambda: BoundedReLU(1.0))
    x, y = data()
    attack = DeepFool(model, max_iter=20)
    vmapped = attack.run(x, y)
    assert attack._jacobian.use_vmap
    stacked = DeepFool(model, max_iter=20)
    stacked._jacobian.use_vmap = False
    fallback = stacked.run(x, y)
    torch.testing.assert_close(fallback.x_adv, vmapped.x_adv, rtol=0, atol=1e-5)
    assert torch.equal(fallback.iterations, vmapped.iterations)
    weights = torch.randn(3, len(x), CLASSES)
    with model_guard(model), torch.no_grad():
        logits_a, grads_a = attack.logit_gradients(x, weights)
        logits_b, grads_b = stacked.logit_gradients(x, lambda logits: weights)
    torch.testing.assert_close(logits_a, logits_b)
    torch.testing.assert_close(grads_a, grads_b)
    assert grads_a.shape == (3, *x.shape)


@pytest.mark.parametrize("path", ["vmap", "stacked"])
@pytest.mark.parametrize("kept", [12, 11, 3, 0])  # all; one stopped (backward over all); most stopped; none kept
def test_logit_gradients_of_kept_equal_those_of_the_kept_images(path, kept):
    model = small_model()
    x, _ = data()
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[torch.randperm(len(x), generator=torch.Generator().manual_seed(2))[:kept]] = True
    weights = torch.randn(2, len(x), CLASSES, generator=torch.Generator().manual_seed(3))
    jacobian = LogitJacobian(model)
    jacobian.use_vmap = path == "vmap"
    with model_guard(model), torch.no_grad():
        all_logits, all_grads = LogitJacobian(model).products(x, weights)
        seen = []

        def keep(logits: torch.Tensor) -> torch.Tensor:
            seen.append(logits)
            return mask

        logits, got_mask, grads = jacobian.products_of_kept(x, weights, keep)
    assert torch.equal(got_mask, mask) and len(seen) == 1 and not seen[0].requires_grad
    torch.testing.assert_close(logits, all_logits)
    assert grads.shape == (2, kept, *SHAPE)
    torch.testing.assert_close(grads, all_grads[:, mask])


def test_logit_gradients_of_kept_take_weight_functions_and_keep_predictions():
    model = small_model()
    x, _ = data()
    with model_guard(model), torch.no_grad():
        labels = model(x).argmax(1)
        labels[:4] = (labels[:4] + 1) % CLASSES  # these four are no longer predicted as their label
        identity = torch.eye(CLASSES)[:, None, :].expand(-1, len(x), -1)
        logits, mask, grads = LogitJacobian(model).products_of_kept(x, lambda out: identity, predicts(labels))
        _, expected = LogitJacobian(model).products(x[4:], identity[:, 4:])
    assert mask.tolist() == [False] * 4 + [True] * (len(x) - 4)
    torch.testing.assert_close(grads, expected)


def test_difference_weights_give_the_logit_differences():
    logits = torch.randn(5, CLASSES)
    first = torch.tensor([0, 3, 1, 2, 2])
    others = torch.tensor([[1, 2], [0, 1], [3, 0], [1, 0], [0, 1]])
    weights = difference_weights(first, others, CLASSES)
    assert weights.shape == (2, 5, CLASSES) and weights.dtype == torch.float32
    expected = (logits.gather(1, others) - logits.gather(1, first[:, None])).T
    torch.testing.assert_close((weights * logits).sum(2), expected)


def test_vmap_failure_switches_to_stacked_copies():
    class NoVmap(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            grad.tolist()  # leaves the tensor world: vmap cannot batch this
            return grad * 2

    model = small_model()
    attack = DeepFool(lambda images: model(NoVmap.apply(images)), max_iter=5)
    x, y = data()
    result = attack.run(x, y)
    assert not attack._jacobian.use_vmap and result.success_rate > 0.5


# ------------------------------------------------------------------------------------------ bad input


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


@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_attacks_on_cuda_match_cpu(name):
    model = small_model(torch.float64)
    x, y = data(16, torch.float64)
    cpu = attacks(model)[name].run(x, y)
    gpu = attacks(model.cuda())[name].run(x.cuda(), y.cuda())
    assert gpu.x_adv.device.type == "cuda" and gpu.success.device.type == "cuda"
    assert gpu.x_adv.min() >= 0 and gpu.x_adv.max() <= 1
    if attacks(model)[name].deterministic:
        torch.testing.assert_close(gpu.x_adv.cpu(), cpu.x_adv, rtol=0, atol=1e-6)
        assert torch.equal(gpu.iterations.cpu(), cpu.iterations)
