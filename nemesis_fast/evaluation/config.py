"""The evaluation's settings: dataclasses whose defaults are the paper's, and the names they accept.

Reading them from a TOML or JSON file and checking every key: :mod:`nemesis_fast.evaluation.load`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASETS = ("mnist", "cifar10")
# The paper's seven models, by the names of nemesis_fast.paper_models.PAPER_MODELS.
DEFENSES = ("standard", "feature_squeezing", "label_smoothing", "fgsm_adversarial", "vat", "gda", "gda_brelu")
DEFENSE_LABELS = {
    "standard": "CNN",
    "feature_squeezing": "Feature squeezing",
    "label_smoothing": "Label smoothing",
    "fgsm_adversarial": "FGSM adv. training",
    "vat": "VAT",
    "gda": "GDA + ReLU",
    "gda_brelu": "GDA + BReLU",
}
ATTACKS = ("fgsm", "rfgsm", "deepfool", "jsma", "cw")
# The files a run writes under out_dir, by the key write_outputs returns them under (and models/<name>.pt).
OUTPUT_FILES = {
    "json": "results.json",
    "csv": "results.csv",
    "markdown": "results.md",
    "whitebox": "whitebox.png",
    "blackbox_eps": "blackbox_eps.png",
    "perturbation": "perturbation.png",
    "certified": "certified.png",
    "certified_csv": "certified.csv",
    "examples": "examples.png",
}
ATTACK_LABELS = {"fgsm": "FGSM", "rfgsm": "R+FGSM", "deepfool": "DeepFool", "jsma": "JSMA", "cw": "C&W", "pgd": "PGD"}
MASKED = "whitebox-gradient-masking"  # the setting of a defense attacked through its own gradient (no BPDA)
WHITEBOX_ATTACKS = ("fgsm", "rfgsm", "pgd")
DEFAULT_WHITEBOX_ATTACKS = ("fgsm", "rfgsm")  # PGD (40 steps x 5 restarts per eps) only where asked for
SWEEP_ATTACKS = ("fgsm", "rfgsm")  # the black-box attacks with a budget eps
PERTURBATION_ATTACKS = ("deepfool", "cw", "jsma")  # the minimal-perturbation attacks
SOURCE_ARCHITECTURES = ("resnet", "small_resnet")
LABELS = ("true", "predicted")
MODES = ("offline", "online")
AUGMENTED_VALIDATION = ("images", "last_rows")


PRESETS_DIR = Path(__file__).with_name("presets")  # the shipped configs: quick, paper, ...


def preset_names() -> list[str]:
    """The shipped presets' names, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


class ConfigError(ValueError):
    """A setting that is unknown or out of range; the message names the key."""


@dataclass
class TrainingSettings:
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    # How the models trained on an enlarged set (GDA's fixed set, offline FGSM and VAT training) validate:
    # "images": the held-out random fraction of the images, clean; "last_rows": the last fraction of their
    # training set as it is laid out (originals, then copies or examples), as Keras' validation_split did. The
    # models trained on the images alone validate on a random fraction of them either way.
    augmented_validation: str = "images"
    patience: int = 3  # epochs without validation improvement before early stopping
    train_samples: int = 0  # 0: the whole training set
    # The CIFAR-10 CNN's second convolution: "valid" (the paper's network as this package first read it) or "same"
    # (the authors' scripts); models.cifar_cnn's conv2_padding. No other model has it.
    cifar_conv2_padding: str = "valid"
    source_architecture: str = "resnet"  # the black-box source: "resnet" (ResNet-source_depth), "small_resnet"
    source_depth: int = 20  # depth of the ResNet source
    source_epochs: int | None = None  # the black-box source's training budget in epochs (None: epochs)
    # The black-box source trains on the first N training images only, the last validation_fraction of them held
    # out unshuffled (as Keras' validation_split did); 0: on the whole training set, split like every model.
    source_train_images: int = 0
    amp: bool = False
    compile: bool = False


@dataclass
class DefenseSettings:
    """None: the recipe's default for the data set (nemesis_fast.defenses.paper_settings)."""

    gda_sigma: float | None = None
    gda_copies: int | None = None
    brelu_t: float = 1.0
    label_smoothing: float | None = None
    gda_clip: bool = True  # clip the noisy copies to [0, 1]
    gda_fixed_set: bool = False  # one shuffled set of fixed copies (the authors') instead of copies per batch
    fgsm_adversarial_eps: float | None = None
    fgsm_adversarial_mode: str = "offline"
    # Offline FGSM adversarial training takes its examples from a CNN trained like the standard one on the first N
    # training images only (the last validation_fraction of them held out unshuffled); 0: from the standard CNN.
    fgsm_adversarial_source_images: int = 0
    vat_eps: float | None = None
    vat_xi: float | None = None
    vat_mode: str = "online"
    squeeze_bits: int = 0  # 0: the paper's (1 bit on MNIST, 3 on CIFAR-10)
    squeeze_training: bool = False  # train the feature-squeezing model on squeezed images (the authors')


