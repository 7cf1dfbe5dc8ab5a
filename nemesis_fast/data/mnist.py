"""MNIST from its original IDX files (LeCun, Cortes, Burges; CC BY-SA 3.0), raw or gzip-compressed."""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .._checks import check_choice
from ._format import DataFormatError, check_labels

# A class-balanced subset of MNIST (10,000 training and 2,000 test images) that ships with the package;
# see its README.txt and tools/make_mnist_sample.py.
MNIST_SAMPLE_DIR = Path(__file__).with_name("mnist_sample")
IMAGE_SIZE = 28
NUM_CLASSES = 10
_PREFIX = {"train": "train", "test": "t10k"}
_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


FILES_HINT = "the four MNIST IDX files (train-images-idx3-ubyte.gz, ...; http://yann.lecun.com/exdb/mnist/)"


KINDS = ("images", "labels")


def _folders(root: Path) -> list[Path]:
    """Where MNIST's files may lie under `root`: itself, and torchvision's layouts."""
    return [root, root / "MNIST" / "raw", root / "raw"]


def _in_folder(folder: Path, split: str, kind: str) -> Path | None:
    """The IDX file of `kind` ("images" or "labels") of `split` in `folder` (torchvision's names, raw or .gz), the
    first there, or None."""
    ndim = 3 if kind == "images" else 1
    stems = [f"{_PREFIX[split]}-{kind}-idx{ndim}-ubyte", f"{_PREFIX[split]}-{kind}.idx{ndim}-ubyte"]
    return next((path for stem in stems for ext in ("", ".gz") if (path := folder / (stem + ext)).is_file()), None)


def _split_files(root: Path, split: str) -> tuple[Path | None, Path | None]:
    """(images, labels) of `split` from the first folder under `root` that holds both, so that the two always come
    from one copy of the data; where none holds both, each file as found on its own (or None)."""
    for folder in _folders(root):
        images, labels = _in_folder(folder, split, "images"), _in_folder(folder, split, "labels")
        if images is not None and labels is not None:
            return images, labels
    found = [next((p for f in _folders(root) if (p := _in_folder(f, split, kind))), None) for kind in KINDS]
    return found[0], found[1]


def _found(root: Path, split: str, kind: str) -> Path | None:
    """The IDX file of `kind` that :func:`load_mnist` reads (or would name), or None."""
    return _split_files(root, split)[KINDS.index(kind)]


def _find(root: Path, split: str) -> tuple[Path, Path]:
    """The images and labels files of `split` under `root`, from one folder; FileNotFoundError saying where it
    looked, or that the two lie in two folders."""
    images, labels = _split_files(root, split)
    if images is not None and labels is not None:
        if images.parent != labels.parent:
            raise FileNotFoundError(
                f"no folder holds both MNIST {split} files: {images} and {labels} lie in two folders, which may hold "
                "two different copies; put both files of a split into one folder"
            )
        return images, labels
    kind = "images" if images is None else "labels"
    folders = ", ".join(str(f) for f in _folders(root))
    from .cifar10 import _batches_folder  # (here: cifar10 reads MNIST's folders for its own hint)

    other = " It holds CIFAR-10's batches: choose the dataset cifar10." if _batches_folder(root) else ""
    stem = f"{_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    raise FileNotFoundError(
        f"no MNIST {split} {kind} file found; looked for {stem}[.gz] in {folders}. "
        f"Put {FILES_HINT} into one of these folders.{other}"
    )


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed where they are gzip's (by their first two bytes, whatever the name says).
    OSError (naming the path) where it cannot be read; DataFormatError where its gzip data are damaged."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataFormatError(f"{path}: cannot be read as gzip data ({error})") from error


def mnist_files(root: str | os.PathLike, split: str) -> list[Path]:
    """The IDX files (images, labels) that :func:`load_mnist` reads for `split` under `root`, those there."""
    check_choice(split, "split", tuple(_PREFIX))
    return [path for path in _split_files(Path(root).expanduser(), split) if path is not None]


def read_idx(path: str | os.PathLike, expected_ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file as a numpy array, with its magic number, shape and size checked."""
    path = Path(path).expanduser()
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code != _UBYTE:
        raise DataFormatError(
            f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()}, expected 0000{_UBYTE:02x}0{expected_ndim})"
        )
    if ndim != expected_ndim:
        raise DataFormatError(f"{path}: has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{path}: truncated inside its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)  # Python ints: a foreign header cannot overflow the count
    found = len(data) - header
    if found < expected:
        raise DataFormatError(f"{path}: truncated: header promises {shape} = {expected} bytes of data, found {found}")
    if found > expected:
        raise DataFormatError(f"{path}: {found - expected} unexpected bytes after the {shape} data")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(root: str | os.PathLike, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Loads MNIST's `split` ("train": 60,000 images, "test": 10,000) from the IDX files under `root`.

    `root` may hold the files itself or in torchvision's `MNIST/raw` layout (images and labels from one folder);
    each file may be raw or gzip-compressed. Returns uint8 images of shape (N, 1, 28, 28) and int64 labels of
    shape (N,). Raises FileNotFoundError naming where it looked, DataFormatError (a ValueError) naming the file
    when a header, size, count or label is wrong, and OSError (PermissionError, say) naming what cannot be read.
    """
    check_choice(split, "split", tuple(_PREFIX))
    root = Path(root).expanduser()
    if root.is_file():
        raise FileNotFoundError(f"MNIST folder {root} is a file; pass the folder that holds the IDX files")
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST folder {root} does not exist")
    images_path, labels_path = _find(root, split)
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataFormatError(f"{images_path}: images are {images.shape[1:]}, expected ({IMAGE_SIZE}, {IMAGE_SIZE})")
    if len(images) != len(labels):
        raise DataFormatError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    check_labels(labels, labels_path, NUM_CLASSES)
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
