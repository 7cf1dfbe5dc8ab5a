"""Virtual adversarial training (Miyato, Maeda, Koyama, Ishii, 2018): the local distributional smoothness loss.

For images x and the model's predictive distribution p(. | x):

    d ~ N(0, I), normalised;  g = grad_r KL(p(x) || p(x + r)) at r = xi * d   (one power iteration)
    r_adv = eps * g / ||g||_2                                                 (per sample, over all features)
    LDS(x) = KL(p(x) || p(x + r_adv)),   loss = CE(model(x), y) + alpha * LDS(x),   p(x) detached.

The power iteration runs in float32 (float64 for a float64 model) with autocast off (xi = 1e-6 vanishes in half
precision; a model whose parameters are half precision is refused) and with the model in eval mode (dropout would
swamp a 1e-6 perturbation); the two forwards of the loss run in the model's own mode, and where its batch norms
train, the perturbed one without updating their running statistics. The paper's offline variant adds x + r_adv,
computed once from a model trained beforehand without defense and clipped to [0, 1], to the training set with the
true labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_nonnegative, check_positive, parameter_dtype
from .._modes import with_autograd
from ..attacks import model_guard
from ._halves import clean_and_perturbed_logits


def _unit(v: torch.Tensor) -> torch.Tensor:
    """v / ||v||_2 per sample, scaled by its largest entry first so that tiny gradients do not underflow; a
    sample whose v is all zero stays zero."""
    flat = v.flatten(1)
    peak = flat.abs().amax(1, keepdim=True)
    flat = flat / torch.where(peak > 0, peak, torch.ones_like(peak))
    norm = flat.norm(dim=1, keepdim=True)
    return (flat / torch.where(norm > 0, norm, torch.ones_like(norm))).view_as(v)


def _kl(log_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per sample from log p (B, K) and the logits of q, in log p's dtype (float32 or float64)."""
    return F.kl_div(F.log_softmax(logits_q.to(log_p.dtype), dim=1), log_p, log_target=True, reduction="none").sum(1)


def _working_dtype(model: nn.Module, x: torch.Tensor) -> torch.dtype:
    """float64 for a float64 model (or, with no parameters, float64 images), else float32; ValueError naming
    `model` where its parameters are half precision, in which xi vanishes."""
    dtype = parameter_dtype(model)
    if dtype is None:
        return torch.float64 if x.dtype == torch.float64 else torch.float32
    if dtype in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"model: its parameters are {dtype}; VAT's power iteration (xi = 1e-6) needs float32 or float64: train "
            "a float32 model, with amp for mixed precision"
        )
    return torch.float64 if dtype == torch.float64 else torch.float32


@with_autograd
def vat_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float = 2.1,
    xi: float = 1e-6,
    power_iterations: int = 1,
    logits: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The virtual adversarial perturbation r_adv of images x (B, ...): float32 (float64 for a float64 model), L2
    norm `eps` per sample.

    Args:
        model: maps images to logits; put in eval mode (and its parameters' requires_grad off) meanwhile.
        x: (B, ...) float images in the model's input units (pixels in [0, 1] for the paper's models).
        eps: the L2 norm of r_adv, in x's units (the paper: 2.1 on MNIST's 784 pixels in [0, 1]).
        xi: the L2 length of the power iteration's finite-difference step, in x's units (1e-6).
        power_iterations: refinements of the direction (1).
        logits: model(x) in eval mode if already at hand, else computed.
        generator: draws the random start d.
    """
    eps = check_nonnegative(eps, "eps")
    xi = check_positive(xi, "xi")
    power_iterations = check_int(power_iterations, "power_iterations", low=1)
    x = x.detach().to(_working_dtype(model, x))
    with model_guard(model), torch.autocast(x.device.type, enabled=False):
        with torch.no_grad():
            log_p = F.log_softmax((model(x) if logits is None else logits).to(x.dtype), dim=1)
        d = _unit(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
        for _ in range(power_iterations):
            r = (xi * d).requires_grad_(True)
            (g,) = torch.autograd.grad(_kl(log_p, model(x + r)).sum(), r)
            g = _unit(g)
            d = torch.where(g.flatten(1).any(1).view(-1, *[1] * (x.dim() - 1)), g, d)
    return eps * d


def vat_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 2.1,
    xi: float = 1e-6,
    alpha: float = 1.0,
    power_iterations: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CE(model(x), y) + alpha * LDS(x): the supervised VAT loss (one forward over x and x + r_adv; two where the
    model's batch norms train, see the module's docstring), a scalar: the batch's mean.

    Args:
        model, x, eps, xi, power_iterations, generator: as for :func:`vat_perturbation` (x: (B, ...) images).
        y: (B,) int64 class labels.
        alpha: the weight of the LDS term, >= 0 (1).
    """
    alpha = check_nonnegative(alpha, "alpha")
    r_adv = vat_perturbation(model, x, eps=eps, xi=xi, power_iterations=power_iterations, generator=generator)
    logits_clean, logits_adv = clean_and_perturbed_logits(model, x, x + r_adv.to(x.dtype))
    work = r_adv.dtype
    kl = _kl(F.log_softmax(logits_clean.detach().to(work), dim=1), logits_adv).mean()
    return F.cross_entropy(logits_clean.to(work), y) + alpha * kl
