"""Projected gradient descent (Madry et al., 2018) on the cross-entropy, in the Linf or the L2 ball."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_bool, check_int, check_nonnegative
from .base import Attack, Seed
from .fgsm import gradient_step
from .norms import Norm, check_norm, flat_l2_norm


class PGD(Attack):
    """`steps` gradient steps of size `alpha` on the cross-entropy, each followed by the projection onto the
    eps-ball around x (Linf or L2) intersected with `clip`; away from the label, or towards the target.

    Linf steps move along the sign of the gradient; L2 steps along the gradient scaled to L2 length alpha. The
    steps and the ball's bounds x +- eps are computed in x's dtype, so the Linf norm of x_adv - x is within eps up
    to one rounding in x's dtype (0.10000002 at eps 0.1 on float32 pixels in [0, 1]), as in torchattacks and ART.
    The random start is uniform in the eps-ball (the Linf cube, or the L2 ball: a Gaussian direction and a
    radius eps * U ** (1 / d)), then clipped.

    With `restarts` > 1 (random starts only), the images not yet adversarial after a run start again from new
    random points, up to `restarts` runs; each image keeps its first adversarial, else its last run's result.

    Args:
        model: maps (B, ...) images to (B, classes) logits.
        eps: the radius of the ball, >= 0, in pixel units, at most the largest number of x's dtype (a ValueError
            at the call otherwise: the step would be inf).
        alpha: the step size, >= 0, in pixel units, at most the largest number of x's dtype (likewise).
        steps: the number of steps, >= 0.
        random_start: start from a random point of the ball rather than from x.
        norm: "inf" or "2".
        restarts: the most runs per image, >= 1 (> 1 needs random_start).
        clip, targeted, seed: as for :class:`~nemesis_fast.attacks.Attack`.
    """

    step_sizes = {"eps": 1.0, "alpha": 1.0}

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        eps: float,
        alpha: float,
        steps: int,
        random_start: bool = True,
        norm: Norm = "inf",
        *,
        restarts: int = 1,
        clip: tuple[float, float] | None = (0.0, 1.0),
        targeted: bool = False,
        seed: Seed = None,
    ) -> None:
        super().__init__(model, clip=clip, targeted=targeted, seed=seed)
        self.eps = check_nonnegative(eps, "eps")
        self.alpha = check_nonnegative(alpha, "alpha")
        self.steps = check_int(steps, "steps", low=0)
        check_bool(random_start, "random_start")
        self.random_start = random_start
        self.norm = check_norm(norm)
        self.restarts = check_int(restarts, "restarts", low=1)
        if self.restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True: runs from x would all be the same")
        self.deterministic = not random_start

    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self._run(x, y, target)
        iterations = torch.full_like(y, self.steps)
        for _ in range(1, self.restarts):
            with torch.no_grad():
                failed = ~self.is_adversarial(self.logits(x_adv), y, target)
            index = failed.nonzero().squeeze(1)
            if index.numel() == 0:
                break
            x_adv[index] = self._run(x[index], y[index], None if target is None else target[index])
            iterations[index] += self.steps
        return x_adv, iterations

    def _run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """One run of `steps` steps from a (random) start."""
        labels = y if target is None else target
        if self.norm == "inf":
            # The eps-cube intersected with clip, as per-element bounds: one clamp projects onto both.
            low, high = x - self.eps, x + self.eps
            if self.clip is not None:
                low, high = low.clamp_(min=self.clip[0]), high.clamp_(max=self.clip[1])
        alpha = self.alpha if target is None else -self.alpha
        x_adv = self._start(x)
        for _ in range(self.steps):
            grad, _ = self.loss_gradient(x_adv, labels)
            if self.norm == "inf":
                # Three elementwise kernels per step: sign, the step, the projection.
                x_adv = x_adv.add(grad.sign_(), alpha=alpha).clamp_(low, high)
            else:
                x_adv = self._project_l2(x_adv + gradient_step(grad, alpha, "2"), x)
        return x_adv

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x
        if self.norm == "inf":
            return self.project(x + (2 * self.rand(x.shape, x) - 1) * self.eps)
        direction = self.randn(x.shape, x)
        direction = direction / flat_l2_norm(direction).clamp_min(torch.finfo(x.dtype).tiny)
        dims = x[0].numel()
        radius = self.eps * self.rand((x.shape[0],), x).pow(1.0 / dims).view(-1, *([1] * (x.dim() - 1)))
        return self.project(x + radius * direction)

    def _project_l2(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        length = flat_l2_norm(delta)
        scale = torch.where(length > self.eps, self.eps / length.clamp_min(torch.finfo(x.dtype).tiny), 1.0)
        return self.project(x + delta * scale)