@dataclass
class AttackSettings:
    """None: the data set's default (DATASET_DEFAULTS); eps in pixel units of [0, 1] images."""

    fgsm_eps: float | None = None
    fgsm_labels: str = "true"  # "predicted": away from the model's own prediction (cleverhans' fgm)
    rfgsm_eps: float | None = None
    rfgsm_alpha: float | None = None
    rfgsm_alpha_fixed: bool = False  # sweeps: False keeps alpha / eps; True alpha = min(rfgsm_alpha, eps) (authors)
    rfgsm_labels: str = "true"
    deepfool_max_iter: int = 50
    deepfool_overshoot: float = 0.02
    deepfool_candidates: int = 10
    jsma_theta: float = 1.0
    jsma_gamma: float = 0.1
    jsma_use_logits: bool = True  # False: the Jacobian of the softmax (the paper's F)
    cw_confidence: float = 0.0
    cw_initial_const: float = 1e-3
    cw_binary_search_steps: int = 9
    cw_max_iter: int = 1000
    cw_learning_rate: float = 0.01
    cw_test_samples: int = 0  # C&W on the first N test images only (0: all)
    pgd_steps: int = 40
    pgd_restarts: int = 5
    pgd_step_ratio: float = 2.5  # step size = pgd_step_ratio * eps / pgd_steps
    pgd_test_samples: int = 0  # white-box PGD on the first N test images only (0: all)


@dataclass
class CertifySettings:
    """Randomized smoothing (Cohen et al. 2019) of each defense, certified on the first `images` test images.

    These settings reach only the keys of the certify entries of the cache, never those of the models or attacks.
    """

    images: int = 0  # test images to certify, the first N; 0: no certified section
    sigma: float | None = None  # smoothing noise; None: the GDA models' training sigma (defense.gda_sigma or 0.3)
    n0: int = 100  # selection draws per image (Cohen et al.: 100)
    n: int = 10_000  # estimation draws per image (Cohen et al.: 100,000)
    alpha: float = 0.001  # failure probability of each certificate (Cohen et al.: 0.001)
    batch_size: int = 1000  # noisy copies per forward pass: memory only, the results do not depend on it
    defenses: list[str] | None = None  # the defenses to certify; None: all of the run's
    radii: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # the table's L2 radii


@dataclass
class EvalConfig:
    """One evaluation: which data, which defenses, which attacks, with what budgets."""

    dataset: str = "mnist"
    data_dir: str = ""  # empty: the MNIST sample shipped with the package (MNIST only)
    synthetic: bool = False  # random CIFAR-shaped data: measures throughput, not robustness
    device: str = "auto"
    threads: int = 0  # CPU threads per process; 0: torch's default, or under torchrun cores / local processes
    seed: int = 0
    test_samples: int = 0  # 0: the whole test set
    # images per attack batch; also the unit of sharding and of resuming, and of the random draws (R+FGSM's noise,
    # JSMA's targets, PGD's starts are seeded per chunk): those cells vary with it within their sampling error
    batch_size: int = 500
    out_dir: str = "nemesis-results"
    cache_dir: str = ""  # empty: <out_dir>/cache
    # Write every trained model as a checkpoint, <out_dir>/models/<name>.pt (nemesis_fast.checkpoints), for
    # `nemesis-fast certify --checkpoint` or load_checkpoint.
    save_models: bool = True
    defenses: list[str] = field(default_factory=lambda: list(DEFENSES))
    blackbox_attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    whitebox_attacks: list[str] = field(default_factory=lambda: list(DEFAULT_WHITEBOX_ATTACKS))
    whitebox_eps: list[float] | None = None  # None: the data set's sweep (DATASET_DEFAULTS)
    blackbox_eps: list[float] = field(default_factory=list)  # black-box FGSM and R+FGSM also at each of these
    perturbation_attacks: list[str] = field(default_factory=list)  # white-box minimal perturbation per defense
    perturbation_samples: int = 0  # ... on the first N test images (0: all)
    # C&W's confidence (logit margin) there: 0, the smallest perturbation that changes the label. A larger one
    # measures the perturbation to a confident mistake, which a model with small logits makes look robust.
    perturbation_confidence: float = 0.0
    training: TrainingSettings = field(default_factory=TrainingSettings)
    defense: DefenseSettings = field(default_factory=DefenseSettings)
    attack: AttackSettings = field(default_factory=AttackSettings)
    certify: CertifySettings = field(default_factory=CertifySettings)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain nested dicts and lists (as results.json records them)."""
        return dataclasses.asdict(self)

    @property
    def squeeze_bits(self) -> int:
        """Feature squeezing's bits: the config's, else the paper's for the data set (1 on MNIST, 3 on CIFAR-10)."""
        return self.defense.squeeze_bits or (1 if self.dataset == "mnist" else 3)

    @property
    def first_images(self) -> dict[str, int]:
        """The settings that train a model on the first N training images only: key -> N (0: unset)."""
        return {
            "training.source_train_images": self.training.source_train_images,
            "defense.fgsm_adversarial_source_images": self.defense.fgsm_adversarial_source_images,
        }


# Attack budgets where the config leaves them unset: the paper's on MNIST; on CIFAR-10 the customary 8/255.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {
        "fgsm_eps": 0.3,
        "rfgsm_eps": 0.3,
        "rfgsm_alpha": 0.05,
        "whitebox_eps": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
    },
    "cifar10": {
        "fgsm_eps": 8 / 255,
        "rfgsm_eps": 8 / 255,
        "rfgsm_alpha": 4 / 255,
        "whitebox_eps": [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255],
    },
}


def defense_label(defense: str, setting: str = "whitebox") -> str:
    """The defense's name in tables and figures, marked where it was attacked through its own gradient."""
    return DEFENSE_LABELS[defense] + (" (gradient masking)" if setting == MASKED else "")
