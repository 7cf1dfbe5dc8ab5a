"""Drop-in replacements for torchattacks 3.5: change ``import torchattacks`` to
``from nemesis_fast.compat import torchattacks`` (or import the classes from here) and keep the rest of the code.

Each class is a subclass of torchattacks' class of the same name (so of ``torchattacks.Attack``), with its
constructor, arguments and defaults: the mode setters (``set_mode_targeted_by_function``, ``_random``,
``_least_likely``, ``_by_label``, ``set_mode_default``), ``set_normalization_used``, ``set_model_training_mode``,
``MultiAttack`` and the device handling work as they do in torchattacks. Each computes torchattacks' own algorithm
(its RFGSM is iterative, its CW has a fixed c, its DeepFool applies the overshoot at every step, its JSMA has its
own step budget, search domain and default target), so the adversarial images equal torchattacks' up to
floating-point rounding; DeepFool and JSMA run batched (all classes' gradients from one batched backward pass, the
JSMA pair search fused, in O(B n) memory), the others as torchattacks runs them. Where batching would change the
result (a BatchNorm or dropout layer in training mode), DeepFool and JSMA run torchattacks' own per-image loop after a
:class:`PeerFallbackWarning`. Unlike torchattacks, a call gives the model back each submodule's own train/eval mode,
and the attack its record of normalisation, however it ends (:class:`~._common.GivesBackState`).

Other torchattacks names (``MultiAttack``, the attacks not listed here) are re-exported unchanged, so
that ``from nemesis_fast.compat import torchattacks`` can replace ``import torchattacks`` whole.
"""

from __future__ import annotations

from typing import Any

from .._peer import PeerFallbackWarning, import_peer

_torchattacks = import_peer("torchattacks", "torchattacks", ("3.5",), "nemesis_fast.compat.torchattacks")

from ._cw import CW  # noqa: E402
from ._deepfool import DeepFool  # noqa: E402
from ._gradient import FGSM, PGD, RFGSM  # noqa: E402
from ._jsma import JSMA  # noqa: E402

MultiAttack = _torchattacks.MultiAttack
__version__ = _torchattacks.__version__

__all__ = ["CW", "FGSM", "JSMA", "PGD", "RFGSM", "DeepFool", "MultiAttack", "PeerFallbackWarning"]


def __getattr__(name: str) -> Any:
    """Any other torchattacks name, unchanged (torchattacks' own implementation)."""
    try:
        return getattr(_torchattacks, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
