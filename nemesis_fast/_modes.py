"""A model's modes kept, or the model in eval mode for a while: every submodule's own training flag restored
afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn


@contextlib.contextmanager
def kept_modes(model: Any) -> Iterator[None]:
    """On exit from the block (an exception's too) each submodule of `model` gets back its own training flag (not
    just the root's). A model that is not an nn.Module (a plain callable) is left alone."""
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """`model` in eval mode inside the block, its modes kept (:func:`kept_modes`)."""
    with kept_modes(model):
        if isinstance(model, nn.Module):
            model.eval()
        yield
