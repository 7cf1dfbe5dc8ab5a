"""torchattacks' FGSM, PGD and RFGSM, computed as torchattacks 3.5 computes them (same loss, same random draws
from torch's global generator, same projection arithmetic), with the model's parameters frozen during the attack
so that no graph is built for the weights."""

from __future__ import annotations

import torch
import torchattacks

from .._peer import frozen_parameters
from ._common import GivesBackState, ascent_sign, prepare, projected_steps


class FGSM(GivesBackState, torchattacks.FGSM):
    """torchattacks.FGSM(model, eps=8/255): clamp(x + eps * sign(grad of the mean cross-entropy), 0, 1); targeted
    modes step down the cross-entropy of the target."""

    real_settings = ("eps",)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversarial images of `images` (N, C, H, W) in [0, 1] with labels `labels`: class indices (N,), or
        class probabilities (N, classes) as torchattacks' cross-entropy takes them."""
        images, _, wanted = prepare(self, images, labels, probabilities=True)
        with frozen_parameters(self.model):
            step = ascent_sign(self, images, wanted)
        return torch.clamp(torch.add(images, step, alpha=self.eps), min=0, max=1)


class PGD(GivesBackState, torchattacks.PGD):
    """torchattacks.PGD(model, eps=8/255, alpha=2/255, steps=10, random_start=True): a uniform start in the eps
    cube (``uniform_`` on torch's global generator), then `steps` sign steps of size alpha, each projected onto the
    eps cube around x and [0, 1]."""

    real_settings = ("eps", "alpha")

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversarial images of `images` (N, C, H, W) in [0, 1] with labels `labels`: class indices (N,), or
        class probabilities (N, classes) as torchattacks' cross-entropy takes them."""
        images, _, wanted = prepare(self, images, labels, probabilities=True)
        start = images.clone()
        if self.random_start:
            start = torch.clamp(start + torch.empty_like(start).uniform_(-self.eps, self.eps), min=0, max=1)
        with frozen_parameters(self.model):
            return projected_steps(self, images, start, wanted, self.alpha, self.eps, self.steps).detach()


class RFGSM(GivesBackState, torchattacks.RFGSM):
    """torchattacks.RFGSM(model, eps=8/255, alpha=2/255, steps=10), torchattacks' iterative R+FGSM: a random sign
    step of size alpha (``randn_like`` on torch's global generator), then `steps` sign steps of size alpha, each
    projected onto the eps cube around x and [0, 1] (not Tramer et al.'s single step: for that, use
    :class:`nemesis_fast.attacks.RandFGSM`)."""

    real_settings = ("eps", "alpha")

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversarial images of `images` (N, C, H, W) in [0, 1] with labels `labels`: class indices (N,), or
        class probabilities (N, classes) as torchattacks' cross-entropy takes them."""
        images, _, wanted = prepare(self, images, labels, probabilities=True)
        start = torch.clamp(images + self.alpha * torch.randn_like(images).sign(), min=0, max=1)
        with frozen_parameters(self.model):
            return projected_steps(self, images, start, wanted, self.alpha, self.eps, self.steps).detach()
