"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, 2016): the multi-class linearised minimal perturbation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_int, check_nonnegative
from .base import Attack
from .jacobian import difference_weights, predicts
from .norms import Norm, check_norm, flat_l2_norm, l2_norm
from .precision import model_input_dtype, spacing

# Added to each step's length, as a fraction of the clip range, so that a step lands past the boundary: the paper's
# reference code adds 1e-4 to steps on [0, 1] images.
_STEP_MARGIN = 1e-4


def step_margin(clip: tuple[float, float] | None, dtype: torch.dtype) -> float:
    """The length (pixel units, in the attack's norm) added to each DeepFool step on images of `dtype` inside
    `clip`: _STEP_MARGIN times the clip range (1e-4 on [0, 1], 0.0255 on [0, 255]: the same step relative to the
    images' scale), and at least the spacing of `dtype`'s numbers at the bounds' magnitude (float16's, bfloat16's
    ~1e-3 and ~1e-2 on [0, 1]), so that a step off an exact logit tie is not lost to the images' rounding. Without
    a clip, as on [0, 1]: the paper's 1e-4, at least the spacing at 1."""
    low, high = clip if clip is not None else (0.0, 1.0)
    return max(_STEP_MARGIN * (high - low), spacing(max(abs(low), abs(high)), dtype))


class DeepFool(Attack):
    """DeepFool, untargeted, L2 (or Linf), batched: every image still on its label takes a step at once.

    At the iterate x_i of an image with label y, each candidate class k != y gives the linearised boundary
    f_k - f_y = 0, with w_k = grad(f_k - f_y) and the distance |f_k - f_y| / ||w_k|| (the dual norm: L2 for
    "2", L1 for "inf"). The nearest boundary l gives the step r_i = (d_l + m) * w_l / ||w_l||_2 (L2) or
    (d_l + m) * sign(w_l) (Linf), summed into r; the next iterate is clip(x + (1 + overshoot) * r). The margin
    m is 1e-4 of the clip range (the paper's 1e-4 on [0, 1] images; 0.0255 on [0, 255]), and at least the spacing
    at the clip bounds of the dtype the model sees x in, x's or under torch.autocast autocast's (:func:`step_margin`:
    in float16 and bfloat16 a smaller one is lost to rounding, and an image on an exact tie never crosses). An image
    stops as soon as its prediction leaves y, after max_iter steps, or after a step of 0 (no gradient towards any
    boundary: every later step would be 0). Images the model already misclassifies are returned unchanged after 0
    iterations.

    The candidates are y and the `candidates` - 1 other classes with the largest logits on x. The gradients
    of all candidates come from one forward pass per iteration and its batched vector-Jacobian products
    (:mod:`nemesis_fast.attacks.jacobian`), over the images still running only.

    Args:
        model: maps (B, ...) images to (B, classes) logits.
        max_iter: the most steps per image, >= 0.
        overshoot: >= 0; the final perturbation is (1 + overshoot) times the accumulated one (1 + overshoot at
            most the largest float32, the dtype of the steps; float64 for float64 images).
        candidates: the number of classes considered, >= 2 (capped at the model's class count).
        norm: "2" or "inf".
        clip: as for :class:`~nemesis_fast.attacks.Attack`. DeepFool is untargeted only.
    """

    supports_targeted = False
    step_sizes = {"overshoot": 1.0}  # the factor 1 + overshoot

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        max_iter: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        *,
        norm: Norm = "2",
        clip: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(model, clip=clip)
        self.max_iter = check_int(max_iter, "max_iter", low=0)
        self.overshoot = check_nonnegative(overshoot, "overshoot")
        self.candidates = check_int(candidates, "candidates", low=2)
        self.norm = check_norm(norm)

    def step_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The steps add up in float32 at least (float64 for float64 images)."""
        return torch.promote_types(dtype, torch.float32)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor, target: None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(x)
        k = min(self.candidates, logits.shape[1])
        others = logits.scatter(1, y[:, None], -torch.inf).topk(k - 1, dim=1).indices
        classes = torch.cat([y[:, None], others], dim=1)  # (B, k): y, then the k - 1 largest other logits
        weights = difference_weights(y, others, logits.shape[1])  # (k - 1, B, C)
        active = logits.argmax(1) == y
        # The steps add up in float32 at least (the model sees its images in x's dtype): in float16 a step near a
        # tie (its length about the margin) would be lost to rounding at every iteration, leaving the image where it
        # was until max_iter; the margin itself is at least the spacing of the dtype the model sees x in (x's, or
        # autocast's), so that the sum moves the image the model sees.
        precise = self.step_dtype(x.dtype)
        margin = step_margin(self.clip, model_input_dtype(x))
        r_total = torch.zeros_like(x, dtype=precise)
        x_adv = x.clone()
        iterations = torch.zeros_like(y)
        index = active.nonzero().squeeze(1)
        if self.max_iter and index.numel():
            logits_i, w = self.logit_gradients(x[index], weights[:, index])
        for step in range(self.max_iter):
            if index.numel() == 0:
                break
            classes_i = classes[index]
            # w: the K-1 gradients of f_k - f_y, for the candidates k after y, at the images still running.
            f = (logits_i.gather(1, classes_i[:, 1:]) - logits_i.gather(1, classes_i[:, :1])).T  # (k - 1, n)
            w_norm = l2_norm(w, 2) if self.norm == "2" else w.flatten(2).norm(p=1, dim=2)  # (k - 1, n)
            distance = torch.where(w_norm > 0, f.abs() / w_norm, torch.inf)
            nearest = distance.argmin(0)  # (n,)
            rows = torch.arange(index.numel(), device=x.device)
            w_l, d_l = w[nearest, rows].to(precise), distance[nearest, rows].to(precise)
            movable = torch.isfinite(d_l).view(-1, *([1] * (x.dim() - 1)))
            direction = w_l / flat_l2_norm(w_l).clamp_min(torch.finfo(precise).tiny) if self.norm == "2" else w_l.sign()
            length = (d_l + margin).view_as(movable)
            r = torch.where(movable, length * direction, 0.0)
            r_total[index] += r
            x_step = self.project(x[index] + (1 + self.overshoot) * r_total[index]).to(x.dtype)
            # An image whose step is 0 (no gradient towards any boundary) is at a fixed point: every later step
            # would be 0 too. It stops. (One whose image did not change may still move: r_total adds up steps
            # below the spacing of x's dtype.)
            moved = (r != 0).flatten(1).any(1)
            x_adv[index] = x_step
            iterations[index] += 1
            if step == self.max_iter - 1:
                break
            running = predicts(y[index])
            logits_i, _, still, w = self.logit_gradients_of_kept(
                x_step, weights[:, index], lambda logits, running=running, moved=moved: running(logits) & moved
            )
            index, logits_i = index[still], logits_i[still]
        return x_adv, iterations
