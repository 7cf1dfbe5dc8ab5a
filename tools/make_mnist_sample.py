"""Writes the MNIST sample that ships with the package (nemesis_fast/data/mnist_sample/).

A class-balanced subset of the real MNIST files: 1,000 training images per digit (10,000) and 200 test images
per digit (2,000), drawn with a fixed seed, written in the original IDX format, gzip-compressed, so that
`load_mnist` reads it like the full set.

    python tools/make_mnist_sample.py /path/to/mnist
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import torch

from nemesis_fast.data import load_mnist
from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR

PER_CLASS = {"train": 1000, "test": 200}
FILES = {"train": "train", "test": "t10k"}


def balanced_subset(labels: torch.Tensor, per_class: int, generator: torch.Generator) -> torch.Tensor:
    picks = []
    for digit in range(10):
        candidates = (labels == digit).nonzero().squeeze(1)
        picks.append(candidates[torch.randperm(len(candidates), generator=generator)[:per_class]])
    return torch.cat(picks).sort().values


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + array.contiguous().numpy().tobytes())


def main(source: str) -> None:
    generator = torch.Generator().manual_seed(0)
    MNIST_SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    for split, prefix in FILES.items():
        images, labels = load_mnist(source, split)
        keep = balanced_subset(labels, PER_CLASS[split], generator)
        write_idx(MNIST_SAMPLE_DIR / f"{prefix}-images-idx3-ubyte.gz", images[keep].squeeze(1))
        write_idx(MNIST_SAMPLE_DIR / f"{prefix}-labels-idx1-ubyte.gz", labels[keep].to(torch.uint8))


if __name__ == "__main__":
    main(sys.argv[1])
