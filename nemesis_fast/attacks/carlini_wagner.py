"""The Carlini-Wagner L2 attack (Carlini and Wagner, "Towards Evaluating the Robustness of Neural Networks",
2017), with its binary search over the constant c run per image inside the batch."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._checks import check_bool, check_int, check_nonnegative, check_positive
from .base import Attack, Seed
from .jacobian import NO_GRADIENT_PATH

_UNBOUNDED = 1e10  # the upper bound of c before the first success
_TANH_SCALE = 1 - 1e-6  # keeps atanh finite for pixels on the clip bounds
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2: minimise ||x' - x||_2^2 / (high - low)^2 + c * f(x') over w, with x' = low + (high - low) *
    (tanh(w) + 1) / 2 inside `clip`, by Adam; f(x') = max(Z_y - max_{i != y} Z_i + confidence, 0) untargeted,
    max(max_{i != t} Z_i - Z_t + confidence, 0) targeted, on the logits Z (never negative, so that the loss
    test of `abort_early` can fire whatever the confidence). The distance is taken in units of the clip range, so
    that c weighs it alike on [0, 1] and [0, 255] images (on [0, 1], the paper's objective); the L2 norms reported
    are in pixel units. Without a clip (None), Adam optimises the images themselves (x' = w, from w = x), and the
    distance is in their units.

    Each image has its own c: it starts at `initial_const`; after each of the `binary_search_steps` runs of at most
    `max_iter` Adam steps (from w = atanh of x, or x without a clip, with fresh Adam state), an image that found an
    adversarial (by the `confidence` margin) lowers its upper bound to c, the others raise their lower
    bound to c; c becomes the midpoint of the bounds, or 10 c while no upper bound has been found. With
    ten or more binary steps, the last one runs at the upper bound. With `abort_early`, an image's run stops
    when its loss has not fallen by 0.01% over max_iter // 10 steps. Every image keeps the smallest-L2
    adversarial found over all steps; an image with none is returned unchanged, and one already adversarial
    at x (by the margin) after 0 iterations.

    Args:
        model: maps (B, ...) images to (B, classes) logits.
        confidence: the margin kappa >= 0 in logits.
        initial_const: the first c, > 0 and below 1e9 (the search's bound on c is 1e10).
        binary_search_steps: the number of runs with different c, >= 1.
        max_iter: the most Adam steps per run, >= 0.
        learning_rate: Adam's step size, > 0; Adam's first step puts 1 / (1 - beta1) = 10 times it on w, which must
            be a number of float32 (float64 for float64 images): a ValueError at the call otherwise.
        abort_early: stop an image's run when its loss stalls.
        clip, targeted, seed: as for :class:`~nemesis_fast.attacks.Attack` (the seed only draws targets).
    """

    step_sizes = {"learning_rate": 1 / (1 - _ADAM_BETAS[0])}  # Adam's bias correction at its first step

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        confidence: float = 0.0,
        initial_const: float = 1e-3,
        binary_search_steps: int = 9,
        max_iter: int = 1000,
        learning_rate: float = 0.01,
        abort_early: bool = True,
        *,
        clip: tuple[float, float] | None = (0.0, 1.0),
        targeted: bool = False,
        seed: Seed = None,
    ) -> None:
        super().__init__(model, clip=clip, targeted=targeted, seed=seed)
        self.confidence = check_nonnegative(confidence, "confidence")
        self.initial_const = check_positive(initial_const, "initial_const")
        if self.initial_const >= _UNBOUNDED / 10:
            raise ValueError(f"initial_const must be < {_UNBOUNDED / 10:g}, got {self.initial_const:g}")
        self.binary_search_steps = check_int(binary_search_steps, "binary_search_steps", low=1)
        self.max_iter = check_int(max_iter, "max_iter", low=0)
        self.learning_rate = check_positive(learning_rate, "learning_rate")
        check_bool(abort_early, "abort_early")
        self.abort_early = abort_early
        self._model_dtype = torch.float32  # the dtype of the images the model takes: x's, set by each call

    def step_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The optimisation runs in float32 at least (float64 for float64 images)."""
        return torch.promote_types(dtype, torch.float32)

    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        # Images adversarial at x already have the smallest perturbation there is: they take no step.
        todo = ~self.is_adversarial(self.logits(x), y, target, self.confidence)
        # The optimisation runs in float32 at least (the model sees its images in x's dtype): in float16 the tanh
        # change of variable would put the pixels on the clip bounds at infinity, and c's bound overflows.
        self._model_dtype, x = x.dtype, x.to(self.step_dtype(x.dtype))
        w_start = self._variable_of(x)
        labels = y if target is None else target
        best_l2 = torch.full((batch,), math.inf, dtype=x.dtype, device=x.device)
        best_adv = x.clone()
        iterations = torch.zeros_like(y)
        const = torch.full((batch,), self.initial_const, dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, _UNBOUNDED)
        best_l2.masked_fill_(~todo, 0)  # not best_l2[~todo] = 0: a mask index synchronises with the host on a GPU
        index = todo.nonzero().squeeze(1)
        if index.numel() == 0:
            return best_adv, iterations
        for step in range(self.binary_search_steps):
            if self.binary_search_steps >= 10 and step == self.binary_search_steps - 1:
                const = torch.where(upper < _UNBOUNDED, upper, const)
            found = self._optimise(x, w_start, labels, y, target, const, index, best_l2, best_adv, iterations)
            # The binary search over c, per image.
            lower = torch.where(found, lower, torch.maximum(lower, const))
            upper = torch.where(found, torch.minimum(upper, const), upper)
            const = torch.where(upper < _UNBOUNDED / 10, (lower + upper) / 2, const * 10)
        return best_adv, iterations

    def _variable_of(self, x: torch.Tensor) -> torch.Tensor:
        """The variable w that Adam optimises, at images x: atanh of x scaled to [-1, 1] in `clip`; without a clip,
        the images themselves."""
        if self.clip is None:
            return x.clone()
        low, high = self.clip
        return torch.atanh(((x - low) / ((high - low) / 2) - 1) * _TANH_SCALE)

    def _image_of(self, w: torch.Tensor) -> torch.Tensor:
        """The images of variables w: low + (high - low) * (tanh(w) + 1) / 2, inside `clip`; w without one."""
        if self.clip is None:
            return w
        low, high = self.clip
        half_range = (high - low) / 2
        return torch.tanh(w) * half_range + (low + half_range)

    def _optimise(
        self,
        x: torch.Tensor,
        w_start: torch.Tensor,
        labels: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        const: torch.Tensor,
        index: torch.Tensor,
        best_l2: torch.Tensor,
        best_adv: torch.Tensor,
        iterations: torch.Tensor,
    ) -> torch.Tensor:
        """One run of Adam at fixed c for the images `index`; updates best_l2, best_adv and iterations in
        place and returns a (B,) mask of the images that found an adversarial in this run."""
        span = 1.0 if self.clip is None else self.clip[1] - self.clip[0]
        found = torch.zeros_like(y, dtype=torch.bool)
        # The state of the images still running, compacted; written back when images leave and at the end.
        run = _Run(index, x, labels, y, target, const, best_l2, best_adv, w_start)
        m, v = torch.zeros_like(run.w), torch.zeros_like(run.w)
        prev = torch.full((index.numel(),), math.inf, dtype=x.dtype, device=x.device)
        check_every = self.max_iter // 10 if self.abort_early else 0
        beta1, beta2 = _ADAM_BETAS
        unit = (-1, *([1] * (x.dim() - 1)))
        written = 0  # the iterations already added to `iterations` for the running images

        def loss_fn(w_leaf: torch.Tensor) -> tuple[torch.Tensor, ...]:
            image = self._image_of(w_leaf)
            logits = self.logits(image.to(self._model_dtype))
            if not logits.requires_grad:  # the loss would still have a gradient, through its L2 term alone
                raise ValueError(NO_GRADIENT_PATH)
            delta = (image - run.x).flatten(1)
            l2_sq = delta.square().sum(1)
            distance = l2_sq if span == 1 else (delta / span).square().sum(1)
            wanted = logits.gather(1, run.labels[:, None]).squeeze(1)
            other = logits.scatter(1, run.labels[:, None], -math.inf).amax(1)
            margin = wanted - other if target is None else other - wanted
            return distance + run.const * (margin + self.confidence).clamp_min(0), image, logits, l2_sq

        for it in range(self.max_iter):
            grad, (loss, image, logits, l2_sq) = self.input_gradient(run.w, loss_fn)
            success = self.is_adversarial(logits, run.y, run.target, self.confidence)
            run.found |= success
            better = success & (l2_sq < run.best_l2)
            run.best_l2 = torch.where(better, l2_sq, run.best_l2)
            run.best_adv = torch.where(better.view(unit), image, run.best_adv)
            # Adam, as torch.optim.Adam computes it, element by element.
            t = it + 1
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(_ADAM_EPS)
            run.w = run.w.addcdiv(m, denom, value=-self.learning_rate / (1 - beta1**t))
            if check_every and it % check_every == 0:
                keep = loss <= prev * 0.9999
                prev = loss
                if not bool(keep.all()):
                    run.write_back(found, best_l2, best_adv, iterations, t - written)
                    written = t
                    rows = keep.nonzero().squeeze(1)  # one synchronisation for all the state below
                    run.keep(rows)
                    m, v, prev = m[rows], v[rows], prev[rows]
                    if run.index.numel() == 0:
                        return found
        run.write_back(found, best_l2, best_adv, iterations, self.max_iter - written)
        return found


class _Run:
    """The per-image state of one C&W run, for the images `index` still optimising."""

    def __init__(self, index, x, labels, y, target, const, best_l2, best_adv, w_start) -> None:
        self.index = index
        self.x, self.labels, self.y, self.const = x[index], labels[index], y[index], const[index]
        self.target = None if target is None else target[index]
        self.best_l2, self.best_adv, self.w = best_l2[index], best_adv[index], w_start[index]
        self.found = torch.zeros_like(self.y, dtype=torch.bool)

    def keep(self, rows: torch.Tensor) -> None:
        """Keeps the images at positions `rows` (int64) of the running ones."""
        for name in ("index", "x", "labels", "y", "const", "target", "best_l2", "best_adv", "w", "found"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[rows])

    def write_back(self, found, best_l2, best_adv, iterations, steps: int) -> None:
        found[self.index] = self.found
        best_l2[self.index] = self.best_l2
        best_adv[self.index] = self.best_adv
        iterations[self.index] += steps
