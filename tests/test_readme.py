"""README.md's Python examples run as written, on small budgets: each block's calls and signatures are the API's.

The examples are taken from README.md itself. Only their budgets change (fewer images, steps and samples) and
their data paths (the package's MNIST sample); each replacement must apply, so a reworded example fails here
until this file follows it. The fragments about the peers' own classes get the names they assume in a prelude.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR

README = Path(__file__).resolve().parent.parent / "README.md"

SMALL_BUDGETS = {
    "/path/to/mnist": str(MNIST_SAMPLE_DIR),
    '"gda", epochs=20)': '"gda", epochs=1, max_steps=3, log=False)',
    "[:256]": "[:4]",
    "CarliniWagnerL2(model)": "CarliniWagnerL2(model, binary_search_steps=1, max_iter=3)",
    '"clip": None})': '"clip": None}, max_steps=2, log=False)',
    "n=100_000": "n=64",
    "batch_size=10_000": "batch_size=48",
    "n=1000": "n=32",
}

CIFAR_MODEL = """
import numpy as np
import torch
from torch import nn
from nemesis_fast.models import cifar_cnn
torch.manual_seed(0)
model = cifar_cnn().eval()
images, labels = torch.rand(2, 3, 32, 32), torch.tensor([3, 5])
"""
ART_CLASSIFIER = """
from art.estimators.classification import PyTorchClassifier
m = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(3, 1, 1)
s = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(3, 1, 1)
x_test, y_test = images.numpy(), labels.numpy()
"""


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def small(block: str) -> str:
    for old, new in SMALL_BUDGETS.items():
        block = block.replace(old, new)
    return block


def test_every_budget_replacement_applies():
    text = "".join(python_blocks())
    assert len(python_blocks()) == 4
    for old in SMALL_BUDGETS:
        assert old in text, f"README's examples no longer hold {old!r}: update SMALL_BUDGETS"


def test_the_api_and_certify_examples_run():
    api, certify = python_blocks()[:2]
    namespace: dict = {}
    exec(compile(small(api), "README.md (API)", "exec"), namespace)
    x, x_adv = namespace["x"], namespace["x_adv"]
    assert x_adv.shape == x.shape == (4, 1, 28, 28) and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)  # the attack moved the images
    exec(compile(small(certify), "README.md (certified robustness)", "exec"), namespace)
    result = namespace["result"]
    assert result.radius.shape == (4,) and (result.radius >= 0).all()
    assert ((result.prediction == -1) == (result.radius == 0)).all()


def test_the_torchattacks_example_runs():
    pytest.importorskip("torchattacks")
    namespace: dict = {}
    exec(compile(CIFAR_MODEL + small(python_blocks()[2]), "README.md (torchattacks)", "exec"), namespace)
    adv_images = namespace["adv_images"]
    assert adv_images.shape == (2, 3, 32, 32) and not torch.equal(adv_images, namespace["images"])


def test_the_art_example_runs():
    pytest.importorskip("art")
    namespace: dict = {}
    exec(compile(CIFAR_MODEL + ART_CLASSIFIER + small(python_blocks()[3]), "README.md (ART)", "exec"), namespace)
    assert namespace["x_adv"].shape == namespace["x_cw"].shape == (2, 3, 32, 32)
