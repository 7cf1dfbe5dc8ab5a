"""Under torch.use_deterministic_algorithms(True), the setting of reproducible research runs: every attack, the
feature-squeezing defense (median filter included), certification and every training recipe run, none of their
paths calling an operation that torch refuses in that mode, and the same call twice gives the same bits. Torch
refuses few operations on the CPU (its list: torch.use_deterministic_algorithms), many on CUDA, so the CUDA cases
(run by `gpu_check.sh tests`) are the ones that can find such a call. On CUDA torch also asks for
CUBLAS_WORKSPACE_CONFIG, which the fixture sets as a user must."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _attack_cases import attacks

import nemesis_fast as nf
from nemesis_fast.attacks import FGSM, JSMA, PGD, DeepFool
from nemesis_fast.certify import Smooth
from nemesis_fast.defenses import FeatureSqueezing
from nemesis_fast.models import mnist_cnn, resnet, small_resnet

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _model(device: str, activation: str = "relu") -> torch.nn.Module:
    torch.manual_seed(0)
    return mnist_cnn(activation=activation).to(device).eval()


def _images(device: str, count: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(count, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (count,), generator=generator)
    return x.to(device), y.to(device)


def _weights_of_two_runs(
    build: Callable[[], torch.nn.Module], data: tuple[torch.Tensor, torch.Tensor], device: str, **train_kwargs: Any
) -> tuple[dict[str, torch.Tensor], ...]:
    """The initial weights of `build()` under seed 0, and its weights after each of two runs of one epoch on `data`."""
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build()
        initial = {name: value.clone() for name, value in model.state_dict().items()}
        nf.train(model, data, epochs=1, device=device, log=False, progress=False, **train_kwargs)
        runs.append(model.state_dict())
    return initial, *runs


def _assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", ["relu", "brelu"])
def test_attacks_run_and_repeat(deterministic, device: str, activation: str) -> None:
    model = _model(device, activation)
    squeezed = FeatureSqueezing(model, 1, median_size=3)
    x, y = _images(device)
    cases = {  # every attack and option of the attack tests, and what they leave out
        **attacks(model),
        "jsma": JSMA(model, seed=0),
        "jsma-softmax": JSMA(model, use_logits=False, seed=0),
        "pgd-restarts": PGD(model, 0.1, 0.02, 3, restarts=2, seed=0),
        "fgsm-feature-squeezing": FGSM(squeezed, 0.3),
    }
    for name, attack in cases.items():
        first, second = attack(x, y), attack(x, y)
        assert first.shape == x.shape, name
        assert torch.equal(first, second), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("architecture", ["resnet", "small_resnet"])
def test_source_architectures_attacked_and_trained(deterministic, device: str, architecture: str) -> None:
    """The black-box sources: a ResNet (batch norm, global average pooling) and the authors' small ResNet (a
    3x3 max-pool), attacked and trained one epoch."""
    build = {"resnet": lambda: resnet(8, in_channels=1, width=8), "small_resnet": small_resnet}[architecture]
    x, y = _images(device)
    for attack in (lambda m: FGSM(m, 0.1), lambda m: DeepFool(m, max_iter=3)):
        torch.manual_seed(0)
        model = build().to(device).eval()
        assert torch.equal(attack(model)(x, y), attack(model)(x, y))
    images = (x[:4].repeat(4, 1, 1, 1) * 255).to(torch.uint8).cpu()
    _, first, second = _weights_of_two_runs(build, (images, y[:4].repeat(4).cpu()), device, batch_size=8)
    _assert_same_weights(first, second)


@pytest.mark.parametrize("device", DEVICES)
def test_certify_runs_and_repeats(deterministic, device: str) -> None:
    smooth = Smooth(_model(device), 0.3, 10)
    x, _ = _images(device, 3)
    first = smooth.certify(x, n0=20, n=200, alpha=0.001, batch_size=128, seed=3)
    second = smooth.certify(x, n0=20, n=200, alpha=0.001, batch_size=128, seed=3)
    assert torch.equal(first.counts, second.counts)
    assert torch.equal(first.prediction, second.prediction)
    assert torch.equal(first.radius, second.radius)
    assert int(first.counts.sum()) == 3 * 200
    votes = [smooth.predict(x, n=100, alpha=0.01, batch_size=64, seed=4) for _ in range(2)]
    assert torch.equal(votes[0].prediction, votes[1].prediction)
    assert torch.equal(votes[0].counts, votes[1].counts)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", ["standard", "gda", "label_smoothing", "fgsm_adversarial", "vat"])
def test_training_runs_and_repeats(deterministic, device: str, recipe: str) -> None:
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (48,), generator=generator)
    initial, first, second = _weights_of_two_runs(mnist_cnn, (images, labels), device, recipe=recipe, batch_size=16)
    assert any(not torch.equal(initial[name], value.cpu()) for name, value in first.items())  # it trained
    _assert_same_weights(first, second)
