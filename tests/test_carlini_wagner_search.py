"""Carlini-Wagner L2's search: Adam's bias correction, the growth of c while no
adversarial is found, and the last binary step at the upper bound (ten or more steps)."""

from __future__ import annotations

import math

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
