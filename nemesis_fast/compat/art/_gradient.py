"""ART's FastGradientMethod and ProjectedGradientDescent (the paper's algorithms), in torch on the classifier's
device: the same steps, random starts (ART's own ``random_sphere``, so numpy's generator draws the same numbers),
projections and chunks of ``batch_size`` as ART 1.20, with input-only gradients (ART's loss gradient also computes
the weights' gradients) and no host round trips between steps."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.attacks import evasion
from art.config import ART_NUMPY_DTYPE
from art.utils import random_sphere

from ._classifier import CheckedParameters, TorchClassifier, batches, fall_back, option_unserved, unserved

_INF = (np.inf, "inf")
_NORMS = (*_INF, 1, 2)


def _unserved(
    attack: Any, x: np.ndarray, kwargs: dict[str, Any], *, reads_predictions: bool, **options: bool
) -> str | None:
    """The reasons FGM and PGD share for running ART's own implementation. `reads_predictions`: ART's algorithm
    reads the classifier's predict() for this call (its labels when y is None, PGD's judging of restarts), which
    the classifier's postprocessing defences change."""
    return unserved(attack.estimator, cross_entropy=True, postprocessing=reads_predictions) or option_unserved(
        x,
        kwargs,
        **options,
        **{
            f"norm={attack.norm!r}": attack.norm not in _NORMS,
            "an array eps or eps_step": isinstance(attack.eps, np.ndarray) or isinstance(attack.eps_step, np.ndarray),
            "summary_writer": attack.summary_writer is not None,
        },
    )


def direction(grad: torch.Tensor, norm: Any, *, reciprocal: bool) -> torch.Tensor:
    """ART's step direction: the x maximising <grad, x> over the unit ball of `norm` (inf: sign(grad); 1: the sign
    at the largest |grad|; 2: grad / ||grad||), with ART's arithmetic (`reciprocal`: multiply by 1 / ||grad||, as
    its PyTorch PGD does; else divide, as its numpy FGM does)."""
    flat = grad.flatten(1)
    if norm in _INF:
        unit = torch.ones_like(flat)
    elif norm == 1:
        unit = torch.zeros_like(flat)
        unit[torch.arange(len(flat), device=flat.device), flat.abs().argmax(1)] = 1
    else:
        length = torch.linalg.vector_norm(flat, 2, dim=1, keepdim=True)
        if reciprocal:
            unit = flat.abs() * torch.where(length == 0, length, 1 / length)
        else:
            unit = flat.abs() / torch.where(length != 0, length, torch.inf)
    return unit.view_as(grad) * grad.sign()


def projection(delta: torch.Tensor, eps: float, norm: Any) -> torch.Tensor:
    """ART's projection of `delta` onto the eps-ball: sign(d) min(|d|, eps) for inf (exact in float32), and the
    rescaling d min(1, eps / ||d||) for 1 and 2, computed in float64 as ART computes it, then rounded back."""
    if norm in _INF:
        return delta.sign() * torch.minimum(delta.abs(), delta.new_tensor(eps))
    flat = delta.flatten(1)
    length = torch.linalg.vector_norm(flat, float(norm), dim=1, keepdim=True).double()
    scale = torch.where(length == 0, 0.0, torch.clamp(eps / length, max=1.0))
    return (flat.double() * scale).to(delta.dtype).view_as(delta)


def random_start(x: torch.Tensor, eps: float, norm: Any, view: TorchClassifier) -> torch.Tensor:
    """x plus ART's uniform draw in the eps-ball (``art.utils.random_sphere``, numpy's global generator), clipped."""
    noise = random_sphere(x.shape[0], x[0].numel(), eps, norm).reshape(x.shape).astype(ART_NUMPY_DTYPE)
    return view.clamp(x + view.tensor(noise))


def _step(view: TorchClassifier, x: torch.Tensor, perturbation: torch.Tensor, size: float) -> torch.Tensor:
    """ART's step: x + size * perturbation (NaN entries of the step set to 0), clipped."""
    step = size * perturbation
    return view.clamp(x + torch.where(torch.isnan(step), 0.0, step))


def _ascent_gradient(view: TorchClassifier, x: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The loss gradient, negated for targeted attacks, with NaN entries set to 0."""
    grad = view.loss_gradient(x, labels)
    grad = -grad if targeted else grad
    return torch.where(torch.isnan(grad), 0.0, grad)


class FastGradientMethod(CheckedParameters, evasion.FastGradientMethod):
    """art.attacks.evasion.FastGradientMethod with ART's signature, defaults and checks, computed in torch.

    One step of size eps along ART's direction for `norm` (inf, 1 or 2) of the cross-entropy gradient (against it
    when targeted), from x or, with num_random_init=1, from ART's random start, clipped, then projected onto the
    eps-ball around x; y=None takes the model's predictions. Served: a PyTorchClassifier with a cross-entropy loss,
    PyTorch preprocessing and scalar clip values. Anything else (minimal=True, num_random_init > 1, a mask, array
    eps, another norm, a summary writer, postprocessing defences with y=None, which change the predictions ART
    takes as labels) runs ART's own implementation after a PeerFallbackWarning. eps may be infinite, as in ART.
    """

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial examples of `x` (numpy, float32 out) with labels or targets `y` (indices or one-hot)."""
        restarts = {"num_random_init > 1": self.num_random_init > 1}
        reason = _unserved(self, x, kwargs, reads_predictions=y is None, minimal=self.minimal, **restarts)
        if reason is not None:
            return fall_back(self, reason, lambda: super(FastGradientMethod, self).generate(x, y, **kwargs))
        view = TorchClassifier(self.estimator)
        with view.session():
            x_t = view.images(x)
            targets = view.one_hot_labels(x_t, y, self.batch_size, self.targeted)
            if view.nb_classes > 2:
                targets = targets / targets.sum(1, keepdim=True)
            start = random_start(x_t, self.eps, self.norm, view) if self.num_random_init > 0 else x_t
            adv = torch.empty_like(x_t)
            for chunk in batches(len(x_t), self.batch_size):
                labels = self.estimator.reduce_labels(targets[chunk])
                grad = _ascent_gradient(view, start[chunk], labels, self.targeted)
                stepped = _step(view, start[chunk], direction(grad, self.norm, reciprocal=False), self.eps)
                adv[chunk] = x_t[chunk] + projection(stepped - x_t[chunk], self.eps, self.norm)
            return view.numpy(adv)


