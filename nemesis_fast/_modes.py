"""A model's modes kept, or the model in eval mode (and its parameters frozen) for a while: every submodule's own
training flag, and every parameter's requires_grad, restored afterwards; and autograd on for a function that needs it
whatever the caller's grad mode."""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

_Function = TypeVar("_Function", bound=Callable[..., Any])


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
# [a weak reference to the object, its flag before the first block that holds it, the blocks holding it (a WeakSet of
# their tokens)]. Blocks that overlap (calls on one model from several threads, or on a model and a wrapper of it)
# each give an object back only when the last of them ends, as it was before the first: each restoring what it found
# would leave it as another block made it. Every step of the bookkeeping can be repeated, and a release that Ctrl-C
# interrupts is finished before the interrupt goes on. Where an interrupt still escapes a block (one that lands as
# the release begins), its token dies with it: the entry, held by no live block, is stale, and the next block reads
# the object's flags afresh, so no later call puts the model back in eval mode or freezes it again.
_LOCK = threading.Lock()
_HELD: dict[tuple[str, int], list] = {}


class _Block:
    """The token of one eval_mode or frozen block (weakly referenced by the entries it holds)."""

    __slots__ = ("__weakref__",)


def _hold(kind: str, objects: Iterable[Any], read: Callable[[Any], bool], token: _Block, held: list) -> None:
    with _LOCK:
        for obj in objects:
            held.append((kind, obj))  # first: the release then covers it, whether or not the token went in
            entry = _HELD.get((kind, id(obj)))
            if entry is None or entry[0]() is not obj or not entry[2]:  # none, or stale: held by no live block
                entry = _HELD[(kind, id(obj))] = [weakref.ref(obj), read(obj), weakref.WeakSet()]
            entry[2].add(token)


def _release_once(token: _Block, held: list) -> None:
    with _LOCK:
        for kind, obj in reversed(held):
            entry = _HELD.get((kind, id(obj)))
            if entry is None or entry[0]() is not obj:  # released already
                continue
            entry[2].discard(token)
            if not entry[2]:  # the last holder: the flag back first, then the entry (both safe to repeat)
                if kind == "mode":
                    obj.training = entry[1]
                else:
                    obj.requires_grad_(entry[1])
                _HELD.pop((kind, id(obj)), None)


def _release(token: _Block, held: list) -> None:
    try:
        _release_once(token, held)
    except KeyboardInterrupt:  # Ctrl-C inside the bookkeeping: finish it, then let it go on
        _release_once(token, held)
        raise


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
        token, held = _Block(), []
        try:
            _hold("mode", model.modules(), lambda m: m.training, token, held)
            model.eval()
            yield
        finally:
            _release(token, held)


@contextlib.contextmanager
def frozen(parameters: Iterable[nn.Parameter]) -> Iterator[None]:
    """`parameters` with requires_grad off inside the block, each given its flag back afterwards (when the last of
    the overlapping blocks holding it ends, as :func:`eval_mode`)."""
    token, held = _Block(), []
    try:
        _hold("flag", parameters, lambda p: p.requires_grad, token, held)
        for _, p in held:
            p.requires_grad_(False)
        yield
    finally:
        _release(token, held)


def with_autograd(function: _Function) -> _Function:
    """`function` run with autograd recording, also when called inside torch.no_grad() or torch.inference_mode()
    (a validation loop): outside inference mode, with gradients enabled. Tensors made in inference mode that the
    function saves for a backward pass must be cloned by it (autograd cannot save inference tensors)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(False), torch.enable_grad():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
