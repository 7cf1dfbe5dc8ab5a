"""The older form of the evaluation's cache keys, for reading caches written before the keys were narrowed to what
determines an entry (:class:`~nemesis_fast.evaluation.cache.ResultCache`'s `legacy`: an entry found only under its
older key is moved to its current one).

The older keys held, besides what they hold now: the data's path and both sets' sizes in place of the training set's
digest, and no digest of a chunk's images; every attack's `<attack>_test_samples`; the source's architecture and depth
in the training settings of every model; BReLU's t in the architecture of the ReLU models; the squeeze bits in the
key of every defense's units. Each is put back here as this run's config has it, which is the key the older code
computed for this run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .attack import all_attack_settings, attack_settings
from .cache import as_read_back
from .config import EvalConfig
from .dataset import Dataset
from .train import SOURCE

_SOURCE_SETTINGS = ("source_architecture", "source_depth")


def older_form(settings: Any, config: EvalConfig, data: Dataset) -> Any:
    """The cache key `settings` (any part of one) as the keys were before they were narrowed, for `config`'s run on
    `data`."""
    if isinstance(settings, list):
        return [older_form(v, config, data) for v in settings]
    if not isinstance(settings, dict):
        return settings
    if settings == data.identity:
        return data.legacy_identity
    older = {k: older_form(v, config, data) for k, v in settings.items() if k != "test_images"}
    attack = older.get("attack")
    if isinstance(attack, str) and as_read_back(older.get("settings")) == as_read_back(attack_settings(config, attack)):
        older["settings"] = all_attack_settings(config, attack)
    if {"model", "training", "architecture_kwargs"} <= older.keys():  # a model's key
        if older["model"] != SOURCE:
            training = dataclasses.asdict(config.training)
            older["training"] = {**older["training"], **{k: training[k] for k in _SOURCE_SETTINGS}}
        if older["architecture_kwargs"].get("activation") == "relu":
            older["architecture_kwargs"] = {**older["architecture_kwargs"], "t": config.defense.brelu_t}
    judge = "name" in older and "model" in older  # a defense judging black-box examples, its model's key merged
    if ("defense_name" in older or judge) and "squeeze_bits" not in older:
        older["squeeze_bits"] = config.squeeze_bits
    return older
