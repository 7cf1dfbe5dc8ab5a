"""Gradient attacks, batched on the device of their input: FGSM, R+FGSM, PGD, DeepFool, JSMA and Carlini-Wagner
L2.

Every attack takes a model mapping (B, ...) images to (B, classes) logits; `attack(x, y)` returns the
adversarial images, `attack(x, y, target=t)` runs targeted (DeepFool, untargeted only, raises ValueError), and
`attack.run(x, y)` returns an :class:`AttackResult` (images, success mask, predictions, L0/L2/Linf norms,
iterations, and a targeted run's targets). See :mod:`.base` for writing one.
"""

from .base import Attack, AttackResult, model_guard
from .carlini_wagner import CarliniWagnerL2
from .deepfool import DeepFool
from .fgsm import FGSM, RandFGSM
from .jsma import JSMA
from .norms import perturbation_norms
from .pgd import PGD

__all__ = [
    "FGSM",
    "JSMA",
    "PGD",
    "Attack",
    "AttackResult",
    "CarliniWagnerL2",
    "DeepFool",
    "RandFGSM",
    "model_guard",
    "perturbation_norms",
]
