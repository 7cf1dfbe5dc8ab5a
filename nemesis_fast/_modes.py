"""A model's modes kept, or the model in eval mode (and its parameters frozen) for a while: every submodule's own
training flag, and every parameter's requires_grad, restored afterwards."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
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


# The modules that open eval_mode blocks hold in eval mode and the parameters they hold frozen, by kind and id:
# [the object, its flag before the first block that holds it, the number of blocks holding it]. Blocks that overlap
# (calls on one model from several threads, or on a model and a wrapper of it) each give an object back only when the
# last of them ends, as it was before the first: each restoring what it found would leave it as another block made it.
_LOCK = threading.Lock()
_HELD: dict[tuple[str, int], list] = {}


def _hold(kind: str, objects: Iterable[Any], read: Callable[[Any], bool], held: list) -> None:
    with _LOCK:
        for obj in objects:
            entry = _HELD.setdefault((kind, id(obj)), [obj, read(obj), 0])
            entry[2] += 1
            held.append((kind, obj))


def _release(held: list) -> None:
    with _LOCK:
        for kind, obj in reversed(held):
            entry = _HELD[(kind, id(obj))]
            entry[2] -= 1
            if entry[2] == 0:
                del _HELD[(kind, id(obj))]
                if kind == "mode":
                    obj.training = entry[1]
                else:
                    obj.requires_grad_(entry[1])


@contextlib.contextmanager
def eval_mode(model: Any, *, freeze: bool = False) -> Iterator[None]:
    """`model` in eval mode inside the block (with `freeze`, its parameters' requires_grad off too); afterwards each
    submodule's own training flag and each parameter's flag as it was, however the block ends. Where blocks overlap
    on a module or parameter (calls on one model from several threads, or on a model and a wrapper of it), it gets
    its flag back when the last of them ends. A model that is not an nn.Module (a plain callable) is left alone."""
    if not isinstance(model, nn.Module):
        yield
        return
    with frozen(model.parameters() if freeze else ()):
        held: list = []
        try:
            _hold("mode", model.modules(), lambda m: m.training, held)
            model.eval()
            yield
        finally:
            _release(held)


@contextlib.contextmanager
def frozen(parameters: Iterable[nn.Parameter]) -> Iterator[None]:
    """`parameters` with requires_grad off inside the block, each given its flag back afterwards (when the last of
    the overlapping blocks holding it ends, as :func:`eval_mode`)."""
    held: list = []
    try:
        _hold("flag", parameters, lambda p: p.requires_grad, held)
        for _, p in held:
            p.requires_grad_(False)
        yield
    finally:
        _release(held)
