"""torchattacks' CW: Carlini-Wagner L2 at one fixed c (no binary search), Adam on w with x' = (tanh(w) + 1) / 2,
computed as torchattacks 3.5 computes it, with the model's parameters frozen during the attack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchattacks

from .._peer import frozen_parameters
from ._common import GivesBackState, prepare


class CW(GivesBackState, torchattacks.CW):
    """torchattacks.CW(model, c=1, kappa=0, steps=50, lr=0.01).

    Minimises sum ||x' - x||^2 + c * sum f(x') over the batch with torch.optim.Adam, where f is torchattacks' margin:
    clamp(real - other, min=-kappa) (untargeted; other - real when targeted), with real the largest entry of
    onehot * logits and other the largest of (1 - onehot) * logits, zeros included, as torchattacks computes them.
    Each image keeps its smallest-L2 adversarial so far; the whole batch stops when the summed cost rises between
    two of the checks made every max(steps // 10, 1) steps. Pixels at exactly 0 or 1 map to w = -inf or +inf and
    never move, as in torchattacks.
    """

    real_settings = ("c", "kappa", "lr")

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversarial images of `images` (N, C, H, W) in [0, 1] with labels `labels` (N,)."""
        images, _, wanted = prepare(self, images, labels)
        with frozen_parameters(self.model):
            return self._optimise(images, wanted)

    def _optimise(self, images: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        w = self.inverse_tanh_space(images).detach().requires_grad_(True)
        best_adv = images.clone()
        best_l2 = 1e10 * torch.ones(len(images), device=images.device)
        prev_cost = 1e10
        optimizer = torch.optim.Adam([w], lr=self.lr)
        one_hot = None
        check_every = max(self.steps // 10, 1)
        for step in range(self.steps):
            adv = self.tanh_space(w)
            l2 = (adv - images).square().flatten(1).sum(1)
            logits = self.get_logits(adv)
            if one_hot is None:
                one_hot = F.one_hot(wanted, logits.shape[1]).to(logits.dtype)
            other = torch.max((1 - one_hot) * logits, dim=1)[0]
            real = torch.max(one_hot * logits, dim=1)[0]
            margin = other - real if self.targeted else real - other
            cost = l2.sum() + self.c * torch.clamp(margin, min=-self.kappa).sum()
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()
            predicted = logits.detach().argmax(1)
            success = predicted == wanted if self.targeted else predicted != wanted
            better = success & (best_l2 > l2.detach())
            best_l2 = torch.where(better, l2.detach(), best_l2)
            best_adv = torch.where(better.view(-1, *([1] * (images.dim() - 1))), adv.detach(), best_adv)
            if step % check_every == 0:
                if cost.item() > prev_cost:
                    return best_adv
                prev_cost = cost.item()
        return best_adv
