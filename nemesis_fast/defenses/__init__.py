"""The defenses of Zantedeschi et al. (2017) and the baselines they were compared with, each usable on its own
and as a training recipe (:mod:`.recipes`)."""

from .adversarial_training import fgsm_adversarial_loss, fgsm_examples, offline_examples
from .feature_squeezing import PAPER_BIT_DEPTH, FeatureSqueezing, median_smooth, reduce_bit_depth
from .gaussian_augmentation import FixedNoisyCopies, GaussianAugmentation, augment_batches
from .label_smoothing import label_smoothing_loss, smooth_labels
from .recipes import RECIPES, Recipe, make_recipe, paper_settings
from .vat import vat_loss, vat_perturbation

__all__ = [
    "PAPER_BIT_DEPTH",
    "RECIPES",
    "FeatureSqueezing",
    "FixedNoisyCopies",
    "GaussianAugmentation",
    "Recipe",
    "augment_batches",
    "fgsm_adversarial_loss",
    "fgsm_examples",
    "label_smoothing_loss",
    "make_recipe",
    "median_smooth",
    "offline_examples",
    "paper_settings",
    "reduce_bit_depth",
    "smooth_labels",
    "vat_loss",
    "vat_perturbation",
]
