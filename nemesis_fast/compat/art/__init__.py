"""Drop-in replacements for ART 1.20 (adversarial-robustness-toolbox): change the import line, e.g.
``from art.attacks.evasion import DeepFool`` to ``from nemesis_fast.compat.art import DeepFool``, and keep the rest.

Each class is a subclass of ART's class of the same name, with its constructor, arguments, defaults,
``set_params`` and checks; the attacks take a ``PyTorchClassifier`` and return numpy float32 arrays, read ``y`` as
ART does (indices, one-hot, or None for the model's predictions), work in chunks of ``batch_size``, and honour the
classifier's ``clip_values`` and PyTorch ``preprocessing`` (mean/std and other PyTorch preprocessors), on the
classifier's device, in torch from end to end.

Same algorithm as ART's, so the same images up to floating-point rounding: ``FastGradientMethod``,
``ProjectedGradientDescent``, ``BasicIterativeMethod``, ``DeepFool`` (ART's variant: one global candidate set, the
step scaled by the clip range, the overshoot applied once at the end) and ``SaliencyMapMethod`` (ART's variant: the
two features with the largest target gradient). ``CarliniL2Method`` runs ART's own line-search algorithm unless
``algorithm="paper"`` asks for nemesis_fast's batched Carlini-Wagner (Adam, per-image binary search), which gives
other images; ``DeepFool`` and ``SaliencyMapMethod`` take ``algorithm="paper"`` too (the paper's DeepFool and
pair-wise JSMA).
``GaussianAugmentation`` is a PyTorch preprocessor (noise drawn on the device by the fused op), so a
``PyTorchClassifier`` using it keeps ART's all-PyTorch path; so is ``FeatureSqueezing`` (ART's arithmetic in the
images' dtype, where ART's numpy code under numpy 2 hands a float32 model float64 images).
``PyTorchRandomizedSmoothing`` (ART's estimator, ``from art.estimators.certification.randomized_smoothing import
...``) certifies and predicts on the device, images and noise draws batched together (ART's algorithm; the noise
from torch's generator, not numpy's).

A call the adapters cannot serve (another estimator than ``PyTorchClassifier``, or a subclass of it with its own
``predict`` or gradients such as ART's randomized smoothing estimators, a non-PyTorch preprocessing step,
per-feature clip values, a loss other than cross-entropy for FGM/PGD, postprocessing defences where the attack
reads the classifier's predictions, an option such as ``mask`` or ``minimal``) runs ART's own implementation after
a :class:`PeerFallbackWarning`: ART's result at ART's speed, never a different answer.
"""

from __future__ import annotations

from .._peer import PeerFallbackWarning, import_peer

# 1.17 and earlier differ: ART 1.18.0 changed FGM's and PGD's norm-1 and norm-2 steps and PGD's momentum.
import_peer("art", "adversarial-robustness-toolbox", ("1.18", "1.19", "1.20"), "nemesis_fast.compat.art")

from ._carlini import CarliniL2Method  # noqa: E402
from ._deepfool import DeepFool  # noqa: E402
from ._gaussian import GaussianAugmentation  # noqa: E402
from ._gradient import BasicIterativeMethod, FastGradientMethod, ProjectedGradientDescent  # noqa: E402
from ._saliency import SaliencyMapMethod  # noqa: E402
from ._smoothing import PyTorchRandomizedSmoothing  # noqa: E402
from ._squeezing import FeatureSqueezing  # noqa: E402

__all__ = [
    "BasicIterativeMethod",
    "CarliniL2Method",
    "DeepFool",
    "FastGradientMethod",
    "FeatureSqueezing",
    "GaussianAugmentation",
    "PeerFallbackWarning",
    "ProjectedGradientDescent",
    "PyTorchRandomizedSmoothing",
    "SaliencyMapMethod",
]
