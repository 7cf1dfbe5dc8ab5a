"""A model's modes kept, or the model in eval mode for a while: every submodule's own training flag restored
afterwards."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass
class _Held:
    """What the open :func:`eval_mode` blocks on one model keep: their count, and the model's modes (and its
    parameters' requires_grad flags, once a freezing block opened) from before the first of them."""

    count: int
    modes: list[tuple[nn.Module, bool]]
    flags: list[tuple[nn.Parameter, bool]] | None = None


_LOCK = threading.Lock()
_HELD: dict[int, _Held] = {}  # by id(model)


@contextlib.contextmanager
def eval_mode(model: Any, *, freeze: bool = False) -> Iterator[None]:
    """`model` in eval mode inside the block (with `freeze`, its parameters' requires_grad off too), and afterwards
    each submodule's own training flag (and each flag) as it was. Blocks that overlap on one model, in one thread
    or in several (an attack and a Smooth per thread on a shared model), give the model back as it was before the
    first of them, when the last one ends: each restoring what it found would leave it as another block made it.
    A model that is not an nn.Module (a plain callable) is left alone."""
    if not isinstance(model, nn.Module):
        yield
        return
    with _LOCK:
        held = _HELD.get(id(model))
        if held is None:
            held = _HELD[id(model)] = _Held(0, [(m, m.training) for m in model.modules()])
        if freeze and held.flags is None:
            held.flags = [(p, p.requires_grad) for p in model.parameters()]
        held.count += 1
        model.eval()
        if freeze:
            for p, _ in held.flags:
                p.requires_grad_(False)
    try:
        yield
    finally:
        with _LOCK:
            held.count -= 1
            if held.count == 0:
                del _HELD[id(model)]
                for module, training in held.modes:
                    module.training = training
                for p, requires_grad in held.flags or ():
                    p.requires_grad_(requires_grad)
