"""The fast gradient sign method (Goodfellow et al., 2015) and R+FGSM (Tramer et al., 2018)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_choice, check_nonnegative, check_number
from .base import Attack, Seed
from .norms import Norm, check_norm, flat_l2_norm

LABELS = ("true", "predicted")


def gradient_step(grad: torch.Tensor, size: float, norm: Norm) -> torch.Tensor:
    """A step of `size` along `grad`: size * sign(grad) (norm "inf"; sign(NaN) is 0), or size * grad / ||grad||_2
    per sample (norm "2"; no step where the gradient is 0, or not finite: a model's NaN or inf there)."""
    if norm == "inf":
        return size * grad.sign()
    length = flat_l2_norm(grad)
    usable = torch.isfinite(length) & (length > 0)
    step = size * grad / torch.where(usable, length, torch.ones_like(length))
    return torch.where(usable, step, torch.zeros_like(step))


class FGSM(Attack):
    """One step of size `eps` along the sign of the cross-entropy gradient (norm "inf"), or along the
    gradient scaled to L2 length `eps` (norm "2"); away from the label, or towards the target.

    The step is taken in x's dtype, so the Linf norm of x_adv - x is within eps up to one rounding in x's dtype
    (x + eps rounds to the nearest image value: 0.10000002 at eps 0.1 on float32 pixels in [0, 1]), as in
    torchattacks and ART.

    Args:
        model: maps (B, ...) images to (B, classes) logits.
        eps: the perturbation budget, >= 0, in pixel units (Linf or L2 after clipping to `clip`); at most the
            largest number of x's dtype (a ValueError at the call otherwise: the step would be inf).
        norm: "inf" (the sign step) or "2".
        labels: the label an untargeted step moves away from: "true" (the y given) or "predicted" (the model's
            own prediction at x, as cleverhans' fgm does without labels, avoiding label leaking; the setting of
            the seed paper's authors).
        clip, targeted, seed: as for :class:`~nemesis_fast.attacks.Attack` (the seed only draws targets).
    """

    step_sizes = {"eps": 1.0}

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        eps: float,
        *,
        norm: Norm = "inf",
        labels: str = "true",
        clip: tuple[float, float] | None = (0.0, 1.0),
        targeted: bool = False,
        seed: Seed = None,
    ) -> None:
        super().__init__(model, clip=clip, targeted=targeted, seed=seed)
        self.eps = check_nonnegative(eps, "eps")
        self.norm = check_norm(norm)
        self.labels = check_choice(labels, "labels", LABELS)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        grad, _ = self.loss_gradient(x, _step_labels(self.labels, y, target))
        step = gradient_step(grad, self.eps, self.norm)
        return x + step if target is None else x - step, 1  # the base class clips


class RandFGSM(Attack):
    """R+FGSM (Tramer et al., "Ensemble Adversarial Training", 2018): a random sign step, then FGSM.

    x' = clip(x + alpha * sign(N(0, I))), then x_adv = clip(x' + (eps - alpha) * sign(grad_x' J(x', y)))
    (minus the step towards the target in targeted mode). The Linf norm of x_adv - x is at most eps, up to the
    rounding of the steps in x's dtype (each image value rounds to the nearest of its dtype: 0.10000002 at eps 0.1
    on float32 pixels in [0, 1]), as in torchattacks and ART.

    Args:
        model: maps (B, ...) images to (B, classes) logits.
        eps: the total Linf budget, in x's units (pixels in [0, 1]: 0.3 moves a pixel by at most 0.3), >= 0, at
            most the largest number of x's dtype (checked at the call).
        alpha: the size of the random step, in x's units, 0 <= alpha <= eps (Tramer et al. use eps / 2; the seed
            paper's authors 0.05 at every eps).
        labels: "true" (y) or "predicted" (the model's prediction at x', as the seed paper's authors ran it).
        clip, targeted, seed: as for :class:`~nemesis_fast.attacks.Attack`.
    """

    deterministic = False
    step_sizes = {"eps": 1.0, "alpha": 1.0}

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        eps: float,
        alpha: float,
        *,
        labels: str = "true",
        clip: tuple[float, float] | None = (0.0, 1.0),
        targeted: bool = False,
        seed: Seed = None,
    ) -> None:
        super().__init__(model, clip=clip, targeted=targeted, seed=seed)
        self.eps = check_nonnegative(eps, "eps")
        self.alpha = check_number(alpha, "alpha", low=0.0, high=self.eps)
        self.labels = check_choice(labels, "labels", LABELS)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        start = self.project(x + self.alpha * self.randn(x.shape, x).sign())
        grad, _ = self.loss_gradient(start, _step_labels(self.labels, y, target))
        step = (self.eps - self.alpha) * grad.sign()
        return start + step if target is None else start - step, 1  # the base class clips


def _step_labels(labels: str, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor | None:
    """The labels of the loss: the target, y, or None (the model's prediction at the point of the gradient)."""
    if target is not None:
        return target
    return y if labels == "true" else None
