"""Helpers shared by the compat tests: a cache of the peer libraries' results, the MNIST model behind a
standardisation, for the runs with normalisation, ART's classifier around a small model, and a guard that fails a
test where a drop-in hands its call to the peer.

The peers (torchattacks, ART) are slow on a CPU (torchattacks' JSMA and ART's DeepFool take minutes on 64 images),
and deterministic for a given input, settings, model and random seed: their results are cached on disk under the
temp folder, keyed by a hash of all of these and of the peer's version, so that a later session reruns only
nemesis_fast's side. Delete the folder (or set NEMESIS_FAST_NO_PEER_CACHE=1) to rerun the peers.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from nemesis_fast._io import temp_cached
from nemesis_fast.compat._peer import PeerFallbackWarning

MEAN, STD = 0.1307, 0.3081  # MNIST's pixel mean and standard deviation


def fingerprint(*values: object) -> str:
    """A short hash of tensors, arrays, state dicts and plain values."""
    digest = hashlib.sha256()
    for value in values:
        if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            for key, tensor in value.items():
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, np.ndarray):
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=repr).encode())
    return digest.hexdigest()[:20]


def peer_result(key: str, compute: Callable[[], torch.Tensor | np.ndarray]) -> torch.Tensor | np.ndarray:
    """compute() (the peer's output for the settings that `key` hashes), cached on disk across sessions."""

    def stored() -> dict:
        value = compute()
        is_numpy = isinstance(value, np.ndarray)
        return {"value": torch.from_numpy(value) if is_numpy else value.detach().cpu(), "numpy": is_numpy}

    refresh = bool(os.environ.get("NEMESIS_FAST_NO_PEER_CACHE"))
    entry = temp_cached(f"nemesis_fast_test_cache/peers/{key}.pt", stored, refresh=refresh)
    return entry["value"].numpy() if entry["numpy"] else entry["value"]


class Standardised(nn.Module):
    """`model` on standardised inputs: maps (x - MEAN) / STD back to x first, so that it computes model(x)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z * STD + MEAN)


def clamped_linear_model() -> tuple[nn.Module, torch.Tensor, list[int]]:
    """(model, images (6, 1, 28, 28), forward-call counter): a linear model whose every class boundary lies where
    the pixel sum is negative, so that DeepFool's step lowers every pixel and, once [0, 1] clips it back, leaves an
    image where it was: the peers repeat that step until their step budget. Two images start black (stuck at
    once), four in mid-grey (stuck once their pixels reach 0). counter[0] counts the model's forward calls."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.copy_(-torch.linspace(0.0, 0.9, 10)[:, None].expand(10, 784) / 784)
        model[1].bias.copy_(torch.linspace(1.0, 0.1, 10))
    counter = [0]
    # On the layer: ART's wrapper calls the layers of an nn.Sequential one by one, not the model.
    model[1].register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    x[:2] = 0.0
    return model.eval(), x, counter


def art_classifier(model: nn.Module, shape: tuple[int, ...], classes: int, **options: Any) -> Any:
    """ART's PyTorchClassifier around `model` for (N, *shape) images and `classes` outputs, with the cross-entropy
    loss and clip_values (0, 1) unless `options` gives others (ART is imported here: the torchattacks tests run
    without it)."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, nn.CrossEntropyLoss(), shape, classes, **{"clip_values": (0.0, 1.0), **options})


@contextlib.contextmanager
def no_fallback() -> Iterator[None]:
    """Fails the test where a drop-in hands its call to the peer's own code (a PeerFallbackWarning): served."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PeerFallbackWarning)
        yield


def version_warnings(monkeypatch: Any, adapter: str, peer: Any, version: str) -> list[str]:
    """The "reproduces ..." warnings that importing `nemesis_fast.compat.<adapter>` gives afresh when the peer
    module `peer` says it is `version` (the adapter's modules and the package's attribute restored afterwards)."""
    name = f"nemesis_fast.compat.{adapter}"
    for module in list(sys.modules):
        if module.startswith(name):
            monkeypatch.delitem(sys.modules, module)
    compat = importlib.import_module("nemesis_fast.compat")
    monkeypatch.setattr(compat, adapter, getattr(compat, adapter))
    monkeypatch.setattr(peer, "__version__", version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.import_module(name)
    return [str(w.message) for w in caught if "reproduces" in str(w.message)]
