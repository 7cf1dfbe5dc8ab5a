"""torchattacks' JSMA, batched: every image still running takes its step at once, with the gradients from one
forward pass and its batched vector-Jacobian products, and the pair search of
:func:`nemesis_fast.jsma_saliency_search` (O(B n) memory; torchattacks builds n x n score matrices, one image at a
time)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchattacks

from ... import ops
from ...attacks.base import select_rows
from .._peer import GradientEngine, frozen_parameters
from ._common import prepare

# torchattacks' search domain: the features below 0.99 (theta > 0) or above 0.01 (theta < 0).
_DOMAIN_HIGH, _DOMAIN_LOW = 0.99, 0.01


class JSMA(torchattacks.JSMA):
    """torchattacks.JSMA(model, theta=1.0, gamma=0.1), torchattacks' variant of JSMA (logits, pairs).

    The target is the mode's target, or (label + 1) % 10 in the default mode, as in torchattacks. Each step adds
    theta to the pair p < q of the search domain with the largest (a_p + a_q) * |b_p + b_q| among the pairs with
    a_p + a_q > 0 and b_p + b_q < 0 (signs flipped for theta < 0), where a is the gradient of the target logit and
    b the sum of the other logits' gradients, then clamps the image into [0, 1] and removes p and q from the
    domain; where no pair is valid, feature 0 takes both steps, as in torchattacks. The domain starts as the features
    below 0.99 (above 0.01 for theta < 0). An image stops when the model predicts its target, when its domain is
    empty, or after ceil(gamma * n / 2) steps (n features, channels included).
    """

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversarial images of `images` (N, C, H, W) in [0, 1] with labels `labels` (N,)."""
        images, labels, wanted = prepare(self, images, labels)
        target = wanted if self.targeted else (labels + 1) % 10
        with frozen_parameters(self.model):
            adv = self._perturb_batch(images, target)
        return torch.clamp(adv, min=0, max=1)

    def _perturb_batch(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1).clone()
        n = flat.shape[1]
        increasing = self.theta > 0
        domain = flat < _DOMAIN_HIGH if increasing else flat > _DOMAIN_LOW
        engine = GradientEngine(self.get_logits)
        index = torch.arange(len(flat), device=flat.device)  # the images still running
        for _ in range(math.ceil(n * self.gamma / 2.0)):
            if index.numel() == 0:
                break
            logits, target_grad, other_grad = self._gradients(
                engine, flat[index].view(-1, *images.shape[1:]), target[index]
            )
            running = (logits.argmax(1) != target[index]) & domain[index].any(1)
            index, target_grad, other_grad = select_rows(running, index, target_grad, other_grad)
            if index.numel() == 0:
                break
            p, q, found = ops.jsma_saliency_search(target_grad, other_grad, domain[index], increasing)
            p, q = torch.where(found, p, 0), torch.where(found, q, 0)
            rows = flat[index]
            rows[torch.arange(len(index), device=flat.device), p] += self.theta
            rows[torch.arange(len(index), device=flat.device), q] += self.theta
            flat[index] = rows.clamp_(0.0, 1.0)
            domain[index, p] = False
            domain[index, q] = False
        return flat.view_as(images)

    @staticmethod
    def _gradients(
        engine: GradientEngine, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, gradient of the target logit, gradient of the sum of the other logits), each (n, features), in
        float32 as torchattacks' Jacobian holds them: two vector-Jacobian products from one forward pass."""

        def weights(logits: torch.Tensor) -> torch.Tensor:
            one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
            return torch.stack([one_hot, 1 - one_hot])

        logits, grads = engine.logit_gradients(x, weights)
        grads = grads.flatten(2).float()
        return logits, grads[0], grads[1]
