"""The robustness evaluation: the paper's tables from one call, on one process or many (torchrun).

    results = nemesis_fast.evaluate()                         # the shipped MNIST sample, small budgets
    results = nemesis_fast.evaluate("my.toml", data_dir=...)  # a config file, with top-level overrides

Outputs (under out_dir): results.json (every number, the config and the package version), results.csv,
results.md, whitebox.png (accuracy against eps), examples.png (clean and adversarial images), blackbox_eps.png
(the black-box eps sweep, where the config has one), perturbation.png (the minimal perturbations, where the config
asks for them) and, with a [certify] section, certified.png and certified.csv (certified accuracy by randomized
smoothing); unless the config sets save_models = false, models/<name>.pt: every trained model as a checkpoint
(nemesis_fast.checkpoints).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import torch

from .._checks import check_bool
from ..parallel import start, stop
from .config import DATASET_DEFAULTS, OUTPUT_FILES, PRESETS_DIR, ConfigError, EvalConfig, preset_names
from .folders import check_folders, check_out_dir, check_same_data
from .load import config_with_overrides, load_config, setting_hint
from .plots import plot_examples
from .report import Results, summary, write_outputs
from .runner import Evaluation


def preset_path(name: str) -> Path:
    """The config file of a shipped preset ("quick": a few minutes on a CPU; "paper": the authors' experiment;
    "paper_table": its black-box table with the attack settings the paper's Table 1 was made with, and FGSM
    adversarial training on the examples of a CNN trained on 1,000 images, as the table's model most likely was;
    "paper_weak_source": that table from a source as weak as the authors', FGSM adversarial training on the
    standard CNN's examples; "paper_gpu_check": paper's models and black-box table on the first 1,000 test images,
    for one call of a GPU machine; "paper_cifar10": the authors' experiment on CIFAR-10, their CIFAR-10 CNN and
    feature squeezing at 3 bits; "paper_headline": the settings read from the paper's text)."""
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(preset_names())
        raise ConfigError(f"preset {name!r} does not exist; choose from {known}")
    return path


def _stderr(message: str) -> None:
    sys.stderr.write(f"{message}\n")  # one write: lines of several processes do not interleave
    sys.stderr.flush()


def _known(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that are given (not None), each a top-level setting of EvalConfig (ConfigError otherwise)."""
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        known = ", ".join(sorted(names))
        hint = setting_hint(unknown[0], names, top_level=True)
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; the top-level settings: {known}{hint}")
    return {key: value for key, value in overrides.items() if value is not None}


def evaluate(
    config: EvalConfig | str | os.PathLike | None = None,
    *,
    log: bool = True,
    progress: bool | None = None,
    cached_only: bool = False,
    **overrides: Any,
) -> Results:
    """Trains or loads the models, runs the white-box and black-box attacks, writes and returns the results.

    Args:
        config: an EvalConfig, a TOML/JSON config file, or None: the "quick" preset when no data_dir is
            given (the MNIST sample shipped with the package), else EvalConfig's defaults (the
            "paper_headline" preset's settings; the authors' own experiment is the "paper" preset).
        log: print progress lines and the final tables to stderr/stdout (process 0 only).
        progress: tqdm bars; None: when stderr is a terminal.
        cached_only: train and compute nothing: report what the run's cache holds so far (the models already
            trained, the cells all of whose chunks are cached), in `<out_dir>/partial/` (the models already
            trained in its `models/`), leaving the run's own outputs alone. In one process (not under torchrun);
            may run beside the run it reports.
        overrides: top-level settings (data_dir, dataset, out_dir, device, test_samples, synthetic...); a
            section given as a dict (e.g. ``certify={"n": 1000}``) updates that section's settings, keeping its
            others.

    Every setting is checked before any work starts (ConfigError, a ValueError, naming the key). Under
    torchrun the models to train are shared out among the processes (each trained once, by one process, and
    broadcast to all), the test set is sharded across the processes and the results are gathered on all of them;
    only process 0 writes files. The CPU threads the run sets (`threads`) and the seeds it sets are the run's
    own: torch's thread count and random generators (the CPU's and the run's GPU's) are given back as they were.
    """
    if isinstance(config, EvalConfig):  # checked as a file's settings are, with the overrides
        config = config_with_overrides(config, _known(overrides))
    elif config is None or isinstance(config, (str, os.PathLike)):
        if config is None and not overrides.get("data_dir"):
            config = preset_path("quick")
        config = load_config(config, overrides)
    else:
        raise TypeError(f"config must be an EvalConfig, a config file's path or None, got {type(config).__name__}")
    check_bool(cached_only, "cached_only")
    check_bool(log, "log")
    if progress is not None:
        check_bool(progress, "progress")
    # A look at the cache (cached_only) writes its report under <out>/partial, guarded as out_dir is.
    partial = str(Path(config.out_dir).expanduser() / "partial")
    writes = dataclasses.replace(config, out_dir=partial) if cached_only else config
    check_folders(config, cached_only)
    check_out_dir(writes)
    progress = sys.stderr.isatty() if progress is None else progress
    say = _stderr if log else (lambda message: None)
    threads, cpu_rng = torch.get_num_threads(), torch.get_rng_state()  # the caller's, given back at the end
    try:
        workers = start(config.device, config.threads)
    except ValueError as error:  # NEMESIS_FAST_WAIT_HOURS under torchrun, or a device this process cannot use
        torch.set_num_threads(threads)
        raise ConfigError(str(error)) from error
    device = workers.device
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        evaluation = Evaluation(config, workers, log=say, progress=progress)
        check_same_data(writes, evaluation.data.fingerprint())
        if workers.is_main:
            say(f"nemesis_fast evaluate: {evaluation.data.description}")
            say(f"{workers.world_size} process(es), {workers.threads} thread(s) each, device {workers.device}")
        results = evaluation.run(cached_only=cached_only)
        if workers.is_main:
            out = Path(config.out_dir).expanduser() / ("partial" if cached_only else "")
            paths = write_outputs(results, out)
            if config.blackbox_attacks and not cached_only:
                clean, adversarial, labels, predictions, title = evaluation.examples()
                paths["examples"] = out / OUTPUT_FILES["examples"]
                plot_examples(clean, adversarial, labels, predictions, paths["examples"], title)
            if config.save_models:
                saved = evaluation.save_models(out / "models", results)
                paths |= {f"model {name}": path for name, path in saved.items()}
            if log:
                print(summary(results), flush=True)
                print("written: " + ", ".join(str(p) for p in paths.values()), flush=True)
    finally:
        stop(workers)
        torch.set_num_threads(threads)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
    return results


__all__ = [
    "DATASET_DEFAULTS",
    "ConfigError",
    "EvalConfig",
    "Results",
    "evaluate",
    "load_config",
    "preset_path",
]
