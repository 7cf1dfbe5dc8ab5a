"""What the torchattacks adapters share: a call that gives back what it changes, the inputs as torchattacks'
forward methods prepare them, and the sign-gradient step of FGSM, PGD and RFGSM."""

from __future__ import annotations

import math
import warnings
from numbers import Real

import torch
import torch.nn.functional as F

from ..._checks import check_finite_values
from ..._modes import kept_modes
from .._peer import PeerFallbackWarning


class GivesBackState:
    """torchattacks' `Attack.__call__`, with the model's modes (each submodule's) and the attack's record of
    normalisation given back however the call ends. torchattacks' own call restores neither when the attack
    raises (a KeyboardInterrupt too): the model stays in eval mode, and after a call with set_normalization_used
    every later call would take normalised images for raw ones. On success it puts a model given in train mode
    back with model.train(), whatever its submodules' modes were; this gives each its own back. Images with NaN or
    inf and NaN settings (`real_settings`) are refused, naming them, where torchattacks runs them into NaN images."""

    real_settings: tuple[str, ...] = ()  # refused at a call when NaN

    def __call__(self, inputs, labels=None, *args, **kwargs):
        for name in self.real_settings:  # torchattacks checks none: a NaN setting gave NaN images
            value = getattr(self, name)
            if isinstance(value, Real) and math.isnan(value):
                raise ValueError(f"{name} must be a number, got {value}")
        if isinstance(inputs, torch.Tensor):  # torchattacks' range check lets NaN through, into NaN images
            check_finite_values(inputs, "inputs")
        normalization_applied = self._normalization_applied
        with kept_modes(self.model):
            try:
                return super().__call__(inputs, labels, *args, **kwargs)
            finally:
                self._set_normalization_applied(normalization_applied)


def prepare(
    attack, images: torch.Tensor, labels: torch.Tensor, *, probabilities: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, wanted): copies on the attack's device and the labels the loss aims at, the targets in a
    targeted mode (drawn first, as torchattacks draws them, so random modes consume the generator alike) or the
    labels. `probabilities`: the attack's loss is torchattacks' cross-entropy, which also takes float (N, classes)
    labels as class probabilities (one-hot, smoothed); they are kept as such. Other labels: see
    :func:`class_indices`."""
    images = images.clone().detach().to(attack.device)
    labels = checked_labels(labels, len(images), probabilities).clone().detach().to(attack.device)
    if labels.dim() == 1:
        labels = class_indices(labels)
    wanted = attack.get_target_label(images, labels) if attack.targeted else labels
    return images, labels, wanted


def checked_labels(labels: object, images: int, probabilities: bool = False) -> torch.Tensor:
    """`labels` if it holds one label per image: (N,), or (N, 1) as torchattacks' DeepFool and JSMA take them
    (flattened to (N,) here), or, with `probabilities`, float (N, classes). TypeError or ValueError naming `labels`
    otherwise, where torchattacks fails later with an unrelated error (one-hot labels in its DeepFool: an
    ambiguous-value error), and a drop-in that flattens them would read N x classes values as class indices."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices (N,), got {type(labels).__name__}")
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.dim() == 2 and probabilities and labels.is_floating_point():
        if len(labels) != images:
            raise ValueError(f"labels must hold one row per image: {images} images, got {len(labels)} rows")
        return labels
    if labels.dim() != 1 or len(labels) != images:
        kinds = "class indices (N,) or (N, 1)"
        if probabilities:
            kinds += ", or float class probabilities (N, classes)"
        raise ValueError(f"labels must be {kinds} for the N = {images} images, got shape {tuple(labels.shape)}")
    return labels


def class_indices(labels: torch.Tensor) -> torch.Tensor:
    """`labels` as int64 class indices: any integer dtype, and floats holding whole numbers (some of torchattacks'
    classes take them); other floats raise TypeError."""
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise TypeError(f"labels must hold class indices; got {labels.dtype} values that are not whole numbers")
    return labels.long()


def check_label_classes(labels: torch.Tensor, classes: int) -> None:
    """ValueError naming labels where a class index (N,) is no class of the model's `classes` logits (torchattacks'
    DeepFool takes such an image for one already fooled and returns it unchanged; its JSMA aims at (label + 1) % 10)."""
    low, high = (int(v) for v in torch.aminmax(labels))
    if low < 0 or high >= classes:
        raise ValueError(f"labels must be classes of the model's {classes} logits; got values in [{low}, {high}]")


def per_image_fallback_reason(model: object) -> str | None:
    """Why torchattacks' own per-image loop must run instead of a batched drop-in, or None: a BatchNorm layer of
    `model` in training mode (a module whose class name holds "BatchNorm", torchattacks' own test), as
    `set_model_training_mode(batchnorm_training=True)` leaves it, makes each image's result depend on the other
    images of the forward pass; a dropout layer in training mode (`dropout_training=True`) draws its masks per
    forward pass, so batching the images draws other masks than the peer's one image at a time."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    if any(m.training and "BatchNorm" in type(m).__name__ for m in modules):
        return (
            "a BatchNorm layer of the model is in training mode, so each image's result depends on the batch it is in"
        )
    if any(m.training and "Dropout" in type(m).__name__ and getattr(m, "p", 1) > 0 for m in modules):
        return "a dropout layer of the model is in training mode, so its masks depend on how the images are batched"
    return None


def warn_per_image_fallback(name: str, reason: str, calls_below_forward: int = 0) -> None:
    """The PeerFallbackWarning of a drop-in that hands a call to torchattacks' own per-image `name` for `reason`
    (:func:`per_image_fallback_reason`), pointing at the user's call of the attack when it comes from `forward` or
    from `calls_below_forward` methods below it."""
    warnings.warn(
        f"{reason}; torchattacks' {name} attacks one image at a time, and runs itself here: its result, at its speed",
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
