"""Session fixtures shared by the test files: the paper's MNIST CNN trained on real MNIST, MNIST test images and the
package's MNIST sample.

The data are the full MNIST beside the checkout (../shared/data/mnist, or $NEMESIS_FAST_MNIST); where it is
missing, the 10k/2k sample shipped with the package, trained for more epochs, so the attack tests never skip.
`mnist_model` trains once per machine: its weights are cached on disk under the temp folder, keyed by a hash
of the training settings, so later sessions (and other developers' runs) load them instead of retraining.
The model is shared by every test of the session: do not modify it (copy.deepcopy it first).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from _support import full_mnist_root
from torch import nn

from nemesis_fast._io import settings_digest, temp_cached
from nemesis_fast.data import load_mnist
from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR
from nemesis_fast.models import mnist_cnn
from nemesis_fast.training import train

FULL_MNIST_TRAINING = {
    "architecture": "nemesis_fast.models.mnist_cnn (the paper's MNIST CNN)",
    "data": "full MNIST",
    "train_images": 60000,
    "epochs": 1,
    "batch_size": 128,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "seed": 0,
}
SAMPLE_MNIST_TRAINING = {
    **FULL_MNIST_TRAINING,
    "data": "the package's MNIST sample",
    "train_images": 10000,
    "epochs": 5,
}
MNIST_MIN_ACCURACY = 0.97
MNIST_TEST_IMAGES = 500


def mnist_model_file(settings: dict) -> str:
    """Where, under the temp folder, `mnist_model` keeps the weights trained with `settings` (the file that
    scripts/prepare_gpu_carry.sh carries to the GPU machine)."""
    return f"nemesis_fast_test_cache/mnist_cnn_{settings_digest(settings)}.pt"


def _train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: dict) -> None:
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


@pytest.fixture(scope="session")
def mnist_source() -> tuple[Path, dict]:
    """The MNIST folder the fixtures read and the training settings that go with it."""
    root = full_mnist_root()
    if root is not None:
        return root, FULL_MNIST_TRAINING
    warnings.warn(
        "full MNIST not found in $NEMESIS_FAST_MNIST or ../shared/data/mnist: the MNIST tests use the package's "
        "10k/2k sample",
        stacklevel=1,
    )
    return MNIST_SAMPLE_DIR, SAMPLE_MNIST_TRAINING


@pytest.fixture(scope="session")
def mnist_sample() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The MNIST sample shipped with the package: ((10k training images, labels), (2k test images, labels)), uint8
    (N, 1, 28, 28) and int64 (N,)."""
    return load_mnist(MNIST_SAMPLE_DIR, "train"), load_mnist(MNIST_SAMPLE_DIR, "test")


@pytest.fixture(scope="session")
def mnist_test_set(mnist_source) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST test images (all 10,000, or the sample's 2,000) as float32 in [0, 1], shape (N, 1, 28, 28),
    and int64 labels."""
    images, labels = load_mnist(mnist_source[0], "test")
    return images.float() / 255, labels


@pytest.fixture(scope="session")
def mnist_test_data(mnist_test_set) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 500 MNIST test images as float32 in [0, 1], shape (500, 1, 28, 28), and their labels."""
    images, labels = mnist_test_set
    return images[:MNIST_TEST_IMAGES].clone(), labels[:MNIST_TEST_IMAGES].clone()


@pytest.fixture(scope="session")
def mnist_model(mnist_source, mnist_test_set) -> nn.Module:
    """The paper's MNIST CNN trained on real MNIST on the CPU (one epoch of Adam on the full set, about 25 s on
    2 cores, or five on the sample; cached), in eval mode, with at least 97% accuracy on the test images
    (checked on every session)."""
    root, settings = mnist_source
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings["seed"])
        model = mnist_cnn()

        def trained() -> dict[str, torch.Tensor]:
            _train(model, *load_mnist(root, "train"), settings)
            return model.state_dict()

        model.load_state_dict(temp_cached(mnist_model_file(settings), trained))
    model.eval()
    images, labels = mnist_test_set
    with torch.no_grad():
        accuracy = torch.cat([model(chunk).argmax(1) for chunk in images.split(2000)]).eq(labels).float().mean()
    assert accuracy >= MNIST_MIN_ACCURACY, f"MNIST test accuracy {accuracy:.4f} < {MNIST_MIN_ACCURACY}"
    return model
