"""Model checkpoints: :func:`save_checkpoint` writes a trained model with its recipe, settings, architecture and
training-noise sigma; :func:`load_checkpoint` reads one back (``weights_only``), refusing one that differs from
what the caller asks for. (Mid-training states for resuming: :mod:`nemesis_fast.resume`.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_device
from ._io import DamagedFileError, check_output_file, torch_load_checked, torch_save_atomic
from ._version import __version__
from .defenses.feature_squeezing import FeatureSqueezing
from .models import build_model, live_architecture

__all__ = [
    "NoArchitectureError",
    "checkpoint_noise_sigma",
    "load_checkpoint",
    "save_checkpoint",
    "training_noise_sigma",
]


class NoArchitectureError(ValueError):
    """A checkpoint of a model the package did not build (no architecture recorded), loaded without the model."""


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    recipe: str,
    settings: dict[str, Any] | None = None,
    architecture: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Writes {"state_dict", "recipe", "settings", "architecture": {"name", "kwargs"}, "metrics", "noise_sigma",
    "squeezer", "nemesis_fast_version"} to `path` (a file, not a folder; atomically; tensors moved to the CPU). A
    model behind feature squeezing (:class:`~nemesis_fast.defenses.FeatureSqueezing`) is saved as its network, with
    the squeezer's bit_depth, median_size and bpda as "squeezer" (None for other models), and loads back behind the
    same squeezer. `architecture`
    defaults to the one recorded by the model builders of :mod:`nemesis_fast.models` (None for other models), with
    the activation and threshold t the model has now (a builder's ReLU model made a BReLU one by
    :func:`nemesis_fast.nn.replace_relu`, or its :func:`~nemesis_fast.nn.to_hardtanh` copy, is saved as the builder's
    BReLU model). ValueError where the activation
    layers cannot be described so (mixed kinds or thresholds), or where a given `architecture` names another
    activation or t than the model has. "noise_sigma" is
    the standard deviation of the Gaussian noise the model was trained on (the gda recipe's sigma; None for the
    other recipes): the sigma to certify it at by randomized smoothing (:mod:`nemesis_fast.certify`)."""
    squeezer = None
    if isinstance(model, FeatureSqueezing):
        squeezer = model.settings()
        model = model.model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be a str, got {type(recipe).__name__}")
    path = check_output_file(path, "path")
    entries = {"settings": settings, "architecture": architecture, "metrics": metrics}
    for name, entry in entries.items():
        if entry is not None and not isinstance(entry, dict):
            raise TypeError(f"{name} must be a dict or None, got {type(entry).__name__}")
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "recipe": recipe,
        "settings": _loadable(dict(settings or {}), "settings"),
        "architecture": _loadable(_saved_architecture(model, architecture), "architecture"),
        "metrics": _loadable(dict(metrics or {}), "metrics"),
        "noise_sigma": training_noise_sigma(recipe, settings),
        "squeezer": squeezer,
        "nemesis_fast_version": __version__,
    }
    torch_save_atomic(path, payload)
    return path


def _saved_architecture(model: nn.Module, given: dict[str, Any] | None) -> dict[str, Any] | None:
    """The architecture save_checkpoint records: `given`, or the builder's record, as the model's activation layers
    now are (:func:`~nemesis_fast.models.live_architecture`); ValueError where a `given` one names another
    activation or t than the model has."""
    live = live_architecture(model, given)
    if given is None or live is given:  # (no activation recorded in a given one: nothing to check)
        return live
    keys = ("activation", "t") if live["kwargs"]["activation"] == "brelu" else ("activation",)
    found = {k: given["kwargs"].get(k, "<absent>") for k in keys}
    differ = [
        f"{k}={v!r} (the model's layers: {live['kwargs'][k]!r})" for k, v in found.items() if v != live["kwargs"][k]
    ]
    if differ:
        raise ValueError(f"architecture differs from the model's activation layers: {'; '.join(differ)}")
    return given


