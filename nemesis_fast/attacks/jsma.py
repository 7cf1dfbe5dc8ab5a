"""The Jacobian-based saliency map attack (Papernot et al., 2016), batched, with the fused pair search."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .. import ops
from .._checks import check_bool, check_choice, check_number
from .._dispatch import BACKENDS
from .base import Attack, Seed


class JSMA(Attack):
    """JSMA, targeted, L0: changes two input features per step, the pair that most raises the target class while
    lowering the others, until the model predicts the target.

    Each step, for every image still running: the gradients of the target class (`alpha`) and of the sum of the
    other classes (`beta`) with respect to every input feature, from one forward pass and its batched
    vector-Jacobian products (two, not one per class; one with probabilities, where beta = -alpha); then
    the pair p < q of the search domain that maximises (alpha_p + alpha_q) * -(beta_p + beta_q) among the pairs
    with alpha_p + alpha_q > 0 and beta_p + beta_q < 0 (for theta > 0; the signs flip for theta < 0), found by
    :func:`nemesis_fast.jsma_saliency_search` without materialising the n x n pairs. Both features move by
    theta and are clipped into `clip`, and leave the search domain. The domain starts as the features not yet at the
    bound they move towards (`clip[1]` for theta > 0, `clip[0]` for theta < 0; every feature without a clip).

    An image stops when the model predicts its target (checked before each step), when it has spent its budget
    of floor(gamma * n / 2) steps (gamma * n features; n = features per image, channels included), or when no
    valid pair is left. Images already classified as their target are returned unchanged after 0 steps.

    Args:
        model: maps (B, ...) images to (B, classes) logits.
        theta: the change of each chosen feature, nonzero, in pixel units (the paper: +1, features to the top).
        gamma: the largest fraction of the features that may change, in (0, 1]; below 2 / n no image takes a step
            (a warning says so at the call).
        clip: as for :class:`~nemesis_fast.attacks.Attack`.
        use_logits: take the gradients of the logits (True) or of the softmax probabilities (False: the paper's
            F, through the softmax Jacobian). With probabilities beta = -alpha, so the search picks the pair with
            the largest alpha_p + alpha_q > 0; on MNIST it reaches more targets with fewer pixels.
        seed: draws the targets when a call gives none (uniform among the wrong classes).
        backend: the pair search backend, as for :func:`nemesis_fast.jsma_saliency_search`.

    After each call, `last_pairs` holds the (B, steps, 2) int64 pairs chosen per image and step (-1 after the
    image stopped).
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        theta: float = 1.0,
        gamma: float = 0.1,
        *,
        clip: tuple[float, float] | None = (0.0, 1.0),
        use_logits: bool = True,
        seed: Seed = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(model, clip=clip, targeted=True, seed=seed)
        self.theta = check_number(theta, "theta")
        if self.theta == 0:
            raise ValueError("theta must be nonzero (the change of each chosen feature), got 0")
        self.gamma = check_number(gamma, "gamma", low=0.0, low_inclusive=False, high=1.0)
        check_bool(use_logits, "use_logits")
        self.use_logits = use_logits
        self.backend = None if backend is None else check_choice(backend, "backend", BACKENDS)
        self.last_pairs: torch.Tensor | None = None

    def max_steps(self, features: int) -> int:
        """The step budget of an image of `features` features: floor(gamma * features / 2)."""
        return math.floor(self.gamma * features / 2)

    def _execute(
        self, x: Any, y: Any, target: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        self.last_pairs = None  # a call that raises leaves none
        x_adv, iterations, x, y, target = super()._execute(x, y, target)
        if self.last_pairs is None:  # an empty batch, which _perturb does not see
            steps = self.max_steps(math.prod(x.shape[1:]))
            self.last_pairs = torch.full((0, steps, 2), -1, dtype=torch.int64, device=x.device)
        return x_adv, iterations, x, y, target

    def _gradients(self, x: torch.Tensor, one_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, alpha, beta): the gradients (B, n) of the target class and of the sum of the other classes.

        Logits: two vector-Jacobian products from one forward pass, batched (attacks.jacobian). Probabilities: one
        product through the softmax Jacobian, for the target, and beta = -alpha. The probabilities sum to 1, so
        that is the exact gradient of the others; carried through the softmax on its own, it would cancel
        catastrophically (its weights on the logits, p_j (1 - sum of the other p), round 1 - p_t to 1).
        """
        if self.use_logits:
            logits, grads = self.logit_gradients(x, torch.stack([one_hot, 1 - one_hot]))
            return logits, grads[0].flatten(1), grads[1].flatten(1)

        def through_softmax(logits: torch.Tensor) -> torch.Tensor:
            probabilities = logits.softmax(1)  # float32 under torch.autocast, whatever the logits' dtype
            dtype = probabilities.dtype
            return torch.ops.aten._softmax_backward_data(one_hot.to(dtype), probabilities, 1, dtype).to(logits)[None]

        logits, grads = self.logit_gradients(x, through_softmax)
        alpha = grads[0].flatten(1)
        return logits, alpha, -alpha

    def _perturb(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = x.flatten(1).clone()
        batch, n = out.shape
        low, high = self.clip or (-math.inf, math.inf)
        increase = self.theta > 0
        steps = self.max_steps(n)
        if steps == 0:
            warnings.warn(
                f"JSMA: gamma={self.gamma} allows no step on images of {n} features (floor(gamma * n / 2) = 0), so "
                f"every image comes back unchanged; a step needs gamma >= 2 / n = {2 / n:.3g}",
                stacklevel=5,  # the caller of the attack
            )
        iterations = torch.zeros_like(y)
        pairs = torch.full((batch, steps, 2), -1, dtype=torch.int64, device=x.device)
        # The images still running, compacted: their rows of the output, images, domains, targets and pairs. Rows
        # are dropped (written back first) only on the steps where some image stops.
        index = torch.arange(batch, device=x.device)
        flat, run_pairs = out.clone(), pairs.clone()
        domain = flat < high if increase else flat > low  # every (finite) feature without a clip
        one_hot = F.one_hot(target, self.num_classes).to(x.dtype)
        for step in range(steps):
            logits, alpha, beta = self._gradients(flat.view(-1, *x.shape[1:]), one_hot)
            p, q, found = ops.jsma_saliency_search(alpha, beta, domain, increase, backend=self.backend)
            rows = (found & (logits.argmax(1) != target)).nonzero().squeeze(1)  # the step's one synchronisation
            if rows.numel() < len(index):
                _write_back(out, pairs, iterations, index, flat, run_pairs, step)
                index, flat, domain, one_hot, target, run_pairs, p, q = (
                    t[rows] for t in (index, flat, domain, one_hot, target, run_pairs, p, q)
                )
                if rows.numel() == 0:
                    break
            pair = torch.stack((p, q), 1)
            flat.scatter_(1, pair, self.project(flat.gather(1, pair).add_(self.theta)))
            domain.scatter_(1, pair, False)
            run_pairs[:, step] = pair
        else:
            _write_back(out, pairs, iterations, index, flat, run_pairs, steps)
        self.last_pairs = pairs
        return out.view_as(x), iterations


def _write_back(out, pairs, iterations, index, flat, run_pairs, steps: int) -> None:
    """The running images' rows `index` of the results: their images, their pairs, `steps` steps taken."""
    out.index_copy_(0, index, flat)
    pairs.index_copy_(0, index, run_pairs)
    iterations.index_fill_(0, index, steps)
