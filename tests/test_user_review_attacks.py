"""Images the model cannot take (another data set's, or without their channel dimension) fail with torch's
RuntimeError as before, now naming x's shape and what the attack expects."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.attacks import FGSM, PGD
from nemesis_fast.models import cifar_cnn, mnist_cnn


def test_mnist_images_for_a_cifar_model_name_their_shape():
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(
        RuntimeError, match=r"FGSM: the model failed on the images of x, of shape \(1, 28, 28\)"
    ) as info:
        FGSM(cifar_cnn(), 0.1)(x, y)
    layer, message = info.value.__cause__, str(info.value)  # torch's error: kept as the cause, quoted beside
    assert type(layer) is RuntimeError and f": {layer}. x must be a batch (B, ...) of the inputs" in message
    assert message.endswith("e.g. (B, channels, height, width) images of the data set it was trained on")


def test_images_without_a_channel_dimension_name_their_shape():
    x, y = torch.rand(2, 28, 28), torch.tensor([0, 1])
    with pytest.raises(RuntimeError, match=r"of shape \(28, 28\) \(x: \(2, 28, 28\)\).*x must be a batch"):
        PGD(mnist_cnn(), 0.1, 0.01, 2)(x, y)


def test_a_model_error_of_another_type_passes_unchanged():
    def model(images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("not here")

    with pytest.raises(NotImplementedError, match="^not here$"):
        FGSM(model, 0.1)(torch.rand(2, 4), torch.tensor([0, 1]))


def test_smoothing_mnist_images_with_a_cifar_model_names_their_shape():
    from nemesis_fast.certify import Smooth

    smooth = Smooth(cifar_cnn(), sigma=0.25, num_classes=10)
    with pytest.raises(RuntimeError, match=r"the model failed on noisy images of shape \(1, 28, 28\), x's images"):
        smooth.certify(torch.rand(2, 1, 28, 28), n0=4, n=8, alpha=0.001)