def _loadable(value: Any, name: str) -> Any:
    """`value` as what `torch.load(weights_only=True)` reads back: None, bool, int, float, str, tensors, and lists,
    tuples and str-keyed dicts of them; numpy scalars and arrays become Python numbers and lists. TypeError naming
    the entry otherwise (checked before the file is written, so an existing checkpoint is kept)."""
    if isinstance(value, (np.generic, np.ndarray)):  # (numpy's float64 is also a Python float)
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_loadable(v, f"{name}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _loadable(v, f"{name}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"{name} must hold numbers, strings, tensors and lists or str-keyed dicts of them, got {type(value).__name__}"
    )


def training_noise_sigma(recipe: str, settings: dict[str, Any] | None) -> float | None:
    """The standard deviation of the Gaussian noise a recipe trains on: the gda recipe's sigma (its default
    where `settings` leave it out), None for the recipes without noise."""
    if recipe != "gda":
        return None
    sigma = (settings or {}).get("sigma")
    if sigma is None:
        from .defenses.recipes import GDASettings

        sigma = GDASettings().sigma
    return float(sigma)


def checkpoint_noise_sigma(meta: dict[str, Any]) -> float | None:
    """The training noise's sigma recorded in a checkpoint's entries (as :func:`load_checkpoint` returns them);
    for checkpoints written before it was recorded, read from a gda recipe's settings. None: no noise."""
    if meta.get("noise_sigma") is not None:
        return float(meta["noise_sigma"])
    return training_noise_sigma(meta.get("recipe", ""), meta.get("settings"))


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [f"{k}={found.get(k, '<absent>')!r} (asked {v!r})" for k, v in wanted.items() if found.get(k) != v]


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    model_name: str | None = None,
    architecture_kwargs: dict[str, Any] | None = None,
    recipe: str | None = None,
    settings: dict[str, Any] | None = None,
    map_location: torch.device | str | None = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Loads a checkpoint of :func:`save_checkpoint` with `torch.load(weights_only=True)` (no code runs).

    Refuses (ValueError naming what differs) a checkpoint whose recipe differs from `recipe`, whose settings
    differ from the entries of `settings`, whose architecture name differs from `model_name`, whose
    architecture kwargs differ from the entries of `architecture_kwargs`, or, when `model` is given and
    records its architecture, whose architecture (with the activation and t its layers have now) differs from the
    model's. Without `model` the model is rebuilt from the recorded architecture, on `map_location` (a device
    this machine has: ValueError naming map_location otherwise; None: the CPU); a given `model` keeps its device.
    A checkpoint of a model behind feature squeezing (its "squeezer"; in the evaluation's checkpoints written before
    it was recorded, metrics["squeeze_bits"]) comes back behind a :class:`~nemesis_fast.defenses.FeatureSqueezing`
    of the same settings, around the rebuilt network or around `model` (a given FeatureSqueezing must squeeze so:
    ValueError otherwise). Returns (model with the weights loaded, the checkpoint's other entries).
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or None, got {type(model).__name__}")
    for name, entry in (("settings", settings), ("architecture_kwargs", architecture_kwargs)):
        if entry is not None and not isinstance(entry, dict):
            raise TypeError(f"{name} must be a dict or None, got {type(entry).__name__}")
    device = check_device("cpu" if map_location is None else map_location, "map_location")
    path = Path(path).expanduser()  # as save_checkpoint and the command line's check_checkpoint_path take it
    payload = _read_payload(path, device)
    _check_asked(payload, path, recipe, settings, model_name, architecture_kwargs)
    squeezer = _squeezer(payload, path)
    wrapper = model if isinstance(model, FeatureSqueezing) else None  # given: returned, its network loaded
    if wrapper is not None:
        given = wrapper.settings()
        if squeezer is None and all(key.startswith("model.") for key in payload["state_dict"]):
            squeezer = given  # the wrapper saved whole, before squeezers were recorded: its own
            payload["state_dict"] = {k.removeprefix("model."): v for k, v in payload["state_dict"].items()}
        if squeezer != given:
            raise ValueError(f"{path}: its squeezer {squeezer} differs from the model given ({given})")
        model = wrapper.model
    model = _network_for(payload["architecture"], payload["state_dict"], path, model, device)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit the model: {error}") from error
    if wrapper is not None:
        model = wrapper
    elif squeezer is not None:
        model = FeatureSqueezing(
            model, squeezer["bit_depth"], median_size=squeezer["median_size"], bpda=squeezer["bpda"]
        )
    return model, {k: v for k, v in payload.items() if k != "state_dict"}


def _load_failure(error: Exception) -> str:
    """torch.load's error in a line: for weights_only's refusal only its reason, not torch's advice to load with
    weights_only=False (which would run the file's code, and loads no checkpoint of this package either)."""
    text = str(error)
    _, found, reason = text.partition("WeightsUnpickler error:")
    if found:
        reason = " ".join(reason.split("Check the documentation of torch.load")[0].split())
        reason = reason.split(". Please use")[0].rstrip(".")  # the advice to allowlist the file's classes
        return f"torch.load(weights_only=True) cannot read it: {reason or type(error).__name__}"
    text = " ".join(text.split())
    return f"{type(error).__name__}: {text}" if text else f"{type(error).__name__}: the file is empty or cut short"


def _read_payload(path: Path, device: torch.device) -> dict[str, Any]:
    """The checkpoint at `path`, loaded onto `device` with weights_only=True; ValueError naming `path` where it is
    no nemesis_fast checkpoint (FileNotFoundError where it is missing)."""
    try:
        payload = torch_load_checked(path, map_location=device)
    except FileNotFoundError:
        raise
    except DamagedFileError as error:
        raise ValueError(f"{error}: not loaded") from error
    except Exception as error:  # a foreign or damaged file: whatever torch.load raises
        raise ValueError(
            f"{path}: not a loadable checkpoint ({_load_failure(error)}); a checkpoint is a file written by "
            "`nemesis-fast train --out`, save_checkpoint or `nemesis-fast evaluate` (its models/<name>.pt)"
        ) from error
    required = ("state_dict", "recipe", "settings", "architecture", "nemesis_fast_version")
    if not isinstance(payload, dict) or any(key not in payload for key in required):
        bare = isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values())
        hint = (
            "; it holds a bare state_dict: load it into its model and write that with "
            "nemesis_fast.checkpoints.save_checkpoint(path, model, recipe=...)"
            if bare
            else ""
        )
        raise ValueError(f"{path}: not a nemesis_fast checkpoint (needs the entries {', '.join(required)}){hint}")
    arch = payload["architecture"]
    if not (
        isinstance(payload["state_dict"], dict)
        and isinstance(payload["settings"], dict)
        and (arch is None or (isinstance(arch, dict) and isinstance(arch.get("name"), str)))
        and (arch is None or isinstance(arch.get("kwargs"), dict))
    ):
        raise ValueError(f"{path}: not a nemesis_fast checkpoint (its entries have the wrong types)")
    return payload


