"""A content-addressed cache of trained models and attack results, written atomically.

Each entry is named by a hash of everything that determines it (its kind, its settings, the package
version), so a changed setting never picks up a stale entry, and an interrupted run resumes from the entries
already written. Files appear under their final name only once complete (write to a temporary file, fsync,
rename); an entry that cannot be read, or whose bytes fail the CRC-32s torch.save stored in it, is discarded and
recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import DamagedFileError, torch_load_checked, torch_save_atomic


def as_read_back(value: Any) -> Any:
    """`value` as JSON gives it back: tuples as lists, objects JSON cannot hold as their str."""
    return json.loads(json.dumps(value, default=str))


def settings_key(kind: str, settings: dict[str, Any]) -> str:
    """A short stable hash of `kind` and `settings` (JSON-serialisable)."""
    from .._version import __version__

    blob = json.dumps({"kind": kind, "settings": settings, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class ResultCache:
    """Tensors and small metadata stored under `root`/<kind>/<key>.pt.

    `legacy`, when given, maps a key's settings to the settings the same entry had under an older form of the
    keys: an entry found only under its older key is moved to its current one when it is first read.
    """

    def __init__(self, root: str | os.PathLike, legacy: Callable[[Any], Any] | None = None) -> None:
        self.root = Path(root)
        self.legacy = legacy

    def path(self, kind: str, settings: dict[str, Any]) -> Path:
        return self.root / kind / f"{settings_key(kind, settings)}.pt"

    def has(self, kind: str, settings: dict[str, Any]) -> bool:
        """Whether there is an entry for (`kind`, `settings`), under its current key or its older one."""
        return any(self.path(kind, s).is_file() for s in self._forms(settings))

    def load(self, kind: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The entry for (`kind`, `settings`), or None when there is none or it cannot be read."""
        entry, forms = self._read(kind, settings), self._forms(settings)
        if entry is not None or len(forms) == 1:
            return entry
        older = forms[1]
        entry = self._read(kind, older)
        if entry is None:  # another process may have moved it meanwhile
            return self._read(kind, settings)
        entry.pop("settings")
        try:
            self.save(kind, settings, entry)
            self.path(kind, older).unlink(missing_ok=True)
        except OSError:  # a cache this process cannot write (a shared copy, read only): read, not moved
            pass
        return {**entry, "settings": as_read_back(settings)}

    def save(self, kind: str, settings: dict[str, Any], payload: dict[str, Any]) -> Path:
        """Stores `payload` (tensors, numbers, strings, lists and dicts of them) for (`kind`, `settings`)."""
        path = self.path(kind, settings)
        torch_save_atomic(path, {**payload, "settings": as_read_back(settings)})
        return path

    def discard(self, kind: str, settings: dict[str, Any]) -> None:
        """Removes the entry for (`kind`, `settings`), under its current key and its older one."""
        for form in self._forms(settings):
            self.path(kind, form).unlink(missing_ok=True)

    def _forms(self, settings: dict[str, Any]) -> list[dict[str, Any]]:
        """`settings`, then their older form where there is one that differs."""
        older = self.legacy(settings) if self.legacy is not None else settings
        return [settings] if older == settings else [settings, older]

    def _read(self, kind: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        path = self.path(kind, settings)
        if not path.is_file():
            return None
        try:
            entry = torch_load_checked(path)
        except FileNotFoundError:  # moved by another process since
            return None
        except Exception as error:  # a damaged entry is recomputed, never trusted
            damaged = isinstance(error, DamagedFileError)
            reason = f"its record {error.record!r} fails its CRC-32" if damaged else type(error).__name__
            warnings.warn(f"discarding unreadable cache entry {path} ({reason})", RuntimeWarning, stacklevel=3)
            _remove(path)
            return None
        if not isinstance(entry, dict) or entry.get("settings") != as_read_back(settings):
            warnings.warn(f"discarding cache entry {path}: its settings do not match", RuntimeWarning, stacklevel=3)
            _remove(path)
            return None
        return entry


def _remove(path: Path) -> None:
    """Removes a discarded entry, where this process may (a cache it cannot write is read, not mended)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


class CachedCheckpoint:
    """A training run's state between epochs, kept in a cache under the key of the model it trains (for
    :func:`nemesis_fast.train`'s `checkpoint`): an interrupted evaluation resumes training where it stopped."""

    def __init__(self, cache: ResultCache, key: dict[str, Any]) -> None:
        self.cache, self.key = cache, key

    @property
    def name(self) -> str:
        """What the training's errors call this checkpoint: the cache file, for a user to remove."""
        return f"the evaluation's training state {str(self.cache.path('training', self.key))!r}"

    def load(self) -> dict[str, Any] | None:
        entry = self.cache.load("training", self.key)
        return None if entry is None else entry["state"]

    def save(self, state: dict[str, Any]) -> None:
        self.cache.save("training", self.key, {"state": state})

    def discard(self) -> None:
        self.cache.discard("training", self.key)
