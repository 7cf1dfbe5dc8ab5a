"""What both adapters share: importing the peer library with a clear error, and nemesis_fast's gradient helpers
around any logits function."""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

import torch
from torch import nn

from .._checks import check_no_inference_tensors
from .._modes import frozen
from ..attacks.base import Attack


def import_peer(module: str, pip_name: str, tested_series: tuple[str, ...], adapter: str) -> ModuleType:
    """Imports the peer library `module`, or raises an ImportError naming the package to install (where it is
    missing) or the peer's own import error (where it is installed but fails to import, e.g. a dependency of it
    missing).

    Warns once when the installed version is of none of the `tested_series` ("major.minor") whose algorithms the
    adapter reproduces, checked in tests against each (the classes still run; their results may then differ from
    that version's).
    """
    try:
        peer = importlib.import_module(module)
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError) and error.name == module:
            raise ImportError(
                f"{adapter} needs the package {pip_name!r}, which is not installed: pip install '{pip_name}' "
                f"(or pip install 'nemesis_fast[peers]')"
            ) from error
        raise ImportError(
            f"{adapter} needs the package {pip_name!r}, which is installed but fails to import: "
            f"{type(error).__name__}: {error}"
        ) from error
    version = str(getattr(peer, "__version__", ""))
    if ".".join(version.split(".")[:2]) not in tested_series:
        warnings.warn(
            f"{adapter} reproduces the algorithms of {pip_name} {', '.join(tested_series)}; "
            f"{version or 'an unknown version'} is installed, whose results may differ",
            stacklevel=3,
        )
    return peer


class GradientEngine(Attack):
    """nemesis_fast's gradient helpers (:meth:`Attack.logit_gradients`, :meth:`Attack.input_gradient`) around a
    logits function, for the adapters' own loops. Never called as an attack."""

    def __init__(self, logits: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(logits, clip=(0.0, 1.0))

    def _perturb(self, x, y, target):  # pragma: no cover - the engine is not an attack
        raise NotImplementedError("GradientEngine only lends its gradient helpers")


@contextlib.contextmanager
def frozen_parameters(model: object) -> Iterator[None]:
    """Turns off requires_grad on the parameters of `model` (when it is an nn.Module) and restores the flags on
    exit: gradients with respect to the input then build no graph for the weights. The train/eval mode is left
    alone. ValueError naming `model` where it was made inside torch.inference_mode(), as :func:`model_guard`."""
    check_no_inference_tensors(model, "model")
    with frozen(model.parameters() if isinstance(model, nn.Module) else ()):
        yield


class PeerFallbackWarning(UserWarning):
    """A compat class could not serve a call (an estimator, option or preprocessing it does not handle) and ran the
    peer library's own implementation instead: the peer's result, at the peer's speed."""
