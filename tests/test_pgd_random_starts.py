"""FGSM's L2 step on a non-finite gradient, and PGD's random starts and restarts."""

from __future__ import annotations

import torch
from torch import nn

from nemesis_fast.attacks import FGSM, PGD


class _SqrtModel(nn.Module):
    """Two logits, 0 and sum(sqrt(x)): at a pixel of 0 the gradient is +inf."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1).sqrt().sum(1)
        return torch.stack([torch.zeros_like(f), f], 1)


def test_fgsm_l2_takes_no_step_where_the_gradient_is_infinite():
    x = torch.full((3, 1, 2, 2), 0.5)
    x[0, 0, 0, 0] = 0.0  # infinite gradient on image 0 only
    y = torch.tensor([1, 1, 1])
    out = FGSM(_SqrtModel(), 0.3, norm="2")(x, y)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], x[0])  # no step: ||grad|| is inf, the step is undefined
    assert not torch.equal(out[1], x[1])  # the finite ones do step


class _Const(nn.Module):
    """Linear logits with a huge margin for class 0: no eps-ball step fools it."""

    def __init__(self, features: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, features, generator=g))
        self.b = nn.Parameter(torch.tensor([1e4, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def test_pgd_linf_random_start_fills_the_whole_cube():
    x = torch.full((64, 1, 4, 4), 0.5)  # the eps-cube lies inside [0, 1]: no clipping
    y = torch.zeros(64, dtype=torch.int64)
    delta = PGD(_Const(16), 0.2, 0.05, 0, seed=1)(x, y) - x  # zero steps: the start itself
    assert delta.abs().max() <= 0.2 + 1e-6
    assert delta.min() < -0.19 and delta.max() > 0.19  # both halves of [-eps, eps]
    assert abs(delta.mean().item()) < 0.01  # centred on x


def test_pgd_l2_random_start_is_uniform_in_the_ball():
    """Uniform in a 100-dimensional ball: the radius eps * U ** (1 / 100) is above 0.9 eps with probability
    1 - 0.9 ** 100 > 0.99997 per image (a radius eps * U: 10%)."""
    x = torch.full((200, 1, 10, 10), 0.5)
    y = torch.zeros(200, dtype=torch.int64)
    result = PGD(_Const(100), 0.3, 0.05, 0, norm="2", seed=2).run(x, y)
    assert (result.l2 <= 0.3 + 1e-6).all() and (result.l2 > 0.9 * 0.3).all()


def test_pgd_runs_every_restart_on_an_image_it_never_fools():
    x = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.int64)
    result = PGD(_Const(4), 0.1, 0.02, 3, restarts=4, seed=0).run(x, y)
    assert not result.success.any()
    assert (result.iterations == 3 * 4).all()