def _check_asked(
    payload: dict[str, Any],
    path: Path,
    recipe: str | None,
    settings: dict[str, Any] | None,
    model_name: str | None,
    architecture_kwargs: dict[str, Any] | None,
) -> None:
    """ValueError naming `path` and what differs where the checkpoint is not what :func:`load_checkpoint`'s
    arguments of the same names ask for."""
    arch = payload["architecture"]
    if recipe is not None and payload["recipe"] != recipe:
        raise ValueError(f"{path}: trained with recipe {payload['recipe']!r}, not the {recipe!r} asked for")
    if settings:
        differ = _differences(payload["settings"], settings)
        if differ:
            raise ValueError(f"{path}: recipe settings differ from those asked: {'; '.join(differ)}")
    if model_name is not None and (arch is None or arch["name"] != model_name):
        found = arch["name"] if arch else "an unrecorded architecture"
        raise ValueError(f"{path}: holds a {found!r} model, not the {model_name!r} asked for")
    if architecture_kwargs:
        differ = _differences(_comparable(arch["kwargs"] if arch else {}), _comparable(architecture_kwargs, arch))
        if differ:
            raise ValueError(f"{path}: architecture differs from the one asked: {'; '.join(differ)}")


def _network_for(
    arch: dict[str, Any] | None,
    state_dict: dict[str, Any],
    path: Path,
    model: nn.Module | None,
    device: torch.device,
) -> nn.Module:
    """The network the weights load into: `model` where given (ValueError where its architecture, where known,
    differs from `arch`, the recorded one), else one built from `arch` on `device`."""
    if model is None:
        if arch is None:
            raise NoArchitectureError(f"{path}: records no architecture; pass the model to load the weights into")
        return _built(arch, state_dict, path, device)
    mine = live_architecture(model)
    if mine is not None and arch is not None:
        if mine["name"] != arch["name"]:
            raise ValueError(f"{path}: holds a {arch['name']!r} model, but the model given is {mine['name']!r}")
        found, given = _comparable(arch["kwargs"]), _comparable(mine["kwargs"])
        if found != given:
            differ = _differences(found, given) or [
                f"{k}={_shown(found, k)} (the model given: {_shown(given, k)})" for k in sorted(set(found) ^ set(given))
            ]
            raise ValueError(f"{path}: architecture differs from the model given: {'; '.join(differ)}")
    return model


