"""Reading the evaluation's settings from a TOML or JSON file (with a ``base`` preset or file under it) and
checking them: an unknown key, attack or defense, a negative eps, or a data folder that does not exist raises
ConfigError naming the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from pathlib import Path
from typing import Any

from .._checks import MAX_THREADS, check_device
from ..data import cifar10, mnist
from ..defenses.recipes import MAX_GDA_COPIES
from ..models import CONV2_PADDINGS
from ..paper_models import PAPER_MODELS
from .certified import certified_defenses, smoothing_sigma
from .config import (
    ATTACKS,
    AUGMENTED_VALIDATION,
    DATASET_DEFAULTS,
    DATASETS,
    DEFENSES,
    LABELS,
    MODES,
    PERTURBATION_ATTACKS,
    SOURCE_ARCHITECTURES,
    WHITEBOX_ATTACKS,
    AttackSettings,
    CertifySettings,
    ConfigError,
    DefenseSettings,
    EvalConfig,
    TrainingSettings,
)
from .config_files import check_budgets_fit, read_config_file

_SECTIONS = {
    "training": TrainingSettings,
    "defense": DefenseSettings,
    "attack": AttackSettings,
    "certify": CertifySettings,
}


def setting_hint(key: str, known: Any, top_level: bool) -> str:
    """The hint "; did you mean ...": the section a top-level key belongs to (`epochs` is [training]'s), or the known
    setting spelt most like it; "" where none is close."""
    if top_level:
        sections = [name for name, cls in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
        if sections:
            where = " or ".join(f"[{name}]" for name in sections)
            return f"; {key} is a setting of {where}: put it there (an override: {sections[0]}={{{key!r}: ...}})"
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        hint = setting_hint(unknown[0], known, cls is EvalConfig)
        raise ConfigError(f"unknown setting {where}{unknown[0]}; known: {', '.join(sorted(known))}{hint}")
    kwargs = {}
    for name, value in values.items():
        if name in _SECTIONS and cls is EvalConfig:
            if not isinstance(value, dict):
                raise ConfigError(f"[{name}] must be a table of settings")
            kwargs[name] = _build(_SECTIONS[name], value, f"{name}.")
        else:
            kwargs[name] = _coerce(value, known[name], f"{where}{name}")
    return cls(**kwargs)


def _coerce(value: Any, spec: dataclasses.Field, key: str) -> Any:
    default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
    if default is None and value is None:  # unset: the data set's or recipe's default
        return None
    value = _python_value(value)
    if default is None:  # optional settings: a number or a list of numbers
        kind = list if "list" in str(spec.type) else (int if "int" in str(spec.type) else float)
        if kind is list:
            if not isinstance(value, list):
                raise ConfigError(f"{key} must be a list, got {value!r}")
            return value
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not isinstance(value, int))
        ):
            raise ConfigError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        return kind(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
    elif isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{key} must be a list, got {value!r}")
    return value


def _python_value(value: Any) -> Any:
    """What a config made in Python may hold, as a config file would: a path as its string, a tuple as a list,
    numpy's integers and floats as Python's."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (tuple, list)):
        return [_python_value(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value)
    return value


def validate(config: EvalConfig) -> EvalConfig:
    """A copy of `config` with the type of every value checked as a config file's are (an EvalConfig made in
    Python too), the data set's defaults filled into unset budgets, and every setting checked; raises ConfigError
    naming the first bad one."""
    config = _build(EvalConfig, config.to_dict(), "")
    if config.dataset in DATASET_DEFAULTS:
        defaults = DATASET_DEFAULTS[config.dataset]
        if config.whitebox_eps is None:
            config.whitebox_eps = list(defaults["whitebox_eps"])
        for key in ("fgsm_eps", "rfgsm_eps", "rfgsm_alpha"):
            if getattr(config.attack, key) is None:
                setattr(config.attack, key, defaults[key])
    _validate_numbers(config)
    _validate_run(config)
    _validate_training(config.training)
    _validate_defense(config.defense)
    _need(
        config.training.cifar_conv2_padding == "valid" or config.dataset == "cifar10",
        "training.cifar_conv2_padding",
        f"sets the CIFAR-10 CNN's padding, but the dataset is {config.dataset} (leave it at 'valid')",
    )
    _need(
        config.training.augmented_validation == "images"
        or config.defense.gda_fixed_set
        or not any(m.recipe == "gda" for m in PAPER_MODELS if m.name in config.defenses),
        "training.augmented_validation",
        "last_rows needs GDA's fixed set (defense.gda_fixed_set = true): fresh copies per batch have no last rows",
    )
    train_samples = config.training.train_samples
    for key, first in config.first_images.items():  # a model on the first N images needs N among the run's
        _need(
            not first or not train_samples or first <= train_samples,
            key,
            f"must be <= training.train_samples ({train_samples}), the images there are to train on",
        )
    _validate_attack(config.attack)
    _validate_certify(config.certify, config.defenses)
    _validate_smoothing_sigma(config)
    files = cifar10.FILES_HINT if config.dataset == "cifar10" else mnist.FILES_HINT
    if config.data_dir:
        folder = Path(config.data_dir).expanduser()
        _need(folder.is_dir(), "data_dir", f"{str(folder)!r} is not a folder; it must hold {files}")
    elif config.dataset == "cifar10" and not config.synthetic:
        raise ConfigError(f"data_dir: no folder given for cifar10; pass --data-dir with {files} (or --synthetic)")
    return config


def _need(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def _validate_numbers(config: EvalConfig) -> None:
    """Every number of the config (its sections' and lists' too) finite and inside int64, the seed >= 0: the
    checks below compare with bounds that NaN and infinity would pass."""
    for where, settings in (("", config), *((f"{name}.", getattr(config, name)) for name in _SECTIONS)):
        for field in dataclasses.fields(settings):
            value = getattr(settings, field.name)
            for i, number in enumerate(value if isinstance(value, list) else [value]):
                key = f"{where}{field.name}" + (f"[{i}]" if isinstance(value, list) else "")
                if isinstance(number, float):
                    _need(math.isfinite(number), key, f"must be finite, got {number}")
                elif isinstance(number, int) and not isinstance(number, bool):
                    _need(abs(number) < 2**63, key, f"must fit in 64 bits, got {number}")
    _need(config.seed >= 0, "seed", f"must be >= 0, got {config.seed}")


def _validate_run(config: EvalConfig) -> None:
    """The run's own settings: data set, the lists of defenses, attacks and eps, device and budgets."""
    _need(config.dataset in DATASETS, "dataset", f"must be one of {', '.join(DATASETS)}; got {config.dataset!r}")
    for key, names, allowed in (
        ("defenses", config.defenses, DEFENSES),
        ("blackbox_attacks", config.blackbox_attacks, ATTACKS),
        ("whitebox_attacks", config.whitebox_attacks, WHITEBOX_ATTACKS),
        ("perturbation_attacks", config.perturbation_attacks, PERTURBATION_ATTACKS),
    ):
        for name in names:
            _need(name in allowed, key, f"has unknown entry {name!r}; choose from {', '.join(allowed)}")
        _need(len(set(names)) == len(names), key, "lists an entry twice")
    _need(bool(config.defenses), "defenses", "must name at least one defense")
    _need(config.perturbation_samples >= 0, "perturbation_samples", "must be >= 0")
    confidence = config.perturbation_confidence
    _need(math.isfinite(confidence) and confidence >= 0, "perturbation_confidence", f"must be >= 0, got {confidence}")
    for key in ("whitebox_eps", "blackbox_eps"):
        for i, eps in enumerate(getattr(config, key)):
            _need(
                isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps >= 0,
                f"{key}[{i}]",
                f"must be a number >= 0, got {eps!r}",
            )
        _need(len(set(getattr(config, key))) == len(getattr(config, key)), key, "lists an eps twice")
    _need(
        config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:"),
        "device",
        "must be auto, cpu or cuda[:N]",
    )
    if config.device != "auto":
        try:
            check_device(config.device, "device")
        except ValueError as error:
            raise ConfigError(str(error)) from error
    _need(0 <= config.threads <= MAX_THREADS, "threads", f"must be in [0, {MAX_THREADS}] (0: automatic)")
    _need(config.test_samples >= 0, "test_samples", "must be >= 0")
    _need(config.batch_size > 0, "batch_size", "must be > 0")


def _validate_training(t: TrainingSettings) -> None:
    _need(t.epochs >= 1, "training.epochs", "must be >= 1")
    _need(t.source_epochs is None or t.source_epochs >= 1, "training.source_epochs", "must be >= 1")
    _need(t.batch_size >= 1, "training.batch_size", "must be >= 1")
    _need(t.learning_rate > 0, "training.learning_rate", "must be > 0")
    _need(0 <= t.validation_fraction < 1, "training.validation_fraction", "must be in [0, 1)")
    _need(t.patience >= 1, "training.patience", "must be >= 1")
    _need(t.train_samples >= 0, "training.train_samples", "must be >= 0")
    held = round(t.train_samples * t.validation_fraction)  # as the split rounds
    _need(
        not t.train_samples or not t.validation_fraction or 0 < held < t.train_samples,
        "training.train_samples",
        f"{t.train_samples} with training.validation_fraction {t.validation_fraction} leaves {held} images to "
        f"validate on and {t.train_samples - held} to train on; give more images or another fraction",
    )
    _need(t.source_train_images >= 0, "training.source_train_images", "must be >= 0 (0: every training image)")
    _need(
        t.source_depth >= 8 and (t.source_depth - 2) % 6 == 0, "training.source_depth", "must be 6n+2 (20, 32, 44...)"
    )
    _need(
        t.augmented_validation in AUGMENTED_VALIDATION,
        "training.augmented_validation",
        f"must be one of {', '.join(AUGMENTED_VALIDATION)}; got {t.augmented_validation!r}",
    )
    _need(
        t.source_architecture in SOURCE_ARCHITECTURES,
        "training.source_architecture",
        f"must be one of {', '.join(SOURCE_ARCHITECTURES)}; got {t.source_architecture!r}",
    )
    _need(
        t.cifar_conv2_padding in CONV2_PADDINGS,
        "training.cifar_conv2_padding",
        f"must be one of {', '.join(CONV2_PADDINGS)}; got {t.cifar_conv2_padding!r}",
    )


def _validate_defense(d: DefenseSettings) -> None:
    for key, value in (("defense.fgsm_adversarial_mode", d.fgsm_adversarial_mode), ("defense.vat_mode", d.vat_mode)):
        _need(value in MODES, key, f"must be one of {', '.join(MODES)}; got {value!r}")
    _need(d.gda_sigma is None or d.gda_sigma >= 0, "defense.gda_sigma", "must be >= 0")
    _need(
        d.gda_copies is None or 1 <= d.gda_copies <= MAX_GDA_COPIES,
        "defense.gda_copies",
        f"must be in [1, {MAX_GDA_COPIES}]",
    )
    _need(d.brelu_t > 0, "defense.brelu_t", "must be > 0")
    _need(d.label_smoothing is None or 0 < d.label_smoothing <= 1, "defense.label_smoothing", "must be in (0, 1]")
    _need(d.fgsm_adversarial_eps is None or d.fgsm_adversarial_eps >= 0, "defense.fgsm_adversarial_eps", "must be >= 0")
    _need(d.fgsm_adversarial_source_images >= 0, "defense.fgsm_adversarial_source_images", "must be >= 0 (0: none)")
    _need(
        not d.fgsm_adversarial_source_images or d.fgsm_adversarial_mode == "offline",
        "defense.fgsm_adversarial_source_images",
        "needs defense.fgsm_adversarial_mode = 'offline' (online training crafts its examples on the model itself)",
    )
    _need(d.vat_eps is None or d.vat_eps >= 0, "defense.vat_eps", "must be >= 0")
    _need(d.vat_xi is None or d.vat_xi > 0, "defense.vat_xi", "must be > 0")
    _need(0 <= d.squeeze_bits <= 8, "defense.squeeze_bits", "must be in 0..8 (0: the paper's)")


def _validate_attack(a: AttackSettings) -> None:
    for key, value in (("attack.fgsm_labels", a.fgsm_labels), ("attack.rfgsm_labels", a.rfgsm_labels)):
        _need(value in LABELS, key, f"must be one of {', '.join(LABELS)}; got {value!r}")
    _need(a.fgsm_eps >= 0, "attack.fgsm_eps", f"must be >= 0, got {a.fgsm_eps}")
    _need(a.rfgsm_eps >= 0, "attack.rfgsm_eps", f"must be >= 0, got {a.rfgsm_eps}")
    _need(0 <= a.rfgsm_alpha <= a.rfgsm_eps, "attack.rfgsm_alpha", "must be in [0, attack.rfgsm_eps]")
    _need(a.deepfool_max_iter >= 1 and a.deepfool_overshoot >= 0, "attack.deepfool_*", "max_iter >= 1, overshoot >= 0")
    _need(a.deepfool_candidates >= 2, "attack.deepfool_candidates", "must be >= 2")
    _need(a.jsma_theta != 0, "attack.jsma_theta", "must be non-zero")
    _need(0 < a.jsma_gamma <= 1, "attack.jsma_gamma", "must be in (0, 1]")
    _need(a.cw_binary_search_steps >= 1 and a.cw_max_iter >= 1, "attack.cw_*", "steps and iterations must be >= 1")
    _need(a.cw_learning_rate > 0 and a.cw_initial_const > 0, "attack.cw_*", "learning rate and constant must be > 0")
    _need(a.cw_confidence >= 0, "attack.cw_confidence", f"must be >= 0, got {a.cw_confidence}")
    _need(a.cw_test_samples >= 0, "attack.cw_test_samples", "must be >= 0")
    _need(a.pgd_steps >= 1, "attack.pgd_steps", "must be >= 1")
    _need(a.pgd_restarts >= 1, "attack.pgd_restarts", "must be >= 1")
    _need(a.pgd_step_ratio > 0, "attack.pgd_step_ratio", "must be > 0")
    _need(a.pgd_test_samples >= 0, "attack.pgd_test_samples", "must be >= 0")


def _validate_certify(c: CertifySettings, defenses: list[str]) -> None:
    _need(c.images >= 0, "certify.images", "must be >= 0 (0: no certified section)")
    _need(c.sigma is None or (math.isfinite(c.sigma) and c.sigma > 0), "certify.sigma", f"must be > 0, got {c.sigma}")
    _need(1 <= c.n0 <= 2**32, "certify.n0", f"must be in 1..2**32, got {c.n0}")
    _need(1 <= c.n <= 2**32, "certify.n", f"must be in 1..2**32, got {c.n}")
    _need(0 < c.alpha < 1, "certify.alpha", f"must be in (0, 1), got {c.alpha}")
    _need(c.batch_size >= 1, "certify.batch_size", "must be >= 1")
    for name in c.defenses or []:
        _need(name in defenses, "certify.defenses", f"has {name!r}, which is not among the run's defenses")
    _need(not c.defenses or len(set(c.defenses)) == len(c.defenses), "certify.defenses", "lists a defense twice")
    for i, r in enumerate(c.radii):
        ok = isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r >= 0
        _need(ok, f"certify.radii[{i}]", f"must be a number >= 0, got {r!r}")
    _need(bool(c.radii) and len(set(c.radii)) == len(c.radii), "certify.radii", "must list distinct radii")


def _validate_smoothing_sigma(config: EvalConfig) -> None:
    """Where [certify] certifies, its noise > 0: certify.sigma, or where unset the GDA models' defense.gda_sigma."""
    if not config.certify.images or not certified_defenses(config):
        return
    _need(
        smoothing_sigma(config) > 0,
        "defense.gda_sigma",
        "is 0, and with certify.sigma unset it is the smoothing noise of [certify], which must be > 0; set "
        "certify.sigma",
    )


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """Reads a TOML or JSON config (None: the defaults), applies `overrides` (top-level keys; a section as a dict
    updates the section key by key: :func:`with_overrides`), validates.

    A config may start from another with a top-level ``base``: the name of a shipped preset (e.g. "paper") or
    the path of a config file (relative to this one); its own keys then override the base's, section by
    section."""
    values, budgets = read_config_file(Path(path).expanduser()) if path is not None else ({}, {})
    values = with_overrides(values, overrides)
    check_budgets_fit(budgets, values.get("dataset", EvalConfig.dataset))
    return validate(_build(EvalConfig, values, ""))


def with_overrides(values: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`values` (settings by key, sections as tables) with each override given (not None) in place of its key's
    value; a section given as a table (e.g. ``{"certify": {"n": 128}}``) updates that section key by key, as a
    config's ``base`` does, and keeps the section's other settings."""
    values = dict(values)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in _SECTIONS and isinstance(value, _SECTIONS[key]):
            value = dataclasses.asdict(value)  # a whole section object replaces the section
        elif key in _SECTIONS and isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}
        values[key] = value
    return values


def config_with_overrides(config: EvalConfig, overrides: dict[str, Any]) -> EvalConfig:
    """`config` with `overrides` applied as :func:`load_config` applies them to a file's settings, validated."""
    return validate(_build(EvalConfig, with_overrides(config.to_dict(), overrides), ""))
