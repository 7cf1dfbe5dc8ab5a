"""Carlini-Wagner L2's search: Adam's bias correction, the growth of c while no
adversarial is found, the bisection of c and the last binary step at the upper bound (ten or more steps), the
abort-early rule, and the images that need the confidence margin."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nemesis_fast.attacks import CarliniWagnerL2


class _Linear(nn.Module):
    def __init__(self, classes: int = 5, features: int = 32, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, features, generator=g, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(classes, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def _case(n: int = 8):
    model = _Linear()
    g = torch.Generator().manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(n, 2, 4, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _reference_run(model, x, y, const, steps, lr):
    """One run of the paper's C&W L2 on [0, 1] with torch.optim.Adam: the smallest-L2 adversarial found."""
    w = torch.atanh((2 * x - 1) * (1 - 1e-6)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    best_l2 = torch.full((len(x),), math.inf, dtype=x.dtype)
    best = x.clone()
    for _ in range(steps):
        image = torch.tanh(w) * 0.5 + 0.5
        logits = model(image)
        l2 = (image - x).flatten(1).square().sum(1)
        real = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], -math.inf).amax(1)
        loss = l2 + const * (real - other).clamp_min(0)
        with torch.no_grad():
            better = (logits.argmax(1) != y) & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best = torch.where(better.view(-1, 1, 1, 1), image, best)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    return best.detach(), best_l2


def test_one_run_is_torch_adam_on_the_tanh_variable():
    model, x, y = _case()
    for p in model.parameters():
        p.requires_grad_(False)
    expected, l2 = _reference_run(model, x, y, const=5.0, steps=25, lr=0.05)
    assert torch.isfinite(l2).all()  # every image found an adversarial: the comparison means something
    result = CarliniWagnerL2(
        model, initial_const=5.0, binary_search_steps=1, max_iter=25, learning_rate=0.05, abort_early=False
    ).run(x, y)
    torch.testing.assert_close(result.x_adv, expected, rtol=0, atol=1e-9)


def test_c_grows_tenfold_while_no_adversarial_is_found():
    """Runs at c = 1e-4, 1e-3, 1e-2 find nothing, a run at c = 1 fools every image: a search of five steps from
    1e-4 reaches 1 (x10 per step while there is no upper bound), and so fools every image."""
    model, x, y = _case()
    options = dict(binary_search_steps=1, max_iter=100, learning_rate=0.05, abort_early=False)
    for c in (1e-4, 1e-3, 1e-2):
        assert not CarliniWagnerL2(model, initial_const=c, **options).run(x, y).success.any()
    assert CarliniWagnerL2(model, initial_const=1.0, **options).run(x, y).success.all()
    search = CarliniWagnerL2(
        model, initial_const=1e-4, binary_search_steps=5, max_iter=100, learning_rate=0.05, abort_early=False
    ).run(x, y)
    assert search.success.all()


def test_with_ten_steps_the_last_run_repeats_the_upper_bound():
    """The tenth run, at an upper bound already run (fresh Adam from the same start: the same trajectory), adds
    nothing: the images equal those of nine steps, at max_iter more iterations."""
    model, x, y = _case()
    options = dict(initial_const=1.0, max_iter=40, learning_rate=0.05, abort_early=False)
    nine = CarliniWagnerL2(model, binary_search_steps=9, **options).run(x, y)
    ten = CarliniWagnerL2(model, binary_search_steps=10, **options).run(x, y)
    assert nine.success.all()
    assert torch.equal(ten.x_adv, nine.x_adv)
    assert torch.equal(ten.iterations, nine.iterations + 40)


class _Recording(CarliniWagnerL2):
    """Records each run's constants c and which images found an adversarial in it."""

    def _optimise(self, x, w_start, labels, y, target, const, *rest):
        found = super()._optimise(x, w_start, labels, y, target, const, *rest)
        self.runs.append((const.clone(), found.clone()))
        return found


class _Scaled(nn.Module):
    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


@pytest.mark.parametrize("scale,initial", [(1.0, 1e-2), (1e-10, 1e6)])
def test_each_c_is_the_midpoint_of_its_bounds_or_ten_times_the_last(scale, initial):
    """Per image: c is the midpoint of its bounds once it has an upper bound below 1e9, else ten times the last (as
    in the paper's code: logits 1e-10 times smaller first find an adversarial at c >= 1e9, and c keeps growing);
    the upper bound is the smallest c that found one, where the tenth run goes."""
    model, x, y = _case()
    attack = _Recording(
        _Scaled(model, scale), initial_const=initial, binary_search_steps=10, max_iter=60, learning_rate=0.05
    )
    attack.runs = []
    attack.run(x, y)
    assert len(attack.runs) == 10
    lower, upper = torch.zeros(len(x), dtype=x.dtype), torch.full((len(x),), 1e10, dtype=x.dtype)
    expected = torch.full((len(x),), initial, dtype=x.dtype)
    for step, (const, found) in enumerate(attack.runs):
        if step == 9:  # the last of ten or more runs: at the upper bound, where there is one
            expected = torch.where(upper < 1e10, upper, expected)
        assert torch.equal(const, expected), step
        lower = torch.where(found, lower, torch.maximum(lower, const))
        upper = torch.where(found, torch.minimum(upper, const), upper)
        expected = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
    found = torch.stack([found for _, found in attack.runs])
    assert found.any(0).all() and (~found).any(0).all()  # every image had both bounds: a true bisection


def test_abort_early_stops_a_run_whose_loss_does_not_fall_at_its_second_check():
    """A model flat around x (rounding inside) and no clip (w = x: the distance's gradient is 0 too): Adam's steps
    are 0 and the loss stays the same. Each run stops at its second check, after max_iter // 10 = 5 more steps
    (the first check, at step 1, has no earlier loss): 6 steps, as the loss must fall by 0.01%."""
    model, x, _ = _case()

    def rounded(images: torch.Tensor) -> torch.Tensor:
        return model((images * 16).round() / 16)

    y = rounded(x).argmax(1)
    options = dict(initial_const=1.0, binary_search_steps=2, max_iter=50, clip=None)
    result = CarliniWagnerL2(rounded, **options).run(x, y)
    assert (result.iterations == 2 * 6).all() and not result.success.any() and torch.equal(result.x_adv, x)
    assert (CarliniWagnerL2(rounded, abort_early=False, **options).run(x, y).iterations == 2 * 50).all()


def test_images_misclassified_by_less_than_the_confidence_margin_are_attacked():
    """An image already misclassified at x, by less than the margin kappa, is not adversarial yet: it runs, and
    reaches the margin."""
    model, x, _ = _case()
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1)
    y = top2.indices[:, 1]  # the runner-up: x is misclassified, by top1 - top2
    kappa = float((top2.values[:, 0] - top2.values[:, 1]).max()) + 1.0
    result = CarliniWagnerL2(model, kappa, 1.0, 3, 60, learning_rate=0.05).run(x, y)
    assert (result.iterations > 0).all() and result.success.all()
    with torch.no_grad():
        logits = model(result.x_adv)
    margin = logits.scatter(1, y[:, None], -torch.inf).amax(1) - logits.gather(1, y[:, None]).squeeze(1)
    assert (margin >= kappa - 1e-9).all()
