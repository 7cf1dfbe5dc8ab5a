"""Benchmark of one MNIST training epoch of the paper's CNN: the device-resident loader against torch's
DataLoader.

Cases: the loader alone (every batch of an epoch delivered as float32 on the device), and a full training
epoch (loader, forward, backward, Adam) of `mnist_cnn` at the paper's batch size of 128. Providers:

* DeviceLoader: the data set kept on the device as uint8; one index_select and a float conversion per batch.
* torch DataLoader: a TensorDataset of float32 images in host memory, shuffle=True, the default collate, each
  batch copied to the device: the plain way.
* torch DataLoader (4 workers, pinned): the same with worker processes, pinned memory and non-blocking copies
  (GPU only; the CPU case runs on 2 cores).

The images are the full MNIST training set when it is found ($NEMESIS_FAST_MNIST or `mnist_root`), else the
10k sample that ships with the package, repeated to `numel` images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ..data import DeviceLoader, load_mnist
from ..data.mnist import MNIST_SAMPLE_DIR
from ..models import mnist_cnn
from .harness import Case, Report, problem_size

BATCH = 128
PROVIDERS = ("DeviceLoader", "torch DataLoader", "torch DataLoader (4 workers, pinned)")
CASES = ("loader only", "train epoch")


def mnist_images(numel: int, mnist_root: str | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """`numel` MNIST training images (uint8) and labels, repeated, and which they are: the full set of `mnist_root`
    (or $NEMESIS_FAST_MNIST) where it loads, else the shipped sample, with the reason."""
    root = mnist_root or os.environ.get("NEMESIS_FAST_MNIST")
    source = f"MNIST from {root}" if root else "the shipped MNIST sample"
    try:
        images, labels = load_mnist(root, "train") if root else load_mnist(MNIST_SAMPLE_DIR, "train")
    except (OSError, ValueError) as error:  # (a timing of the loaders: any MNIST-shaped images serve)
        images, labels = load_mnist(MNIST_SAMPLE_DIR, "train")
        source = f"the shipped MNIST sample ({root} could not be read: {error})"
    repeats = -(-numel // len(labels))
    return images.repeat(repeats, 1, 1, 1)[:numel], labels.repeat(repeats)[:numel], source


def batches(
    provider: str, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> Iterable[tuple[torch.Tensor, torch.Tensor]] | str:
    """An iterable over one epoch of (x float32 on `device`, y) batches from `provider`, or why it cannot run."""
    if provider == "DeviceLoader":
        return DeviceLoader(images, labels, BATCH, seed=0, device=device)
    dataset = TensorDataset(images.float().div_(255), labels)
    if provider == "torch DataLoader":
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)
        return _OnDevice(loader, device, non_blocking=False)
    if device.type != "cuda":
        return "GPU only: worker processes and pinned memory serve host-to-device copies"
    loader = DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=4, pin_memory=True, persistent_workers=True
    )
    return _OnDevice(loader, device, non_blocking=True)


class _OnDevice:
    """Re-iterable: each pass over `loader` moves every batch to `device`."""

    def __init__(self, loader: DataLoader, device: torch.device, *, non_blocking: bool) -> None:
        self.loader, self.device, self.non_blocking = loader, device, non_blocking

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=self.non_blocking), y.to(self.device, non_blocking=self.non_blocking)


def make_provider(
    provider: str, case: str, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> Callable[[], object] | str:
    """A zero-argument callable running one epoch of `case` with `provider`, or why it cannot run here."""
    loader = batches(provider, images, labels, device)
    if isinstance(loader, str):
        return loader
    if case == "loader only":

        def epoch() -> object:
            total = torch.zeros((), device=device)
            for x, _ in loader:
                total += x[:, 0, 0, 0].sum()
            return total

        return epoch
    torch.manual_seed(0)
    model = mnist_cnn().to(device)
    optimizer = torch.optim.Adam(model.parameters(), fused=device.type == "cuda" or None)

    def train_epoch() -> object:
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return model

    return train_epoch


def run(device: torch.device | str, *, numel: int | None = None, mnist_root: str | None = None) -> Report:
    """One epoch over `numel` MNIST images (default: 60,000 on a GPU, 2,048 on a CPU) with each provider."""
    device = torch.device(device)
    numel = problem_size(numel, 60_000 if device.type == "cuda" else 2_048)
    images, labels, source = mnist_images(numel, mnist_root)
    settings = {"images": numel, "batch_size": BATCH, "data": source}
    report = Report("training epoch (MNIST, mnist_cnn)", device, settings=settings)
    for case in CASES:
        providers = {p: make_provider(p, case, images, labels, device) for p in PROVIDERS}
        report.run(Case(case, providers, baseline="torch DataLoader", items=numel, item_name="image"))
    return report
