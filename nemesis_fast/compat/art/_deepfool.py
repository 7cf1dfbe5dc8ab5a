"""ART's DeepFool, batched in torch: every image of a chunk still on its first prediction steps at once, with the
gradients of output_k - output_p for the other candidate classes k from one forward pass and its batched
vector-Jacobian products (ART takes one backward pass per class, through numpy, for every image of the chunk at
every step, and subtracts)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.attacks import evasion

from ...attacks import DeepFool as PaperDeepFool
from ...attacks.jacobian import difference_weights, predicts
from .._peer import GradientEngine
from ._classifier import (
    AlgorithmParameter,
    TorchClassifier,
    batches,
    check_algorithm,
    fall_back,
    option_unserved,
    unserved,
)

_TOL = 10e-8  # ART's tolerance, added to the norms


class DeepFool(AlgorithmParameter, evasion.DeepFool):
    """art.attacks.evasion.DeepFool(classifier, max_iter=100, epsilon=1e-6, nb_grads=10, batch_size=1,
    verbose=True), with ``algorithm=`` added.

    algorithm="art" (default): ART's variant, computed in torch. y is ignored: each image moves away from its first
    prediction p. The candidate classes are one set for all images: the union of every image's nb_grads most likely
    classes (all classes when nb_grads >= their number). Each step adds to the current point
    r = |f_l| / (||w_l||^2 + 1e-7) * w_l, scaled by the clip range and clipped (f_k = output_k - output_p, w_k its
    gradient, l the candidate of smallest |f_k| / (||w_k|| + 1e-7)); every image takes at least one step and stops
    when its prediction leaves p, or after max_iter steps, or when a step leaves it where it was (clipped back: ART
    repeats that step until max_iter, to the same image); at the end x + (1 + epsilon) * (x_i - x), clipped. As
    ART 1.20 does, output_p in f_k is read at p's position among the candidates, which is class p only when every
    class is a candidate: with nb_grads below the number of classes, f_k compares with another class's output, and
    the adapter reproduces that (algorithm="paper" is the paper's DeepFool). The roundings differ from ART's: the
    adapter differentiates output_k - output_p where ART subtracts the two class gradients, its norms are torch's,
    and the model's own rounding can depend on the batch (ART runs the whole chunk at every step, the adapter only
    its images still running). Where ART keeps stepping an image at a tie (the chosen f_l about 0, most often with
    nb_grads below the number of classes), its steps amplify such a difference step after step, and that image
    can end far from ART's. Taking ART's arithmetic (its class gradients, numpy's norms) made the suite's
    benchmark 1.3-2x slower and still left the batch's rounding, so the adapter keeps its own.

    algorithm="paper": :class:`nemesis_fast.attacks.DeepFool` (the paper's: per-image candidates, the overshoot on
    the accumulated perturbation) with max_iter, overshoot = epsilon and candidates = nb_grads, away from the first
    prediction; other images than ART's. Without clip_values, unbounded (clip=None), as ART's own.

    Calls that cannot be served (see :mod:`nemesis_fast.compat.art`) run ART's own implementation after a warning.
    """

    attack_params = evasion.DeepFool.attack_params + ["algorithm"]

    def __init__(
        self,
        classifier: Any,
        max_iter: int = 100,
        epsilon: float = 1e-6,
        nb_grads: int = 10,
        batch_size: int = 1,
        verbose: bool = True,
        *,
        algorithm: str = "art",
    ) -> None:
        super().__init__(classifier, max_iter, epsilon, nb_grads, batch_size, verbose)
        self.algorithm = check_algorithm(algorithm)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial examples of `x` (numpy, float32 out); `y` is ignored, as in ART."""
        reason = unserved(self.estimator, postprocessing=True) or option_unserved(x, kwargs)
        if reason is None and self.estimator.nb_classes < 2:
            reason = "the classifier has a single output"
        if reason is not None:
            if self.algorithm == "paper":
                raise ValueError(f"algorithm='paper' cannot run here: {reason}")
            return fall_back(self, reason, lambda: super(DeepFool, self).generate(x, y, **kwargs))
        view = TorchClassifier(self.estimator)
        with view.session():
            x_t = view.images(x)
            predictions = view.predict(x_t, self.batch_size)
            if self.algorithm == "paper":
                return view.numpy(self._paper(view, x_t, predictions))
            if self.nb_grads < view.nb_classes:
                candidates = torch.unique(predictions.topk(self.nb_grads, dim=1).indices)
            else:
                candidates = torch.arange(view.nb_classes, device=x_t.device)
            engine = GradientEngine(view.logits)
            adv = torch.empty_like(x_t)
            for chunk in batches(len(x_t), self.batch_size):
                moved = self._chunk(view, engine, x_t[chunk], predictions[chunk], candidates)
                adv[chunk] = view.clamp(x_t[chunk] + (1 + self.epsilon) * (moved - x_t[chunk]))
            return view.numpy(adv)

    def _paper(self, view: TorchClassifier, x: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        attack = PaperDeepFool(view.logits, self.max_iter, self.epsilon, max(self.nb_grads, 2), clip=view.clip)
        labels = predictions.argmax(1)
        return torch.cat([attack(x[chunk], labels[chunk]) for chunk in batches(len(x), self.batch_size)])

    def _chunk(
        self,
        view: TorchClassifier,
        engine: GradientEngine,
        x: torch.Tensor,
        outputs: torch.Tensor,
        candidates: torch.Tensor,
    ) -> torch.Tensor:
        """ART's loop over one chunk: the moved images before the final overshoot."""
        if len(candidates) < 2:  # no other class to move towards: ART's steps are all zero
            return x.clone()
        first = outputs.argmax(1)
        # Each image's candidates other than its first prediction p (p is always a candidate: it is its top-1),
        # in the candidates' order, and the weights e_k - e_p whose gradients are ART's w_k (n, L - 1, C).
        others = torch.arange(len(candidates) - 1, device=x.device)[None]
        position = torch.searchsorted(candidates, first)  # p's place among the candidates
        others = others + (others >= position[:, None])
        targets = candidates[others]
        weights = difference_weights(first, targets, view.nb_classes)  # (L - 1, n, C)
        batch = x.clone()
        index = torch.arange(len(x), device=x.device)  # every image takes the first step
        logits, grads = engine.logit_gradients(x, weights)
        for step in range(self.max_iter):
            if index.numel() == 0:
                break
            r = self._step(logits, grads.transpose(0, 1), targets[index], position[index])
            before = batch[index]
            if view.clip is None:
                after = before + r
            else:
                low, high = view.clip
                span = np.float32(high) - np.float32(low)
                after = torch.clamp(before + r * float(span), low, high)
            batch[index] = after
            # An image that its step leaves where it was (clipped back) is at a fixed point: ART would repeat the
            # same step until max_iter. It stops here, with the same result.
            index = index[(after != before).flatten(1).any(1)]
            if step == self.max_iter - 1 or index.numel() == 0:
                break
            logits, _, rows, grads = engine.logit_gradients_of_kept(
                batch[index], weights[:, index], predicts(first[index])
            )
            index, logits = index[rows], logits[rows]
        return batch

    @staticmethod
    def _step(logits: torch.Tensor, grads: torch.Tensor, targets: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """ART's step r for images with outputs `logits` (n, C), other candidates `targets` (n, L - 1), their first
        predictions p at `position` (n,) among the candidates, and `grads` (n, L - 1, ...): the gradients of
        output_k - output_p. As ART 1.20 computes f_k, output_p is read at class `position`: class p itself when
        every class is a candidate, another class's output when nb_grads leaves some out."""
        rows = torch.arange(len(logits), device=logits.device)
        f_diff = logits.gather(1, targets) - logits[rows, position][:, None]
        norm = torch.linalg.vector_norm(grads.flatten(2), 2, dim=2) + _TOL
        nearest = (torch.abs(f_diff) / norm).argmin(1)
        chosen = grads[rows, nearest]
        length = torch.linalg.vector_norm(chosen.flatten(1), 2, dim=1) ** 2 + _TOL
        scale = torch.abs(f_diff[rows, nearest]) / length
        return scale.view(-1, *([1] * (chosen.dim() - 1))) * chosen
