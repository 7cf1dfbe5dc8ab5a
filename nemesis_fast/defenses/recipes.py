"""Training recipes: each defense of the paper as the per-batch work of a training loop.

A recipe has settings (a frozen dataclass with the paper's defaults, per data set), an optional per-batch
`augment` applied by the loader on the device, a per-batch `loss(model, x, y)`, and, for the offline variants,
`offline_examples(source, x, y)` that builds the extra training images from a model trained beforehand.

=================  =====================================================================================
name               what training does
=================  =====================================================================================
standard           cross-entropy
gda                cross-entropy on each batch plus `copies` Gaussian-noised copies of it (sigma 0.3, 10
                   copies), made on the fly on the device, never stored; or (fixed_set, the seed's authors')
                   one shuffled set of the originals and 10 fixed copies each, drawn on the fly
label_smoothing    cross-entropy against targets with `confidence` (0.9) on the true class
fgsm_adversarial   offline (the paper's): FGSM examples (eps 0.3 on MNIST) of a source model added to the
                   training set; online: fresh FGSM examples of the current model in every batch
vat                online: CE + alpha * LDS (eps 2.1 on MNIST, xi 1e-6, one power iteration); offline (the
                   paper's): x + r_adv of a source model added to the training set
=================  =====================================================================================

BReLU is not a recipe but the model's activation (`activation="brelu"`), with or without GDA; feature
squeezing is not trained but wraps a model at prediction (:class:`FeatureSqueezing`).

The paper gives the MNIST values; the CIFAR-10 defaults of FGSM's eps (8/255) and VAT's eps (2.1, the MNIST
value) are this package's choices, not the paper's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_choice, check_int, check_nonnegative, check_number, check_positive, check_range
from ..data.loader import Expansion
from .adversarial_training import fgsm_adversarial_loss, fgsm_examples
from .label_smoothing import label_smoothing_loss
from .vat import vat_loss, vat_perturbation

DATASETS = ("mnist", "cifar10")
MODES = ("offline", "online")
Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class StandardSettings:
    """Plain cross-entropy: nothing to set."""


# Noisy copies per image in training: a batch of 128 images then holds 128,128 rows, and a fixed set of 60,000
# images 60 million (the paper: 10). More only ends in the allocator's error.
MAX_GDA_COPIES = 1000


@dataclass(frozen=True)
class GDASettings:
    """Gaussian data augmentation: `copies` noisy copies N(x, sigma^2 I) of each image, clipped to `clip` (None:
    not clipped), next to the original (include_original).

    fixed_set False: every batch of B images trains on B * (copies + 1) rows, fresh noise every epoch.
    fixed_set True (the seed paper's authors' way): one set of N * (copies + 1) rows with the same copies every
    epoch, shuffled and batched like any data set (:class:`~nemesis_fast.defenses.FixedNoisyCopies`); it always
    includes the originals.
    """

    sigma: float = 0.3
    copies: int = 10
    include_original: bool = True
    clip: tuple[float, float] | None = (0.0, 1.0)
    fixed_set: bool = False

    def __post_init__(self) -> None:
        check_nonnegative(self.sigma, "sigma")
        object.__setattr__(self, "copies", check_int(self.copies, "copies", low=1, high=MAX_GDA_COPIES))
        if self.clip is not None:
            object.__setattr__(self, "clip", check_range(self.clip, "clip"))
        check_bool(self.fixed_set, "fixed_set")
        check_bool(self.include_original, "include_original")
        if self.fixed_set and not self.include_original:
            raise ValueError("fixed_set=True always includes the originals; leave include_original=True")


@dataclass(frozen=True)
class LabelSmoothingSettings:
    """Soft targets: `confidence` on the true class, the rest spread evenly."""

    confidence: float = 0.9

    def __post_init__(self) -> None:
        check_number(self.confidence, "confidence", low=0.0, high=1.0, low_inclusive=False)


@dataclass(frozen=True)
class FGSMAdversarialSettings:
    """FGSM adversarial training: Linf budget `eps`; mode "offline" (examples of a source model added to the
    training set, the paper's) or "online" (fresh examples every batch, loss weight * CE(x) + (1 - weight) *
    CE(x_adv))."""

    eps: float = 0.3
    mode: str = "offline"
    weight: float = 0.5

    def __post_init__(self) -> None:
        check_nonnegative(self.eps, "eps")
        check_choice(self.mode, "mode", MODES)
        check_number(self.weight, "weight", low=0.0, high=1.0)


@dataclass(frozen=True)
class VATSettings:
    """Virtual adversarial training: L2 budget `eps`, finite-difference step `xi`, `power_iterations`, LDS
    weight `alpha`; mode "online" (the LDS loss every batch) or "offline" (x + r_adv of a source model added
    to the training set, the paper's)."""

    eps: float = 2.1
    xi: float = 1e-6
    power_iterations: int = 1
    alpha: float = 1.0
    mode: str = "online"

    def __post_init__(self) -> None:
        check_nonnegative(self.eps, "eps")
        check_positive(self.xi, "xi")
        object.__setattr__(self, "power_iterations", check_int(self.power_iterations, "power_iterations", low=1))
        check_nonnegative(self.alpha, "alpha")
        check_choice(self.mode, "mode", MODES)


class Recipe:
    """The per-batch work of one defense. Subclasses set `name` and `Settings` and override what differs."""

    name: ClassVar[str]
    Settings: ClassVar[type]

    def __init__(self, settings: Any, *, seed: int = 0) -> None:
        if not isinstance(settings, self.Settings):
            expected, got = self.Settings.__name__, type(settings).__name__
            raise TypeError(f"settings of recipe {self.name!r} must be {expected}, got {got}")
        self.settings = settings
        self.seed = check_int(seed, "seed", low=0)

    @property
    def needs_source(self) -> bool:
        """True for the offline variants: training needs a model trained beforehand to make examples."""
        return False

    @property
    def augments_batches(self) -> bool:
        """True when the loader transforms every batch afresh (:meth:`augment` returns a transform), so that the
        training set has no fixed rows."""
        return False

    def augment(self, device: torch.device) -> Augment | None:
        """The per-batch transform (x, y) -> (x, y) the loader applies on `device`, or None."""
        return None

    def expansion(self) -> Expansion | None:
        """The fixed enlargement of the training set the loader shuffles (DeviceLoader's `expand`), or None."""
        return None

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of batch (x, y): x (B, C, H, W) float images in [0, 1], y (B,) int64 labels;
        `model` is the model, or its torch.compile'd module."""
        return F.cross_entropy(model(x).float(), y)

    def offline_examples(self, source: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The extra training images made from `source` for batch (x, y) (offline variants only)."""
        raise NotImplementedError(f"recipe {self.name!r} has no offline examples")

    def settings_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for checkpoints, signatures and cache keys)."""
        return dataclasses.asdict(self.settings)

    def check_classes(self, classes: int) -> None:
        """ValueError, before any training, where the settings do not fit a model of `classes` logits."""

    def reseed(self, seed: int) -> None:
        """Starts the recipe's random streams (GDA's noise, VAT's directions) afresh from `seed`, as a recipe made
        with that seed has them: :func:`~nemesis_fast.train` calls it with its `seed`, so that a reused Recipe
        object trains as the first time, and as the recipe of its name."""
        self.seed = check_int(seed, "seed", low=0)

    def rng_state(self) -> dict[str, torch.Tensor]:
        """The states of the recipe's own random generators, by device (for resuming a training run)."""
        return {}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restores what :meth:`rng_state` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"


class StandardRecipe(Recipe):
    name = "standard"
    Settings = StandardSettings


class GDARecipe(Recipe):
    name = "gda"
    Settings = GDASettings

    @property
    def augments_batches(self) -> bool:
        return not self.settings.fixed_set

    def augment(self, device: torch.device) -> Augment | None:
        from .gaussian_augmentation import GaussianAugmentation

        s = self.settings
        if not self.augments_batches:
            return None
        return GaussianAugmentation(
            sigma=s.sigma, copies=s.copies, clip=s.clip, include_original=s.include_original, seed=self.seed
        )

    def expansion(self) -> Expansion | None:
        from .gaussian_augmentation import FixedNoisyCopies

        s = self.settings
        return FixedNoisyCopies(s.sigma, s.copies, s.clip, seed=self.seed) if s.fixed_set else None


class LabelSmoothingRecipe(Recipe):
    name = "label_smoothing"
    Settings = LabelSmoothingSettings

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return label_smoothing_loss(model(x), y, self.settings.confidence)

    def check_classes(self, classes: int) -> None:
        if self.settings.confidence < 1 / classes:  # the true class would get less than each other class
            raise ValueError(
                f"settings: label_smoothing's confidence must be >= 1/{classes} for a model of {classes} classes, "
                f"got {self.settings.confidence}"
            )


class FGSMAdversarialRecipe(Recipe):
    name = "fgsm_adversarial"
    Settings = FGSMAdversarialSettings

    @property
    def needs_source(self) -> bool:
        return self.settings.mode == "offline"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.settings.mode == "offline":
            return super().loss(model, x, y)
        return fgsm_adversarial_loss(model, x, y, self.settings.eps, weight=self.settings.weight)

    def offline_examples(self, source: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fgsm_examples(source, x, y, self.settings.eps)


class VATRecipe(Recipe):
    name = "vat"
    Settings = VATSettings

    def __init__(self, settings: VATSettings, *, seed: int = 0) -> None:
        super().__init__(settings, seed=seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    @property
    def needs_source(self) -> bool:
        return self.settings.mode == "offline"

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self._generators = {}  # made again, from the new seed, where next used

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def rng_state(self) -> dict[str, torch.Tensor]:
        return {str(device): g.get_state() for device, g in self._generators.items()}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        for device, value in state.items():
            self._generator(torch.device(device)).set_state(value)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if s.mode == "offline":
            return super().loss(model, x, y)
        return vat_loss(
            model,
            x,
            y,
            eps=s.eps,
            xi=s.xi,
            alpha=s.alpha,
            power_iterations=s.power_iterations,
            generator=self._generator(x.device),
        )

    def offline_examples(self, source: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.settings
        r_adv = vat_perturbation(
            source, x, eps=s.eps, xi=s.xi, power_iterations=s.power_iterations, generator=self._generator(x.device)
        )
        return (x + r_adv.to(x.dtype)).clamp(0.0, 1.0)


RECIPES: dict[str, type[Recipe]] = {
    r.name: r for r in (StandardRecipe, GDARecipe, LabelSmoothingRecipe, FGSMAdversarialRecipe, VATRecipe)
}
_DATASET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "mnist": {},
    "cifar10": {"fgsm_adversarial": {"eps": 8 / 255}},
}


def paper_settings(name: str, dataset: str = "mnist", **overrides: Any) -> Any:
    """The settings dataclass of recipe `name` with the defaults for `dataset` ("mnist" or "cifar10"), and
    `overrides` (field=value) on top; an unknown field raises ValueError naming the fields there are."""
    check_choice(name, "recipe", RECIPES)
    check_choice(dataset, "dataset", DATASETS)
    cls = RECIPES[name].Settings
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"recipe {name!r} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(fields)) or 'none'}"
        )
    return cls(**{**_DATASET_DEFAULTS[dataset].get(name, {}), **overrides})


def make_recipe(name: str, settings: Any = None, *, dataset: str = "mnist", seed: int = 0) -> Recipe:
    """Recipe `name` with `settings`: None (the defaults for `dataset`), a dict of overrides of them, or the
    recipe's settings dataclass itself."""
    check_choice(name, "recipe", RECIPES)
    if settings is None or isinstance(settings, dict):
        settings = paper_settings(name, dataset, **(settings or {}))
    return RECIPES[name](settings, seed=seed)