def _shown(kwargs: dict[str, Any], key: str) -> str:
    """`kwargs[key]` as a message shows it, or <absent>."""
    return repr(kwargs[key]) if key in kwargs else "<absent>"


def _built(arch: dict[str, Any], state_dict: dict[str, Any], path: Path, device: torch.device) -> nn.Module:
    """The network `arch` records, built first without memory (on the meta device) and made real on `device` only
    once its parameters' names and shapes are those of `state_dict`: a file's recorded sizes, which may come from
    anyone, allocate nothing that its weights do not fill. ValueError naming `path` where it cannot be built."""
    try:
        with torch.device("meta"):
            network = build_model(arch["name"], **arch["kwargs"])
    except (TypeError, ValueError, RuntimeError, RecursionError) as error:
        raise ValueError(f"{path}: its recorded architecture cannot be built: {error}") from error
    shapes = {name: tuple(value.shape) for name, value in network.state_dict().items()}
    stored = {name: tuple(value.shape) for name, value in state_dict.items() if isinstance(value, torch.Tensor)}
    if shapes != stored:
        names = sorted(set(shapes) ^ set(stored)) or sorted(n for n in shapes if shapes[n] != stored[n])
        raise ValueError(
            f"{path}: the weights do not fit its recorded architecture {arch['name']!r} ({len(stored)} tensors "
            f"stored, {len(shapes)} built; first differing: {', '.join(names[:3])})"
        )
    return network.to_empty(device=device)


def _comparable(kwargs: dict[str, Any], arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """A builder's `kwargs` as compared: without `t` where the layers they describe (`arch`'s, default theirs) are
    ReLUs, which have no threshold, so that a ReLU model built with another t still loads into one built with the
    default."""
    described = arch["kwargs"] if arch else kwargs
    relu = described.get("activation") == "relu"
    return {key: value for key, value in kwargs.items() if not (relu and key == "t")}


def _squeezer(payload: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """A checkpoint's squeezer settings {"bit_depth", "median_size", "bpda"} (bpda True where not recorded), or
    None; ValueError naming `path` for malformed ones."""
    squeezer = payload.get("squeezer")
    metrics = payload.get("metrics")
    if squeezer is None and isinstance(metrics, dict) and metrics.get("squeeze_bits") is not None:
        squeezer = {"bit_depth": metrics["squeeze_bits"], "median_size": None}  # the evaluation's, before
    if squeezer is None:
        return None
    sizes = ("bit_depth", "median_size")
    if not (
        isinstance(squeezer, dict)
        and set(squeezer) - {"bpda"} == set(sizes)
        and all(squeezer[k] is None or type(squeezer[k]) is int for k in sizes)
        and type(squeezer.get("bpda", True)) is bool
    ):
        raise ValueError(f"{path}: not a nemesis_fast checkpoint (its squeezer is {squeezer!r})")
    return {**squeezer, "bpda": squeezer.get("bpda", True)}
