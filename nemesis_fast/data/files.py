"""The files the data loaders read, for the commands that refuse an output overwriting one of them."""

from __future__ import annotations

import os
from pathlib import Path

from .cifar10 import cifar10_files
from .mnist import mnist_files

LOADER_FILES = {"mnist": mnist_files, "cifar10": cifar10_files}
SPLITS = ("train", "test")


def data_files(
    root: str | os.PathLike,
    option: str,
    datasets: tuple[str, ...] = tuple(LOADER_FILES),
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, Path]:
    """The files under `root` that the loaders of `datasets` read for `splits` (those there), each by the name an
    error gives it: `option`'s path below `root`."""
    root = Path(root).expanduser()
    paths = [path for dataset in datasets for split in splits for path in LOADER_FILES[dataset](root, split)]
    return {f"{option}'s {path.relative_to(root)}": path for path in paths}
