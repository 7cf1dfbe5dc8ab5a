"""Each attack against its definition, on models where the answer is known: FGSM, R+FGSM and PGD step by step,
DeepFool and C&W on linear models (the minimal perturbation), DeepFool's margin and half-precision steps, C&W's
confidence, abort-early and fallback (attack properties: test_attacks.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _attack_cases import (
    CLASSES,
    TOL,
    Linear,
    data,
    linear_case,
    nearest_boundary,
    small_model,
)
from torch import nn

from nemesis_fast.attacks import (
    FGSM,
    PGD,
    CarliniWagnerL2,
    DeepFool,
    RandFGSM,
    model_guard,
)
from nemesis_fast.attacks.deepfool import step_margin


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


def test_pgd_l2_without_random_start_follows_the_definition():
    """Steps of L2 length alpha along the gradient (away from y; towards the target in targeted mode), each
    followed by the projection onto the L2 ball, which scales back only the points outside it, and the clip."""
    model = small_model(torch.float64)
    x, y = data(dtype=torch.float64, low=0.3, high=0.7)
    eps, alpha = 0.25, 0.1

    def step(images, labels, sign):
        leaf = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(leaf), labels, reduction="sum"), leaf)
        return images + sign * alpha * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    expected, inside = x.clone(), []
    with model_guard(model):
        for _ in range(4):
            delta = step(expected, y, 1) - x
            length = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            inside.append((length <= eps).flatten())
            expected = (x + delta * torch.where(length > eps, eps / length, 1.0)).clamp(0, 1)
        target = (y + 1) % CLASSES
        towards = step(x, target, -1).clamp(0, 1)
    assert inside[0].all() and not inside[-1].any()  # steps inside the ball, then steps projected back onto it
    torch.testing.assert_close(
        PGD(model, eps, alpha, 4, random_start=False, norm="2")(x, y), expected, rtol=0, atol=1e-12
    )
    targeted = PGD(model, eps, alpha, 1, random_start=False, norm="2")(x, y, target=target)
    torch.testing.assert_close(targeted, towards, rtol=0, atol=1e-12)


def test_deepfool_is_exact_on_a_linear_model():
    model, x, y = linear_case()
    overshoot = 0.02
    result = DeepFool(model, overshoot=overshoot, clip=(-100.0, 100.0)).run(x, y)
    margin = 1e-4 * 200  # 1e-4 of the clip range
    expected = (1 + overshoot) * (nearest_boundary(model, x, y) + margin)
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


def test_deepfool_steps_of_half_precision_images_add_up():
    """Near a tie a step is about the margin, near float16's spacing at pixels in [0.5, 1): DeepFool adds its steps
    up in float32, so such an image still moves on and crosses, as the same model does in float32."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).half()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2)).half()
    with torch.no_grad():
        y = model(x).argmax(1)
    result = DeepFool(model, max_iter=50).run(x, y)
    assert result.x_adv.dtype == torch.float16
    assert result.success.all(), result.iterations


class _OnATie(nn.Module):
    """Two logits, 0 and sum(x - 3/4): an image of pixels 3/4 +- 1/64, as many of each, sits on an exact tie (in
    any dtype: every sum is exact), which class 0 wins. Its DeepFool step is the margin alone, spread evenly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = (x - 0.75).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(f), f], 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_deepfool_steps_off_an_exact_tie_in_half_precision(dtype):
    """The margin is at least the spacing of x's dtype: a 1e-4 one spread over 64 pixels moves none of them in
    bfloat16 before ~150 steps (in float16 ~20), and the image stays on the tie."""
    signs = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed(i)) % 2 for i in range(8)])
    x = (0.75 + (2 * signs - 1) / 64).view(8, 1, 8, 8).to(dtype)
    y = torch.zeros(8, dtype=torch.int64)
    model = _OnATie()
    assert torch.equal(model(x).argmax(1), y) and (model(x)[:, 1] == 0).all()
    result = DeepFool(model, max_iter=50).run(x, y)
    assert result.success.all() and (result.iterations <= 3).all(), result.iterations


def test_deepfool_margin_scales_with_the_clip_range():
    """The same network on [0, 256] images (a power of 2: every number scales exactly) takes the same steps, 256
    times larger: the margin is 1e-4 of the clip range."""
    model = small_model(seed=3)
    x, y = data(64, seed=4)

    def scaled(images: torch.Tensor) -> torch.Tensor:
        return model(images / 256)

    for norm in ("2", "inf"):
        unit = DeepFool(model, max_iter=30, norm=norm).run(x, y)
        wide = DeepFool(scaled, max_iter=30, norm=norm, clip=(0.0, 256.0)).run(x * 256, y)
        assert torch.equal(wide.iterations, unit.iterations) and torch.equal(wide.success, unit.success)
        assert torch.equal(wide.x_adv, unit.x_adv * 256)


def test_carlini_wagner_weighs_the_distance_in_units_of_the_clip_range():
    """The same linear model on [0, 256] images takes the same steps, 256 times larger: the loss's distance is taken
    in units of the clip range (in pixel units, initial_const weighed it 65,536 times more on [0, 256]: on a CNN
    trained on MNIST, 7 of 16 images fooled on [0, 255] against 15 on [0, 1])."""
    model, x, y = linear_case()

    def scaled(images: torch.Tensor) -> torch.Tensor:
        return model(images / 256)

    options = dict(initial_const=1.0, binary_search_steps=3, max_iter=50, learning_rate=0.05)
    unit = CarliniWagnerL2(model, **options).run(x, y)
    wide = CarliniWagnerL2(scaled, clip=(0.0, 256.0), **options).run(x * 256, y)
    assert unit.success.all() and torch.equal(wide.success, unit.success)
    assert torch.equal(wide.x_adv, unit.x_adv * 256) and torch.equal(wide.iterations, unit.iterations)


def test_without_a_clip_deepfool_reaches_the_nearest_boundary_with_the_papers_margin():
    """Data far outside any clip that would suit it (a wide clip was the only way, and its margin grew with it)."""
    model, x, _ = linear_case()
    x = (x - 0.5) * 40
    y = model(x).argmax(1)
    minimal = nearest_boundary(model, x, y)
    result = DeepFool(model, overshoot=0.0, clip=None).run(x, y)
    assert result.success.all() and (result.iterations == 1).all()
    assert (result.l2 >= minimal).all() and (result.l2 <= minimal + 1.01e-4).all()
    assert step_margin(None, torch.float32) == 1e-4 and step_margin(None, torch.bfloat16) == 2**-7


def test_deepfool_stops_an_image_whose_step_is_zero():
    """A model flat around x (rounding inside: its gradient is 0, no boundary to step towards) ran every image to
    max_iter, each step 0."""
    model = small_model()
    x, _ = data()

    def rounded(images: torch.Tensor) -> torch.Tensor:
        return model((images * 16).round() / 16)

    y = rounded(x).argmax(1)
    result = DeepFool(rounded, max_iter=50).run(x, y)
    assert (result.iterations == 1).all() and torch.equal(result.x_adv, x) and not result.success.any()


class _TwinClasses(nn.Module):
    """Three logits: 0, 0 and sum(x) - 20 (negative for 16 pixels below 1.25). Classes 0 and 1 tie everywhere, with
    the same gradient: no step reaches their boundary; class 2's is a plane."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1).sum(1) - 20
        zero = torch.zeros_like(f)
        return torch.stack([zero, zero, f], 1)