class ProjectedGradientDescent(CheckedParameters, evasion.ProjectedGradientDescent):
    """art.attacks.evasion.ProjectedGradientDescent with ART's signature, defaults and checks, computed in torch as
    ART's PyTorch implementation computes it.

    Per chunk of batch_size images and per random initialisation: from x (or ART's random start in the eps-ball
    at the first iteration), max_iter steps of size eps_step along ART's direction for `norm` (inf, 1 or 2) of the
    cross-entropy gradient (with momentum when decay is set), each clipped, then projected onto the eps-ball; a
    later initialisation replaces the images it fools. Served: as for :class:`FastGradientMethod`; random_eps,
    a mask, array eps, another norm, a summary writer, or postprocessing defences where ART reads the predictions
    (y=None, or num_random_init > 1, whose restarts ART judges by them), and restarts on a chunk of one image
    (which ART's indexing judges wrongly) run ART's own implementation after a PeerFallbackWarning. eps and eps_step
    may be infinite, as in ART.
    """

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial examples of `x` (numpy, float32 out) with labels or targets `y` (indices or one-hot)."""
        inner = self._attack  # ART keeps the parameters it runs with on its implementation object
        reads_predictions = y is None or inner.num_random_init > 1
        reason = _unserved(inner, x, kwargs, reads_predictions=reads_predictions, random_eps=inner.random_eps)
        if reason is None and inner.num_random_init > 1 and 1 in (len(x) % inner.batch_size, inner.batch_size):
            # ART judges the restarts of a one-image chunk by a one-element torch bool, which numpy takes for the
            # index 0 or 1: a failed restart replaces the kept image, a successful one raises IndexError.
            reason = "num_random_init > 1 with a chunk of one image (ART's own indexing of its restarts there)"
        if reason is not None:
            return fall_back(self, reason, lambda: super(ProjectedGradientDescent, self).generate(x, y, **kwargs))
        view = TorchClassifier(self.estimator)
        with view.session():
            x_t = view.images(x)
            targets = view.one_hot_labels(x_t, y, inner.batch_size, inner.targeted)
            adv = x_t.clone()
            for chunk in batches(len(x_t), inner.batch_size):
                labels = self.estimator.reduce_labels(targets[chunk])
                for restart in range(max(1, inner.num_random_init)):
                    candidate = self._run(view, inner, x_t[chunk], labels)
                    if restart == 0:
                        adv[chunk] = candidate
                        continue
                    with torch.no_grad():
                        predicted = view.logits(candidate).argmax(1)
                        wanted = targets[chunk].argmax(1) if inner.targeted else view.logits(x_t[chunk]).argmax(1)
                    success = predicted == wanted if inner.targeted else predicted != wanted
                    adv[chunk] = torch.where(success.view(-1, *([1] * (x_t.dim() - 1))), candidate, adv[chunk])
            return view.numpy(adv)

    @staticmethod
    def _run(view: TorchClassifier, inner: Any, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One initialisation of ART's PyTorch PGD on one chunk."""
        adv = x
        momentum = torch.zeros_like(x)
        for iteration in range(inner.max_iter):
            if iteration == 0 and inner.num_random_init > 0:
                adv = random_start(x, inner.eps, inner.norm, view)
            grad = _ascent_gradient(view, adv, labels, inner.targeted)
            if inner.decay is not None:
                length = torch.linalg.vector_norm(grad.flatten(1), 1, dim=1, keepdim=True)
                momentum.mul_(inner.decay).add_(
                    (grad.flatten(1) * torch.where(length == 0, length, 1 / length)).view_as(grad)
                )
                grad = momentum
            adv = _step(view, adv, direction(grad, inner.norm, reciprocal=True), float(np.float32(inner.eps_step)))
            adv = projection(adv - x, inner.eps, inner.norm) + x
        return adv


class BasicIterativeMethod(ProjectedGradientDescent, evasion.BasicIterativeMethod):
    """art.attacks.evasion.BasicIterativeMethod (Kurakin et al.'s iterative FGSM) with ART's signature, defaults
    and checks: ART's ProjectedGradientDescent with norm inf and no random start, computed as
    :class:`ProjectedGradientDescent` computes it (the same fallbacks to ART's own implementation)."""
