"""FGSM adversarial training (Goodfellow, Shlens, Szegedy, 2015), online and offline, and the helper that builds
an offline training set from any per-batch perturbation.

* Online: every batch gets fresh FGSM examples from the model being trained, and the loss mixes the clean and
  the adversarial cross-entropy: weight * CE(x) + (1 - weight) * CE(x_adv).
* Offline (what the paper did): FGSM examples are made once, from a model trained beforehand without defense,
  for every training image, and added to the training set with their true labels; training is then ordinary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_device, check_int, check_number
from ..attacks import FGSM
from ..data.loader import check_images_labels, to_float
from ._halves import clean_and_perturbed_logits


def fgsm_examples(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, clip: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """FGSM images x + eps * sign(grad_x CE(model(x), y)), clipped to `clip` (nemesis_fast.attacks.FGSM): (B, ...)
    of x's shape and dtype, for images x (B, ...) in `clip` and labels y (B,); eps is the Linf step in x's units
    (pixels in [0, 1]: the paper's 0.3 on MNIST)."""
    return FGSM(model, eps, clip=clip)(x, y)


def fgsm_adversarial_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    weight: float = 0.5,
    clip: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """weight * CE(model(x), y) + (1 - weight) * CE(model(x_adv), y), x_adv = FGSM from `model` itself: a scalar,
    each term the batch's mean, for images x (B, ...) in `clip`, labels y (B,) and eps the Linf step in x's units.

    The attack runs with the model in eval mode and without touching its gradients; the two losses come from
    one forward pass over the clean and adversarial halves, or, for a model whose batch norms train, from two, the
    adversarial one without updating their running statistics.
    """
    weight = check_number(weight, "weight", low=0.0, high=1.0)
    x_adv = fgsm_examples(model, x, y, eps, clip=clip)
    logits = torch.cat(clean_and_perturbed_logits(model, x, x_adv))
    clean, adversarial = F.cross_entropy(logits, torch.cat([y, y]), reduction="none").float().chunk(2)
    return weight * clean.mean() + (1.0 - weight) * adversarial.mean()


def offline_examples(
    perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """perturb(x, y) applied to a whole data set in batches: float32 images (N, ...) on `device`.

    `images` are uint8 (converted to [0, 1]) or float; `perturb` maps a float batch and its labels to the
    perturbed batch, e.g. `lambda x, y: fgsm_examples(source, x, y, 0.3)`.
    """
    labels = check_images_labels(images, labels)
    batch_size = check_int(batch_size, "batch_size", low=1)
    device = check_device(device) if device is not None else images.device
    out = torch.empty(images.shape, dtype=torch.float32, device=device)
    for start in range(0, len(labels), batch_size):
        x = to_float(images[start : start + batch_size].to(device))
        out[start : start + batch_size] = perturb(x, labels[start : start + batch_size].to(device))
    return out