def test_deepfool_steps_past_a_tied_class_of_no_gradient_to_the_others():
    """Class 1 ties with the label 0 (f_1 - f_0 = 0) with w_1 = 0: it is no boundary (its distance is inf, not the
    NaN of 0 / 0, which argmin would pick, leaving the image with no step); the step goes to sum(x) = 20, the
    exact distance (20 - sum(x)) / ||w||_2 with ||w||_2 = 4, plus the margin."""
    x = torch.full((3, 16), 0.25, dtype=torch.float64) + torch.arange(3, dtype=torch.float64)[:, None] / 8
    y = torch.zeros(3, dtype=torch.int64)
    result = DeepFool(_TwinClasses(), overshoot=0.0, clip=(-100.0, 100.0)).run(x, y)
    assert result.success.all() and torch.equal(result.predictions, torch.full_like(y, 2))
    expected = (20 - x.sum(1)) / 4 + 1e-4 * 200  # the margin: 1e-4 of the clip range
    torch.testing.assert_close(result.l2, expected, rtol=1e-9, atol=1e-12)
    assert (result.iterations == 1).all()


def test_deepfool_margin_values():
    """1e-4 of the clip range (the paper's 1e-4 on [0, 1], exactly: float32 results there are unchanged), at least
    the spacing of x's dtype at the bounds."""
    assert step_margin((0.0, 1.0), torch.float32) == 1e-4 and step_margin((0.0, 1.0), torch.float64) == 1e-4
    assert step_margin((0.0, 255.0), torch.float32) == 1e-4 * 255
    assert step_margin((-100.0, 100.0), torch.float64) == 1e-4 * 200
    assert step_margin((0.0, 1.0), torch.float16) == 2**-10 and step_margin((0.0, 1.0), torch.bfloat16) == 2**-7
    assert step_margin((-1.0, 1.0), torch.bfloat16) == 2**-7 and step_margin((0.0, 255.0), torch.bfloat16) == 1.0


def test_deepfool_linf_on_a_linear_model():
    model, x, y = linear_case()
    result = DeepFool(model, norm="inf", overshoot=0.0, clip=(-100.0, 100.0)).run(x, y)
    logits, w = model(x).detach(), model.weight.detach()
    gaps = (logits - logits.gather(1, y[:, None])).abs() / (w[None] - w[y][:, None]).abs().sum(2)
    expected = gaps.scatter(1, y[:, None], torch.inf).amin(1) + 1e-4 * 200  # the margin: 1e-4 of the clip range
    torch.testing.assert_close(result.linf, expected, rtol=1e-9, atol=1e-12)
    assert result.success.all()


def test_carlini_wagner_nearly_reaches_the_minimal_l2_on_a_linear_model():
    model, x, y = linear_case()
    minimal = nearest_boundary(model, x, y)
    # c = 1 / 49: the distance is weighed in units of the clip range, 7
    cw = CarliniWagnerL2(model, initial_const=1 / 49, binary_search_steps=6, max_iter=200, clip=(-3.0, 4.0))
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
