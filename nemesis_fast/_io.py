"""Atomic file writes (a file is either absent, its old content, or its complete new content, never half), and a
value computed once and kept under the temp folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()  # read once, at import: os.umask can only be read by setting it
STALE_SECONDS = 86_400  # a temporary file unchanged for a day belongs to a writer that died (SIGKILL, power loss)
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # write_atomic's: .<name>.<mkstemp's 8 characters>.tmp
_swept: set[Path] = set()  # the folders this process has swept


def _remove_stale_temporaries(folder: Path, now: float) -> None:
    """Removes, once per process and folder, the temporary files of write_atomic that a killed writer left there:
    unchanged for STALE_SECONDS, by the folder's own clock `now` (a file system's, which may be another machine's)."""
    if folder in _swept:
        return
    _swept.add(folder)
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if _TEMPORARY.fullmatch(entry.name) and now - entry.stat().st_mtime > STALE_SECONDS:
                    Path(entry.path).unlink(missing_ok=True)
    except OSError:  # not ours to remove, or a folder that cannot be listed: the write goes on
        pass


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` through a temporary file in the same folder, flushed to disk, then renamed onto `path`.

    The file gets the permissions of the file it replaces, or else those a plain open() would give it (0o666 less
    the process's umask), not the owner-only ones of the temporary file. The first write of a process into a folder
    removes the temporary files there that a killed writer left (unchanged for STALE_SECONDS). A leading ~ is the
    home folder, as the checks of output paths take it."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _remove_stale_temporaries(path.parent, os.fstat(fd).st_mtime)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is not None:
            raise
        raise OSError(error.errno, f"{error.strerror} (writing {path})") from error  # a full disk names no file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_folder(path: str | os.PathLike, name: str) -> Path:
    """`path` as a folder to write into, checked before a long job rather than when it ends: a folder, or one that
    can be made (its nearest existing ancestor is a writable folder). Makes nothing. ValueError naming `name`."""
    if not os.fspath(path):
        raise ValueError(f"{name} is empty; give a folder")
    folder = Path(path).expanduser()
    chain = (folder, *folder.parents)
    existing = next((p for p in chain if p.exists()), Path("."))  # it, or its nearest ancestor
    for missing in chain[: chain.index(existing)] if existing in chain else chain:
        if missing.is_symlink():
            raise ValueError(f"{name}: {str(missing)!r} is a link to a path that does not exist")
        if missing.name == "..":  # the system cannot go up out of a folder that is not there
            raise ValueError(f"{name}: {str(folder)!r} goes up ('..') out of a folder that does not exist")
    if not existing.is_dir():
        raise ValueError(f"{name}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "folder" if existing == folder else f"folder {str(folder)!r} cannot be made: the folder"
        raise ValueError(f"{name}: the {what} {str(existing)!r} is not writable")
    return folder


def check_checkpoint_path(path: str | os.PathLike, name: str) -> None:
    """ValueError naming the option `name` where `path` is a folder or does not exist: a checkpoint to read, checked
    before any work (whether it is a checkpoint is for its loader to say)."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "Is a folder, not a checkpoint file" if file.is_dir() else "No such file"
        raise ValueError(f"{name}: {what}: {str(path)!r}")


def check_output_file(path: str | os.PathLike, name: str) -> Path:
    """`path` as a file to write at the end of a long job, checked now: not empty, not a folder, not a
    write-protected file, in a folder that exists and is writable, or can be made. Makes nothing. ValueError naming
    `name` otherwise."""
    if not os.fspath(path):
        raise ValueError(f"{name} is empty; give the name of a file")
    file = Path(path).expanduser()
    if file.is_dir():
        raise ValueError(f"{name}: {str(file)!r} is a folder; give the name of a file")
    if file.exists() and not os.access(file, os.W_OK):
        raise ValueError(f"{name}: {str(file)!r} is write-protected; give another path, or make it writable")
    check_output_folder(file.parent, name)
    return file


def refuse_existing(paths: Mapping[str, str | os.PathLike | None], flag: str = "--overwrite") -> None:
    """ValueError naming the option where a file of `paths` (option -> path; None or "": not given) exists: a
    command replaces a user's file only when told to by `flag`."""
    for name, path in paths.items():
        if path and Path(path).expanduser().exists():
            raise ValueError(f"{name}: {str(path)!r} exists; pass {flag} to replace it, or give another path")


def same_command_again(paths: Mapping[str, str | os.PathLike | None], overwrite: bool) -> str:
    """How an interrupted command that refuses existing outputs (see :func:`refuse_existing`) is run again: "the same
    command", or, where it had written some of `paths` (option -> path) already, the same with --overwrite (the
    rerun would refuse them otherwise)."""
    written = [name for name, path in paths.items() if path and Path(path).expanduser().exists()]
    if overwrite or not written:
        return "the same command"
    which = " and ".join(written) if len(written) <= 2 else f"{len(written)} of its outputs"
    return f"the same command with --overwrite (it had written {which})"


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct_files(paths: Mapping[str, str | os.PathLike | None]) -> None:
    """`paths` (option -> path; None or "": not given) checked to name different files, so that no output
    overwrites an input or another output: the same path once resolved (links followed), or two names of one
    existing file, raise ValueError naming both options."""
    given = [(name, Path(path).expanduser()) for name, path in paths.items() if path]
    for i, (name, path) in enumerate(given):
        for earlier, earlier_path in given[:i]:
            if _same_file(earlier_path, path):
                raise ValueError(f"{earlier} and {name} name the same file {str(path)!r}; give them different files")


def write_json_atomic(path: str | os.PathLike, data: Any, *, allow_nan: bool = True) -> None:
    """Writes `data` as indented JSON, atomically. `allow_nan=False`: a NaN or infinite float raises ValueError
    (strict JSON has no such values) rather than being written as NaN or Infinity."""
    write_atomic(path, json.dumps(data, indent=2, allow_nan=allow_nan).encode())


def torch_save_atomic(path: str | os.PathLike, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


class DamagedFileError(ValueError):
    """A torch file whose bytes are not those written: its record `record` fails the CRC-32 stored beside it."""

    def __init__(self, path: str | os.PathLike, record: str) -> None:
        super().__init__(f"{os.fspath(path)!r} is damaged: its record {record!r} fails its CRC-32")
        self.path, self.record = os.fspath(path), record


def check_archive(path: str | os.PathLike, data: bytes | None = None) -> None:
    """DamagedFileError where a record of the zip archive torch.save wrote at `path` (its bytes `data`, where read
    already) fails its CRC-32 (bit rot, a bad copy, a partial overwrite inside a tensor's bytes: torch.load checks
    none and would read them as numbers). Records stored without a CRC (torch.serialization.set_crc32_options(False)
    writes 0) and files that are no zip archive (torch's legacy format) are left to torch.load."""
    try:
        archive = zipfile.ZipFile(path if data is None else io.BytesIO(data))
    except zipfile.BadZipFile:
        return
    with archive:
        for record in archive.infolist():
            if record.CRC == 0:
                continue
            try:
                with archive.open(record) as stream:
                    while stream.read(1 << 24):
                        pass
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise DamagedFileError(path, record.filename) from error


def torch_load_checked(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """torch.load(weights_only=True) of `path` after :func:`check_archive`: a damaged file raises DamagedFileError
    rather than loading changed numbers. The file is read once, for both."""
    data = Path(path).read_bytes()
    check_archive(path, data)
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def settings_digest(settings: Any) -> str:
    """A short, stable hash (16 hex digits) of JSON-serialisable settings, for cache file names."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def temp_cached(relative_path: str | os.PathLike, compute: Callable[[], Any], *, refresh: bool = False) -> Any:
    """compute()'s value (anything torch.save stores, tensors on the CPU), kept at `relative_path` under the temp
    folder: the first call computes and writes it atomically, later calls (other processes and sessions too) read
    it back. `refresh=True` computes it again and overwrites the stored value. The caller names the file after
    everything the value depends on (see :func:`settings_digest`).

    Processes that ask for the same value at once (parallel test workers, say) take turns on a lock file beside it:
    one computes, the others then read what it wrote, rather than each computing it on cores they share."""
    path = Path(tempfile.gettempdir()) / relative_path
    if path.is_file() and not refresh:
        return torch.load(path, map_location="cpu", weights_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_name(path.name + ".lock")):
        if path.is_file() and not refresh:  # computed by another process while this one waited
            return torch.load(path, map_location="cpu", weights_only=True)
        value = compute()
        torch_save_atomic(path, value)
    return value


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive lock on `lock_path` (POSIX; elsewhere, no lock: a value may then be computed twice)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
