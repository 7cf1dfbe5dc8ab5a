"""Reading a config file with the `base` it starts from, and checking that the attack budgets it writes are for the
data set the run attacks: a preset written for MNIST's [0, 1] budgets, run on CIFAR-10 by --dataset, would
otherwise attack CIFAR-10 at MNIST's eps without a word."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .config import PRESETS_DIR, ConfigError, preset_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The keys whose values are budgets of one data set (their defaults differ between the data sets).
DATASET_BUDGET_KEYS = (
    "whitebox_eps",
    "blackbox_eps",
    "attack.fgsm_eps",
    "attack.rfgsm_eps",
    "attack.rfgsm_alpha",
    "defense.fgsm_adversarial_eps",
    "defense.squeeze_bits",
)

# key -> (the data set that the file which set it names, or None where it names none; that file)
Budgets = dict[str, tuple[str | None, Path]]


def read_config_file(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Budgets]:
    """The keys of the config file `path`, with its `base`'s under them (`chain`: the files that led here), and
    where each budget key among them was set."""
    values = _parse(path)
    merged, budgets = {}, {}
    if "base" in values:
        merged, budgets = read_config_file(_base_path(values.pop("base"), path, chain), (*chain, path))
    written_for = values.get("dataset")  # the data set this file names, not its base's: its budgets are for it
    for key in DATASET_BUDGET_KEYS:
        present, value = _lookup(values, key)
        if present and value in (None, []):  # the data set's default, or no budgets: fits any data set
            budgets.pop(key, None)
        elif present:
            budgets[key] = (written_for, path)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged, budgets


def check_budgets_fit(budgets: Budgets, dataset: str) -> None:
    """ConfigError naming `dataset` where a config file set budgets for another data set (as --dataset cifar10 on
    a preset written for MNIST does)."""
    stale = {key: origin for key, origin in budgets.items() if origin[0] is not None and origin[0] != dataset}
    if not stale:
        return
    written_for, path = next(iter(stale.values()))
    keys = ", ".join(stale)
    raise ConfigError(
        f"dataset: {dataset}, but {path.name} sets budgets for {written_for} ({keys}); write a config that sets "
        f'them for {dataset} (with base = "{path.stem}" under it, say), or run a preset that leaves them to the data '
        "set (quick, paper_headline)"
        + ("; the authors' experiment on CIFAR-10 is paper_cifar10" if dataset == "cifar10" else "")
    )


def _parse(path: Path) -> dict[str, Any]:
    if not path.is_file():
        # a bare name only: PRESETS_DIR / an absolute path is that path, which no preset_path() call names
        preset = len(path.parts) == 1 and path.suffix == "" and (PRESETS_DIR / f"{path}.toml").is_file()
        hint = f"; for the preset {path} pass nemesis_fast.evaluation.preset_path({str(path)!r})" if preset else ""
        raise ConfigError(f"config file {path} does not exist{hint}")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError(f"config file {path} is not valid {kind}: {error}") from error


def _base_path(base: Any, path: Path, chain: tuple[Path, ...]) -> Path:
    """The file that `base` (in the config file `path`) names: a config file beside it or a preset."""
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base (in {path}) must be a preset name or a config file path, got {base!r}")
    base_path = path.parent / base if Path(base).suffix in (".toml", ".json") else PRESETS_DIR / f"{base}.toml"
    if not base_path.is_file():
        known = ", ".join(preset_names())
        raise ConfigError(f"base (in {path}): {base!r} is neither a config file nor a preset ({known})")
    if base_path.resolve() in {p.resolve() for p in (*chain, path)}:
        raise ConfigError(f"base (in {path}): {base!r} leads back to a config already read (a cycle)")
    return base_path


def _lookup(values: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """(whether values["a"]["b"] is there for "a.b", its value)."""
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return False, None
        values = values[part]
    return True, values
