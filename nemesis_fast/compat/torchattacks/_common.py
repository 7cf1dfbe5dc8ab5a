"""What the torchattacks adapters share: a call that gives back what it changes, the inputs as torchattacks'
forward methods prepare them, and the sign-gradient step of FGSM, PGD and RFGSM."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..._modes import kept_modes
from .._peer import PeerFallbackWarning


class GivesBackState:
    """torchattacks' `Attack.__call__`, with the model's modes (each submodule's) and the attack's record of
    normalisation given back however the call ends. torchattacks' own call restores neither when the attack
    raises (a KeyboardInterrupt too): the model stays in eval mode, and after a call with set_normalization_used
    every later call would take normalised images for raw ones. On success it puts a model given in train mode
    back with model.train(), whatever its submodules' modes were; this gives each its own back."""

    def __call__(self, inputs, labels=None, *args, **kwargs):
        normalization_applied = self._normalization_applied
        with kept_modes(self.model):
            try:
                return super().__call__(inputs, labels, *args, **kwargs)
            finally:
                self._set_normalization_applied(normalization_applied)


def prepare(attack, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, wanted): copies on the attack's device and the labels the loss aims at, the targets in a
    targeted mode (drawn first, as torchattacks draws them, so random modes consume the generator alike) or the
    labels."""
    images = images.clone().detach().to(attack.device)
    labels = class_indices(labels.clone().detach().to(attack.device))
    wanted = attack.get_target_label(images, labels) if attack.targeted else labels
    return images, labels, wanted


def class_indices(labels: torch.Tensor) -> torch.Tensor:
    """`labels` as int64 class indices: any integer dtype, and floats holding whole numbers (some of torchattacks'
    classes take them); other floats raise TypeError."""
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise TypeError(f"labels must hold class indices; got {labels.dtype} values that are not whole numbers")
    return labels.long()


def batch_statistics_in_training(model: object) -> bool:
    """Whether a BatchNorm layer of `model` (a module whose class name holds "BatchNorm", torchattacks' own test) is
    in training mode, as torchattacks' `set_model_training_mode(batchnorm_training=True)` leaves it: its output then
    depends on the other images of the forward pass, so a batched drop-in cannot give a per-image peer's result."""
    modules = model.modules() if isinstance(model, torch.nn.Module) else ()
    return any(m.training and "BatchNorm" in type(m).__name__ for m in modules)


def warn_per_image_fallback(name: str, calls_below_forward: int = 0) -> None:
    """The PeerFallbackWarning of a drop-in that hands a call to torchattacks' own per-image `name`, pointing at the
    user's call of the attack when it comes from `forward` or from `calls_below_forward` methods below it."""
    warnings.warn(
        f"a BatchNorm layer of the model is in training mode, so each image's result depends on the batch it is "
        f"in; torchattacks' {name} attacks one image at a time, and runs itself here: its result, at its speed",
        PeerFallbackWarning,
        stacklevel=4 + calls_below_forward,  # this function, the drop-in's forward, torchattacks' __call__, the user
    )


def ascent_sign(attack, x: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """The sign of torchattacks' step: of the gradient of the mean cross-entropy of `wanted` (untargeted), or of
    minus it (targeted)."""
    leaf = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(attack.get_logits(leaf), wanted), leaf)
    return grad.sign_().neg_() if attack.targeted else grad.sign_()


def projected_steps(
    attack, images: torch.Tensor, start: torch.Tensor, wanted: torch.Tensor, alpha: float, eps: float, steps: int
) -> torch.Tensor:
    """`steps` sign steps of size `alpha` from `start`, each followed by torchattacks' projection: the change from
    `images` clamped to [-eps, eps], then the image to [0, 1] (the arithmetic of torchattacks' PGD and RFGSM)."""
    adv = start
    for _ in range(steps):
        adv = torch.add(adv, ascent_sign(attack, adv, wanted), alpha=alpha)  # alpha * sign is exact: no rounding
        delta = torch.clamp(adv - images, min=-eps, max=eps)
        adv = torch.clamp(images + delta, min=0, max=1)
    return adv
