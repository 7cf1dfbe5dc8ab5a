"""CIFAR-10 from its Python-version batches (`cifar-10-batches-py`; Krizhevsky, 2009), read without running
code: the pickles are opened by an unpickler that builds only numpy arrays, lists, dicts, strings and numbers.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import check_choice
from ._format import DataFormatError, check_labels

FOLDER = "cifar-10-batches-py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = len(CLASSES)
IMAGE_SHAPE = (3, 32, 32)
NUM_VIS = 3 * 32 * 32
CASES_PER_BATCH = 10_000
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
META = "batches.meta"


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refuses _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ArrayToken:
    """What a pickle gets for the global numpy.ndarray: usable only as the first argument of numpy's
    _reconstruct."""


_ARRAY_TOKEN = _ArrayToken()


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 pickle may name: how numpy rebuilds arrays, dtypes and scalars, under the
    module names of numpy 1 (`numpy.core`) and numpy 2 (`numpy._core`)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    def reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
        """numpy's _reconstruct as numpy's pickles call it: an empty array (of the class the pickle names as
        numpy.ndarray, the token), which the pickle's state then fills; any other call could hand back memory no
        pickle wrote, so it is refused."""
        if cls is not _ARRAY_TOKEN or tuple(shape) != (0,):
            raise pickle.UnpicklingError("refuses an array not built as numpy pickles one (empty, then filled)")
        return multiarray._reconstruct(np.ndarray, (0,), dtype_code)

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _ARRAY_TOKEN,  # not the class: calling it would give an array of uninitialised memory
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,  # how Python 3 writes bytes at pickle protocol 2
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refuses to load the global {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                "lists, dicts, strings and numbers"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refuses persistent ids: a CIFAR-10 batch has none")


def read_batch(path: str | os.PathLike) -> dict[str, Any]:
    """A pickled CIFAR batch as a dict with str keys, unpickled without running code (latin-1, as the Python 2
    pickles of the original archive need). Raises DataFormatError naming the file when it is not one (bytes after
    the pickle included), and OSError naming it when it cannot be read."""
    path = Path(path).expanduser()
    stream = io.BytesIO(path.read_bytes())
    try:
        obj = _RestrictedUnpickler(stream, encoding="latin1").load()
    except Exception as error:  # whatever a malformed pickle raises, it is a format error
        raise DataFormatError(f"{path}: not a CIFAR-10 batch pickle: {type(error).__name__}: {error}") from error
    extra = len(stream.getbuffer()) - stream.tell()
    if extra:
        raise DataFormatError(f"{path}: {extra} unexpected bytes after the pickle")
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: unpickles to a {type(obj).__name__}, expected a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _meta_int(meta: dict[str, Any], key: str, default: int, path: Path) -> int:
    value = meta.get(key, default)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise DataFormatError(f"{path}: {key} must be a positive int, got {value!r}")
    return int(value)


def _read_meta(folder: Path) -> tuple[int, int]:
    """(cases per batch, values per image) from batches.meta; the archive's values when it is absent."""
    path = folder / META
    if not path.is_file():
        return CASES_PER_BATCH, NUM_VIS
    meta = read_batch(path)
    names = meta.get("label_names")
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != NUM_CLASSES):
        raise DataFormatError(f"{path}: label_names must list {NUM_CLASSES} classes, got {names!r}")
    num_vis = _meta_int(meta, "num_vis", NUM_VIS, path)
    if num_vis != NUM_VIS:
        raise DataFormatError(f"{path}: num_vis is {num_vis}, but CIFAR-10 images have {NUM_VIS} values (3x32x32)")
    return _meta_int(meta, "num_cases_per_batch", CASES_PER_BATCH, path), num_vis


def _labels_array(labels: Any, path: Path) -> np.ndarray:
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataFormatError(f"{path}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        return labels.astype(np.int64)
    if not isinstance(labels, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in labels
    ):
        raise DataFormatError(f"{path}: labels must be a list of ints")
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def _check_batch(batch: dict[str, Any], path: Path, cases: int, num_vis: int) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 3072) uint8 data and the N labels of one batch, each checked against the format."""
    if "labels" not in batch:
        hint = " (this looks like CIFAR-100, which names them fine_labels)" if "fine_labels" in batch else ""
        raise DataFormatError(f"{path}: has no 'labels' entry{hint}; keys: {sorted(map(str, batch))}")
    if "data" not in batch:
        raise DataFormatError(f"{path}: has no 'data' entry; keys: {sorted(map(str, batch))}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != num_vis:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"{path}: data must be a uint8 array of shape (N, {num_vis}), got a {found}")
    labels = _labels_array(batch["labels"], path)
    if len(labels) != len(data):
        raise DataFormatError(f"{path}: holds {len(data)} images but {len(labels)} labels")
    if len(data) != cases:
        raise DataFormatError(f"{path}: holds {len(data)} images, expected {cases} per batch")
    check_labels(labels, path, NUM_CLASSES)
    return data, labels


FILES_HINT = f"{FOLDER}, extracted from cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)"


def _batches_folder(root: Path) -> Path | None:
    """`root/cifar-10-batches-py` or `root`, the first that holds a first batch; None: neither."""
    for folder in (root / FOLDER, root):
        if (folder / BATCHES["test"][0]).is_file() or (folder / BATCHES["train"][0]).is_file():
            return folder
    return None


def find_folder(root: str | os.PathLike) -> Path:
    """The folder holding the batches: `root/cifar-10-batches-py` (the archive's and torchvision's layout) or
    `root` itself."""
    root = Path(root).expanduser()
    folder = _batches_folder(root)
    if folder is not None:
        return folder
    from .mnist import _found  # (here: mnist reads CIFAR-10's folders for its own hint)

    other = " It holds MNIST's IDX files: choose the dataset mnist." if _found(root, "train", "images") else ""
    raise FileNotFoundError(
        f"no CIFAR-10 batches found in {root / FOLDER} or {root}; {root} must hold {FILES_HINT}.{other}"
    )


def cifar10_files(root: str | os.PathLike, split: str) -> list[Path]:
    """The files that :func:`load_cifar10` reads for `split` under `root` (its batches and batches.meta), those
    there."""
    check_choice(split, "split", tuple(BATCHES))
    folder = _batches_folder(Path(root).expanduser())
    if folder is None:
        return []
    return [path for path in (folder / name for name in (*BATCHES[split], META)) if path.is_file()]


def load_cifar10(root: str | os.PathLike, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Loads CIFAR-10's `split` ("train": 50,000 images, "test": 10,000) from the Python-version batches.

    `root` may be the `cifar-10-batches-py` folder or the folder above it (torchvision's `root`). The
    images per batch and values per image come from `batches.meta` when it is present (10,000 and 3,072
    otherwise) and every batch is checked against them. Returns uint8 images of shape (N, 3, 32, 32) and int64
    labels of shape (N,). Raises FileNotFoundError naming what is missing, DataFormatError (a ValueError)
    naming the file when its content is not a CIFAR-10 batch, and OSError (PermissionError, say) naming what
    cannot be read; never runs code from the pickles.
    """
    check_choice(split, "split", tuple(BATCHES))
    folder = find_folder(root)
    cases, num_vis = _read_meta(folder)
    images, labels = [], []
    for name in BATCHES[split]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 {split} batch {path} is missing")
        data, batch_labels = _check_batch(read_batch(path), path, cases, num_vis)
        images.append(data)
        labels.append(batch_labels)
    stacked = np.concatenate(images).reshape(-1, *IMAGE_SHAPE)
    return torch.from_numpy(stacked), torch.from_numpy(np.concatenate(labels))
