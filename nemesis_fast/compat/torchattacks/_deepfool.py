"""torchattacks' DeepFool, batched: every image still on its label steps at once, with the gradients of all classes
from one forward pass per step and its batched vector-Jacobian products (torchattacks runs one image at a time,
with one forward pass and one backward pass per class)."""

from __future__ import annotations

import torch
import torchattacks

from ...attacks.jacobian import predicts
from .._peer import GradientEngine, frozen_parameters
from ._common import (
    GivesBackState,
    check_label_classes,
    per_image_fallback_reason,
    prepare,
    warn_per_image_fallback,
)


class DeepFool(GivesBackState, torchattacks.DeepFool):
    """torchattacks.DeepFool(model, steps=50, overshoot=0.02), torchattacks' variant of DeepFool (L2).

    At each step, an image still predicted as its label y moves from its current point x_i to
    clamp(x_i + (1 + overshoot) * |f_l| w_l / ||w_l||^2, 0, 1), where f_k = logit_k - logit_y and w_k their
    gradient, for the class l != y of the smallest |f_k| / ||w_k|| (over all classes): the overshoot applies at every
    step, from the current point, as torchattacks does it (the paper scales the accumulated perturbation once). An
    image stops when its prediction leaves y (checked before each step), or after `steps` steps, or as soon as a
    step leaves it unchanged (clamped back where it was), where torchattacks repeats that same step until `steps`:
    the same image, without the idle steps. Where the step is 0 / 0 (the gradient of f_l is 0: a flat model, such
    as feature squeezing attacked through its own gradient), torchattacks returns NaN pixels; the image is left
    where it is and stops.
    """

    real_settings = ("overshoot",)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversarial images of `images` (N, C, H, W) in [0, 1] with labels `labels` (N,)."""
        adv_images, _ = self.forward_return_target_labels(images, labels)
        return adv_images

    def forward_return_target_labels(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial images, the class each image was last stepped towards, or its prediction once fooled).
        With a BatchNorm or dropout layer in training mode, torchattacks' own per-image loop runs, after a
        PeerFallbackWarning."""
        reason = per_image_fallback_reason(self.model)
        if reason is not None:
            warn_per_image_fallback("DeepFool", reason, calls_below_forward=1)
            return super().forward_return_target_labels(images, labels)
        images, indices, _ = prepare(self, images, labels)  # (torchattacks' DeepFool has no targeted mode)
        target_labels = indices.clone()
        adv = images.clone()
        engine = GradientEngine(self.get_logits)
        index = torch.arange(len(images), device=images.device)  # the images still predicted as their label
        with frozen_parameters(self.model):
            for step in range(self.steps):
                if index.numel() == 0:
                    break
                index = self._step(engine, adv, indices, target_labels, index, first=step == 0)
        # torchattacks' are a copy of the labels: their dtype, and their shape, (N,) or (N, 1)
        return adv, target_labels.to(labels.dtype).reshape(labels.shape)

    def _step(
        self,
        engine: GradientEngine,
        adv: torch.Tensor,
        labels: torch.Tensor,
        target_labels: torch.Tensor,
        index: torch.Tensor,
        first: bool = False,
    ) -> torch.Tensor:
        """One step of the images `index` (updates adv and target_labels in place); returns those still running.
        The `first` step's logits check the labels against the model's classes."""
        x = adv[index]

        def identity(logits: torch.Tensor) -> torch.Tensor:  # every class's own gradient, as torchattacks takes them
            eye = torch.eye(logits.shape[1], dtype=logits.dtype, device=logits.device)
            return eye[:, None, :].expand(-1, logits.shape[0], -1)

        y = labels[index]
        logits, keep, kept, grads = engine.logit_gradients_of_kept(x, identity, predicts(y))
        if first:
            check_label_classes(labels, logits.shape[1])
        predicted = logits.argmax(1)
        target_labels[index] = torch.where(keep, target_labels[index], predicted)
        index, x, logits, y = index[kept], x[kept], logits[kept], y[kept]
        grads = grads.transpose(0, 1)  # (n, C, ...): the gradients of the images still on their label
        classes = logits.shape[1]
        rows = torch.arange(len(index), device=x.device)
        # The wrong classes of each image in increasing order: k, or k + 1 from the label on.
        wrong = torch.arange(classes - 1, device=x.device)[None, :]
        wrong = wrong + (wrong >= y[:, None]).long()
        f_prime = logits.gather(1, wrong) - logits[rows, y][:, None]
        w_prime = grads[rows[:, None], wrong] - grads[rows, y][:, None]
        value = torch.abs(f_prime) / torch.norm(w_prime.flatten(2), p=2, dim=2)
        nearest = value.argmin(1)
        w_l = w_prime[rows, nearest]
        length = torch.norm(w_l.flatten(1), p=2, dim=1) ** 2
        unit = (-1, *([1] * (x.dim() - 1)))
        delta = torch.abs(f_prime[rows, nearest]).view(unit) * w_l / length.view(unit)
        moved = torch.clamp(x + (1 + self.overshoot) * delta, min=0, max=1)
        # Where the gradients of the nearest class's f_l are all 0 (a flat model: a squeezing step, a saturated
        # softmax), torchattacks' step is 0 / 0 and its image NaN; the image stays where it is here, and so stops.
        # (An infinite step, of gradients whose squares underflow, is torchattacks' too: the clamp makes it finite.)
        defined = ~torch.isnan(delta.flatten(1)).any(1).view(unit)
        moved = torch.where(defined, moved, x)
        adv[index] = moved
        target_labels[index] = wrong[rows, nearest]
        # An image that its step leaves where it was (the step points out of [0, 1]) is at a fixed point: every
        # further step would repeat this one, as torchattacks' loop does up to `steps`. It stops here.
        return index[(moved != x).flatten(1).any(1)]
