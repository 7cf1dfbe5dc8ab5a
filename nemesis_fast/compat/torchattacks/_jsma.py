"""torchattacks' JSMA, batched: every image still running takes its step at once, with the gradients from one
forward pass and its batched vector-Jacobian products, and the pair search of
:func:`nemesis_fast.jsma_saliency_search` (O(B n) memory; torchattacks builds n x n score matrices, one image at a
time)."""

from __future__ import annotations

import math
import warnings
from functools import partial

import torch
import torch.nn.functional as F
import torchattacks

from ... import ops
from .._peer import GradientEngine, frozen_parameters
from ._common import (
    GivesBackState,
    check_label_classes,
    per_image_fallback_reason,
    prepare,
    warn_per_image_fallback,
)

# torchattacks' search domain: the features below 0.99 (theta > 0) or above 0.01 (theta < 0).
_DOMAIN_HIGH, _DOMAIN_LOW = 0.99, 0.01


class JSMA(GivesBackState, torchattacks.JSMA):
    """torchattacks.JSMA(model, theta=1.0, gamma=0.1), torchattacks' variant of JSMA (logits, pairs).

    The target is the mode's target, or (label + 1) % 10 in the default mode, as in torchattacks. Each step adds
    theta to the pair p < q of the search domain with the largest (a_p + a_q) * |b_p + b_q| among the pairs with
    a_p + a_q > 0 and b_p + b_q < 0, where a is the gradient of the target logit and b the sum of the other logits'
    gradients, then clamps the image into [0, 1] and removes p and q from the domain; where no pair is valid,
    feature 0 takes both steps, as in torchattacks. The domain starts as the features below 0.99 (above 0.01 for
    theta <= 0). An image stops when the model predicts its target, when its domain is empty, or after
    ceil(gamma * n / 2) steps (n features, channels included).

    With theta <= 0 torchattacks' saliency map scores every valid pair alpha * |beta| < 0, below the 0 of the pairs
    it masks out, so its argmax is always the pair (0, 0): feature 0 alone takes every step. This class does the
    same, without the gradients, and warns; :class:`nemesis_fast.attacks.JSMA` with theta < 0 runs the paper's
    decreasing search.
    """

    real_settings = ("theta", "gamma")

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversarial images of `images` (N, C, H, W) in [0, 1] with labels `labels` (N,) or (N, 1). With a
        BatchNorm or dropout layer in training mode, torchattacks' own per-image loop runs, after a
        PeerFallbackWarning."""
        images, labels, wanted = prepare(self, images, labels)  # the targets drawn first, as torchattacks
        target = wanted if self.targeted else (labels + 1) % 10
        # (checked after drawing them: torchattacks' drawing ends in model.train(), which puts a batch norm that
        # set_model_training_mode left in eval mode back in training)
        reason = per_image_fallback_reason(self.model)
        if reason is not None:
            warn_per_image_fallback("JSMA", reason)
            singles = [self.perturbation_single(image[None], goal[None]) for image, goal in zip(images, target)]
            return torch.clamp(torch.cat(singles), min=0, max=1) if singles else images
        if self.theta <= 0:
            warnings.warn(
                f"torchattacks' JSMA with theta={self.theta} <= 0 changes feature 0 only (its saliency map's argmax "
                "falls on a masked-out pair); this drop-in does the same. nemesis_fast.attacks.JSMA with theta < 0 "
                "runs the paper's decreasing search",
                UserWarning,
                stacklevel=3,  # the user's call of the attack (torchattacks' __call__ runs forward)
            )
        with frozen_parameters(self.model):
            adv = self._perturb_batch(images, labels, target)
        return torch.clamp(adv, min=0, max=1)

    def _perturb_batch(self, images: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = images.flatten(1).clone()
        increasing = self.theta > 0
        domain = out < _DOMAIN_HIGH if increasing else out > _DOMAIN_LOW
        engine = GradientEngine(self.get_logits)
        # The images still running, compacted: their rows of the output, images, domains, targets and gradient
        # weights. Rows are dropped (and written back to `out`) only on the steps where some image stops.
        index = torch.arange(len(out), device=out.device)
        x, weights = out.clone(), None
        for step in range(math.ceil(out.shape[1] * self.gamma / 2.0) if len(out) else 0):
            batch = x.view(-1, *images.shape[1:])
            if increasing:  # (the targets are checked against the first logits: no forward pass of its own)
                given = weights if weights is not None else partial(_checked_weights, target, labels, self.targeted)
                logits, grads = engine.logit_gradients(batch, given)
                weights = _weights(target, logits) if weights is None else weights
                grads = grads.flatten(2).float()
            else:  # the pair is (0, 0) whatever the gradients
                with torch.no_grad():
                    logits, grads = self.get_logits(batch), None
                if step == 0:
                    _check_targets(target, labels, logits.shape[1], self.targeted)
            running = (logits.argmax(1) != target) & domain.any(1)
            rows = running.nonzero().squeeze(1)  # the step's one host synchronisation
            if rows.numel() < len(index):
                out.index_copy_(0, index, x)
                index, x, domain, target = index[rows], x[rows], domain[rows], target[rows]
                if increasing:
                    weights, grads = weights[:, rows], grads[:, rows]
                if rows.numel() == 0:
                    return out.view_as(images)
            if increasing:
                p, q, _ = ops.jsma_saliency_search(grads[0], grads[1], domain, increasing)
                pair = torch.stack((p, q), 1).clamp_(min=0)  # no valid pair: p = q = -1: feature 0 takes both steps
            else:
                pair = torch.zeros((len(index), 2), dtype=torch.int64, device=x.device)
            x.scatter_add_(1, pair, torch.full(pair.shape, self.theta, dtype=x.dtype, device=x.device)).clamp_(0, 1)
            domain.scatter_(1, pair, False)
        out.index_copy_(0, index, x)
        return out.view_as(images)


def _check_targets(target: torch.Tensor, labels: torch.Tensor, classes: int, targeted: bool) -> None:
    """ValueError where a label or a target is no class of the model (torchattacks aims a label beyond them at
    (label + 1) % 10, raises an IndexError for such a target, or, with theta <= 0, which takes no gradient, changes
    feature 0 towards a class that does not exist). Called on the first step's logits: a call that takes no step
    (gamma too small) returns the images, as torchattacks does."""
    check_label_classes(labels, classes)
    if int(target.max()) >= classes:
        default = "" if targeted else " (the default mode's target is (label + 1) % 10: set a target mode)"
        raise ValueError(
            f"JSMA's targets must be classes of the model's {classes} logits, got {int(target.max())}{default}"
        )


def _checked_weights(target: torch.Tensor, labels: torch.Tensor, targeted: bool, logits: torch.Tensor) -> torch.Tensor:
    """:func:`_weights`, after :func:`_check_targets` on the first logits."""
    _check_targets(target, labels, logits.shape[1], targeted)
    return _weights(target, logits)


def _weights(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(2, B, classes): the weights whose products with the logits (B, classes) are the target logit and the sum of
    the others: the gradients of torchattacks' two Jacobian rows."""
    one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return torch.stack([one_hot, 1 - one_hot])
