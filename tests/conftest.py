"""Session fixtures shared by the test files: the paper's MNIST CNN trained on real MNIST, and MNIST test images.

`mnist_model` trains once per machine: its weights are cached on disk under the temp folder, keyed by a hash
of the training settings, so later sessions (and other developers' runs) load them instead of retraining.
The model is shared by every test of the session: do not modify it (copy.deepcopy it first).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from _support import mnist_root
from torch import nn

from nemesis_fast.data import load_mnist
from nemesis_fast.models import mnist_cnn
from nemesis_fast.training import train

MNIST_TRAINING = {
    "architecture": "nemesis_fast.models.mnist_cnn (the paper's MNIST CNN)",
    "train_images": 60000,
    "epochs": 1,
    "batch_size": 128,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "seed": 0,
}
MNIST_MIN_ACCURACY = 0.97
MNIST_TEST_IMAGES = 500


def _train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    settings = MNIST_TRAINING
    train(
        model,
        (images, labels),
        "standard",
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["learning_rate"],
        val_fraction=0.0,
        patience=None,
        seed=settings["seed"],
        device="cpu",
        progress=False,
        log=False,
    )
    model.eval()


def _cache_path() -> Path:
    key = hashlib.sha256(json.dumps(MNIST_TRAINING, sort_keys=True).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "nemesis_fast_test_cache" / f"mnist_cnn_{key}.pt"


@pytest.fixture(scope="session")
def mnist_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    """All 10,000 MNIST test images as float32 in [0, 1], shape (10000, 1, 28, 28), and int64 labels."""
    images, labels = load_mnist(mnist_root(), "test")
    return images.float() / 255, labels


@pytest.fixture(scope="session")
def mnist_test_data(mnist_test_set) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 500 MNIST test images as float32 in [0, 1], shape (500, 1, 28, 28), and their labels."""
    images, labels = mnist_test_set
    return images[:MNIST_TEST_IMAGES].clone(), labels[:MNIST_TEST_IMAGES].clone()


@pytest.fixture(scope="session")
def mnist_model(mnist_test_set) -> nn.Module:
    """The paper's MNIST CNN trained on real MNIST on the CPU (one epoch of Adam, about 25 s on 2 cores; cached),
    in eval mode, with at least 97% accuracy on the 10,000 test images (checked on every session)."""
    path = _cache_path()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(MNIST_TRAINING["seed"])
        model = mnist_cnn()
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:
            images, labels = load_mnist(mnist_root(), "train")
            _train(model, images, labels)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            torch.save(model.state_dict(), partial)
            partial.replace(path)
    model.eval()
    images, labels = mnist_test_set
    with torch.no_grad():
        accuracy = torch.cat([model(chunk).argmax(1) for chunk in images.split(2000)]).eq(labels).float().mean()
    assert accuracy >= MNIST_MIN_ACCURACY, f"MNIST test accuracy {accuracy:.4f} < {MNIST_MIN_ACCURACY}"
    return model
