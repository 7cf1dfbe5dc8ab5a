"""Where a run writes, checked before any work: an out_dir holding another run's results or a user's files that the
run would overwrite, and an out_dir or cache_dir that cannot be made or written, raise ConfigError naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._checks import shortened
from .._io import check_output_folder
from .cache import as_read_back
from .config import OUTPUT_FILES, ConfigError, EvalConfig

# Where a run reads and writes (and what files it writes) and how fast it goes, not what it computes.
_PLACE_KEYS = {"data_dir", "device", "threads", "out_dir", "cache_dir", "save_models"}


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return flat


def _holds(path: Path) -> bool:
    """Whether `path` is there, the models folder only with something in it (an empty one has nothing to lose)."""
    if path.name == "models" and path.is_dir():
        return any(path.iterdir())
    return path.exists()


def _check_no_outputs(config: EvalConfig, out: Path) -> None:
    """Refuses an out_dir with no evaluation's results.json that holds files the run would write."""
    names = [*OUTPUT_FILES.values(), *(["models"] if config.save_models else [])]
    held = [name for name in names if _holds(out / name)]
    if held:
        raise ConfigError(
            f"out_dir: {out} holds {', '.join(held)}, which the run would overwrite, and no results.json of an "
            "evaluation; choose another out_dir or move them away"
        )


def check_out_dir(config: EvalConfig) -> None:
    """Refuses, before any work, a run whose out_dir holds the results.json of a run with other settings (or a
    results.json that is not an evaluation's), or with no results.json holds other files the run writes (a user's
    own), which its outputs would overwrite. The same settings again (a resumed or repeated run, from another data
    folder, device or cache) may write there; a setting the earlier run's file predates counts as the same when it
    has its default value. An interrupted run's cache (and a look at it, partial/) are no outputs: it resumes."""
    out = Path(config.out_dir).expanduser()
    path = out / "results.json"
    if not path.is_file():
        _check_no_outputs(config, out)
        return
    move = "choose another out_dir or move it away"
    try:
        earlier = _flat(json.loads(path.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"out_dir: {path} is not the results of an evaluation; {move}") from error
    now = _flat(as_read_back(config.to_dict()))
    defaults = _flat(as_read_back(EvalConfig().to_dict()))
    changed = [
        key for key, value in now.items() if key not in _PLACE_KEYS and earlier.get(key, defaults.get(key)) != value
    ]
    if changed:
        shown = ", ".join(
            f"{k}: {shortened(earlier.get(k, '(unset)'), 32)} -> {shortened(now[k], 32)}" for k in changed[:5]
        )
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        cache = out / "cache"
        reuse = (
            f" (with cache_dir = {str(cache)!r}, --cache-dir, the run reuses the models and attacks cached there)"
            if cache.is_dir() and not config.cache_dir
            else ""
        )
        raise ConfigError(
            f"out_dir: {path} holds the results of a run with other settings ({shown}{more}); {move}{reuse}"
        )
    _check_models_folder(config, out, earlier)


def _check_models_folder(config: EvalConfig, out: Path, earlier: dict[str, Any]) -> None:
    """Refuses a run that saves its models into an out_dir whose models folder holds files the run there before,
    which saved none (save_models = false), did not write."""
    if config.save_models and not earlier.get("save_models", True) and _holds(out / "models"):
        raise ConfigError(
            f"out_dir: {out / 'models'} holds files the run would overwrite, which the run that wrote "
            f"{out / 'results.json'} with save_models = false did not write; choose another out_dir or move them away"
        )


def check_same_data(config: EvalConfig, fingerprint: dict[str, str]) -> None:
    """Refuses, once the data are loaded and before any work, a run whose out_dir holds the results of a run with
    the same settings on other data (data_dir and the files in it are no settings): its outputs would replace those
    results. Results written before they recorded their data are not refused."""
    path = Path(config.out_dir).expanduser() / "results.json"
    try:
        earlier = json.loads(path.read_text()).get("data") or {}
    except (OSError, ValueError, AttributeError):  # none, or not an evaluation's: check_out_dir has judged it
        return
    differ = [f"{key} images" for key, digest in fingerprint.items() if earlier.get(key, digest) != digest]
    if differ:
        raise ConfigError(
            f"out_dir: {path} holds the results of a run on other data (its {' and '.join(differ)} differ); choose "
            "another out_dir or move it away (--cache-dir can still share that run's cache)"
        )


def check_folders(config: EvalConfig, cached_only: bool = False) -> None:
    """Raises ConfigError, before any work, naming out_dir or cache_dir (where set) when it cannot be made or
    written (a file of that name or above it, no permission), or out_dir when it is empty; makes nothing. A look at
    the cache (`cached_only`) only reads cache_dir: a folder it cannot write (a shared copy) is taken."""
    if not config.out_dir:  # (an empty cache_dir is <out_dir>/cache)
        raise ConfigError("out_dir is empty; give a folder (--out; default nemesis-results)")
    if cached_only and config.cache_dir and Path(config.cache_dir).expanduser().is_dir():
        keys = ("out_dir",)
    else:
        keys = ("out_dir", "cache_dir")
    for key in keys:
        if getattr(config, key):
            try:
                check_output_folder(getattr(config, key), key)
            except ValueError as error:
                raise ConfigError(str(error)) from error
