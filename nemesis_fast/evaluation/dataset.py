"""The evaluation's data: the training and test sets its config names, cut to the config's sizes and checked
against the settings that train on the first N images."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import DataFormatError, load_cifar10, load_mnist
from ..data.mnist import MNIST_SAMPLE_DIR
from ..resume import tensor_bytes
from .config import ConfigError, EvalConfig
from .paper import MNIST_TEST_HEADS, PAPER_HEAD_IMAGES


@dataclass
class Dataset:
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    identity: dict[str, Any]  # what determines the training data, for the models' cache keys
    description: str
    # The data's identity in the keys of caches written before the keys held its content: its path, both sizes.
    legacy_identity: dict[str, Any] = field(default_factory=dict)
    paper_data: bool = False  # MNIST's test images (the files or the shipped sample): the paper's table applies
    _test_digests: dict[tuple[int, int], str] = field(default_factory=dict, repr=False)

    def fingerprint(self) -> dict[str, str]:
        """Digests of the training set and of the test images attacked, with their labels (results.json's "data")."""
        return {"train": self.identity["train_images"], "test": self.test_digest(0, len(self.test_labels))}

    def test_digest(self, start: int, stop: int) -> str:
        """What determines the test images `start:stop` and their labels, for the cache keys of the units that
        attack them: a hash of their content, so that a unit's key does not depend on how many test images the
        run takes or where the files lie."""
        if (start, stop) not in self._test_digests:
            self._test_digests[start, stop] = content_digest(self.test_images[start:stop], self.test_labels[start:stop])
        return self._test_digests[start, stop]


def _check_training_sizes(config: EvalConfig, images: int, description: str) -> None:
    """ConfigError, before any work, where a model would train on too few images (after the validation fraction):
    none left of the first N (N above the training set's size, say), or with training.compile (which drops each
    epoch's last, smaller batch) fewer than training.batch_size, so no step; for the models of all the `images`
    training images and for those of the first N."""
    t = config.training
    for key, count in {"the training set": images, **config.first_images}.items():
        rows = count - round(count * t.validation_fraction)
        if key in config.first_images and count and (count > images or rows < 1):
            raise ConfigError(
                f"{key} must be <= the {images} training images of {description} and leave one to train on"
                f" after training.validation_fraction, got {count}"
            )
        if t.compile and count and rows < t.batch_size:
            raise ConfigError(
                f"training.batch_size {t.batch_size} is more than the {rows} images a model trains on ({key} of "
                f"{description}, less training.validation_fraction): with training.compile = true no step would run"
            )


def content_digest(*tensors: torch.Tensor) -> str:
    """A hash of the tensors' dtypes, shapes and values."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(f"{tensor.dtype} {tuple(tensor.shape)};".encode())
        digest.update(tensor_bytes(tensor))
    return "sha256:" + digest.hexdigest()[:32]


def load_data(config: EvalConfig) -> Dataset:
    """The training and test sets the config names (the shipped MNIST sample when no data_dir is given)."""
    if config.synthetic:
        generator = torch.Generator().manual_seed(config.seed)
        shape = (3, 32, 32) if config.dataset == "cifar10" else (1, 28, 28)
        sizes = {"train": 50_000 if config.dataset == "cifar10" else 60_000, "test": 10_000}
        train_x = torch.randint(0, 256, (sizes["train"], *shape), dtype=torch.uint8, generator=generator)
        test_x = torch.randint(0, 256, (sizes["test"], *shape), dtype=torch.uint8, generator=generator)
        train_y = torch.randint(0, 10, (sizes["train"],), generator=generator)
        test_y = torch.randint(0, 10, (sizes["test"],), generator=generator)
        description = f"synthetic {config.dataset}-shaped data (random pixels and labels: a throughput run)"
        source = "synthetic"
    else:
        root = Path(config.data_dir).expanduser() if config.data_dir else MNIST_SAMPLE_DIR
        loader = load_mnist if config.dataset == "mnist" else load_cifar10
        try:
            train_x, train_y = loader(root, "train")
            test_x, test_y = loader(root, "test")
        except (OSError, DataFormatError) as error:  # (missing, unreadable or malformed files)
            raise ConfigError(f"data_dir: {error}") from error
        source = str(root.resolve())
        description = f"{config.dataset} from {root}" + (
            " (the sample shipped with nemesis_fast)" if not config.data_dir else ""
        )
    head = content_digest(test_x[:PAPER_HEAD_IMAGES], test_y[:PAPER_HEAD_IMAGES])
    paper_data = config.dataset == "mnist" and not config.synthetic and head in MNIST_TEST_HEADS
    if config.training.train_samples:
        train_x, train_y = train_x[: config.training.train_samples], train_y[: config.training.train_samples]
    if config.test_samples:
        test_x, test_y = test_x[: config.test_samples], test_y[: config.test_samples]
    _check_training_sizes(config, len(train_y), description)
    identity = {"dataset": config.dataset, "train": len(train_y), "train_images": content_digest(train_x, train_y)}
    legacy = {"dataset": config.dataset, "source": source, "train": len(train_y), "test": len(test_y)}
    return Dataset(train_x, train_y, test_x, test_y, identity, description, legacy, paper_data)


__all__ = ["Dataset", "load_data"]
