"""A content-addressed cache of trained models and attack results, written atomically.

Each entry is named by a hash of everything that determines it (its kind, its settings, the package
version), so a changed setting never picks up a stale entry, and an interrupted run resumes from the entries
already written. Files appear under their final name only once complete (write to a temporary file, fsync,
rename); an entry that cannot be read is discarded and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .._io import torch_save_atomic


def as_read_back(value: Any) -> Any:
    """`value` as JSON gives it back: tuples as lists, objects JSON cannot hold as their str."""
    return json.loads(json.dumps(value, default=str))


def settings_key(kind: str, settings: dict[str, Any]) -> str:
    """A short stable hash of `kind` and `settings` (JSON-serialisable)."""
    from .._version import __version__

    blob = json.dumps({"kind": kind, "settings": settings, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class ResultCache:
    """Tensors and small metadata stored under `root`/<kind>/<key>.pt."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, kind: str, settings: dict[str, Any]) -> Path:
        return self.root / kind / f"{settings_key(kind, settings)}.pt"

    def load(self, kind: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The entry for (`kind`, `settings`), or None when there is none or it cannot be read."""
        path = self.path(kind, settings)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged entry is recomputed, never trusted
            warnings.warn(f"discarding unreadable cache entry {path}: {error}", RuntimeWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        if not isinstance(entry, dict) or entry.get("settings") != as_read_back(settings):
            warnings.warn(f"discarding cache entry {path}: its settings do not match", RuntimeWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        return entry

    def save(self, kind: str, settings: dict[str, Any], payload: dict[str, Any]) -> Path:
        """Stores `payload` (tensors, numbers, strings, lists and dicts of them) for (`kind`, `settings`)."""
        path = self.path(kind, settings)
        torch_save_atomic(path, {**payload, "settings": as_read_back(settings)})
        return path

    def discard(self, kind: str, settings: dict[str, Any]) -> None:
        """Removes the entry for (`kind`, `settings`), if there is one."""
        self.path(kind, settings).unlink(missing_ok=True)


class CachedCheckpoint:
    """A training run's state between epochs, kept in a cache under the key of the model it trains (for
    :func:`nemesis_fast.train`'s `checkpoint`): an interrupted evaluation resumes training where it stopped."""

    def __init__(self, cache: ResultCache, key: dict[str, Any]) -> None:
        self.cache, self.key = cache, key

    def load(self) -> dict[str, Any] | None:
        entry = self.cache.load("training", self.key)
        return None if entry is None else entry["state"]

    def save(self, state: dict[str, Any]) -> None:
        self.cache.save("training", self.key, {"state": state})

    def discard(self) -> None:
        self.cache.discard("training", self.key)
