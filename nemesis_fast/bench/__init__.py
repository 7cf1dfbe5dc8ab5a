"""Benchmarks: one module per op and per attack, each with a run(device, ...) -> Report."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .harness import Report

SUITES = ("bounded_relu", "gaussian_augment", "attacks", "training", "jsma", "certify", "compat")


def suite(name: str) -> Callable[..., Report]:
    """The run function of the benchmark `name`."""
    return importlib.import_module(f"{__name__}.{name}").run
