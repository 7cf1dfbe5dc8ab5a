"""The paper's networks and the ResNet: layer shapes, parameter counts, activations, and bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nemesis_fast.models import (
    MODELS,
    ResNet,
    architecture_of,
    build_model,
    cifar_cnn,
    mnist_cnn,
    resnet,
    small_resnet,
)
from nemesis_fast.nn import BoundedReLU


def feature_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Output shapes of every Conv2d and Linear layer, in order."""
    shapes = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    model(x)
    for h in hooks:
        h.remove()
    return shapes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mnist_cnn_is_the_papers():
    model = mnist_cnn()
    assert feature_shapes(model, torch.rand(2, 1, 28, 28)) == [(64, 14, 14), (128, 5, 5), (128, 1, 1), (10,)]
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((8, 8), (2, 2)), ((6, 6), (2, 2)), ((5, 5), (1, 1))]
    # 64*(8*8+1) + 128*(6*6*64+1) + 128*(5*5*128+1) + 10*(128+1)
    assert n_params(model) == 4160 + 295040 + 409728 + 1290
    assert sum(isinstance(m, nn.ReLU) for m in model) == 3


def test_mnist_cnn_same_padding_matches_tensorflow():
    """TF "same" with stride 2 pads (total 6 at 28 px) evenly; at odd sizes the extra row goes after."""
    torch.manual_seed(0)
    for size, pads in ((28, (3, 3, 3, 3)), (29, (3, 4, 3, 4))):
        model = mnist_cnn(input_size=size)
        conv = next(m for m in model if isinstance(m, nn.Conv2d))
        x = torch.rand(2, 1, size, size)
        expected = F.conv2d(F.pad(x, pads), conv.weight, conv.bias, stride=2)
        first = model[:2] if isinstance(model[0], nn.ZeroPad2d) else model[:1]
        torch.testing.assert_close(first(x), expected)
        assert model(x).shape == (2, 10)


def test_cifar_cnn_is_the_papers():
    model = cifar_cnn()
    assert feature_shapes(model, torch.rand(2, 3, 32, 32)) == [(32, 32, 32), (64, 14, 14), (500,), (10,)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == 2
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.5, 0.5, 0.5]
    assert n_params(model) == 896 + 18496 + (64 * 7 * 7 + 1) * 500 + 5010


def test_cifar_cnn_dropout_only_in_training():
    torch.manual_seed(0)
    model, x = cifar_cnn(), torch.rand(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("depth,blocks", [(20, 9), (32, 15), (8, 3)])
def test_resnet_depth(depth, blocks):
    model = resnet(depth)
    assert isinstance(model, ResNet)
    assert len(model.stages) == blocks
    convs = sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
    assert convs + 1 == depth  # 3x3 convolutions plus the final linear layer
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert resnet(depth, in_channels=1)(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_small_resnet_is_the_authors_source():
    model = small_resnet()
    # conv1, conv2, the block's 1x1 / 3x3 / 1x1 convolutions (the 3x3 "same"), then Dense after max-pool 3x3
    assert feature_shapes(model, torch.rand(2, 1, 28, 28)) == [
        (64, 14, 14),
        (128, 5, 5),
        (64, 5, 5),
        (64, 5, 5),
        (128, 5, 5),
        (10,),
    ]
    # 64*(8*8+1) + 128*(6*6*64+1) + 64*(128+1) + 64*(9*64+1) + 128*(64+1) + 10*(128+1)
    assert n_params(model) == 4160 + 295040 + 8256 + 36928 + 8320 + 1290 == 353_994
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    first_two = [m for m in model if isinstance(m, nn.Conv2d)][:2]
    cnn_two = [m for m in mnist_cnn() if isinstance(m, nn.Conv2d)][:2]
    assert [(c.weight.shape, c.stride) for c in first_two] == [(c.weight.shape, c.stride) for c in cnn_two]
    block = model[5]
    with torch.no_grad():  # the identity shortcut: with the branch's last conv zeroed, the block is ReLU(x)
        block.expand.weight.zero_()
        block.expand.bias.zero_()
        x = torch.randn(3, 128, 5, 5)
        assert torch.equal(block(x), torch.relu(x))
    assert small_resnet(in_channels=3, input_size=32)(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_resnet20_parameter_count():
    # He et al. report 0.27M parameters for ResNet-20 (option A shortcuts); 1x1-conv shortcuts add ~2.6k.
    assert 270_000 < n_params(resnet(20)) < 275_000


@pytest.mark.parametrize("name", list(MODELS))
def test_brelu_activation_everywhere(name):
    model = build_model(name, activation="brelu", t=0.5)
    brelus = [m for m in model.modules() if isinstance(m, BoundedReLU)]
    assert brelus and all(m.t == 0.5 for m in brelus)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert len(brelus) == sum(isinstance(m, nn.ReLU) for m in build_model(name).modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_architecture_is_recorded_and_rebuilds_identically(name):
    torch.manual_seed(0)
    model = build_model(name, activation="brelu", t=2.0)
    arch = architecture_of(model)
    assert arch["name"] == name and arch["kwargs"]["activation"] == "brelu" and arch["kwargs"]["t"] == 2.0
    clone = build_model(arch["name"], **arch["kwargs"])
    clone.load_state_dict(model.state_dict())
    x = torch.rand(2, *((1, 28, 28) if name in ("mnist_cnn", "small_resnet") else (3, 32, 32)))
    model.eval(), clone.eval()
    torch.testing.assert_close(clone(x), model(x))
    assert architecture_of(nn.Linear(2, 2)) is None


def test_gradients_reach_every_parameter():
    for model, shape in ((mnist_cnn(), (2, 1, 28, 28)), (cifar_cnn(), (2, 3, 32, 32)), (resnet(8), (2, 3, 32, 32))):
        model(torch.rand(*shape)).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation must be one of 'relu', 'brelu'"):
        mnist_cnn(activation="tanh")
    with pytest.raises(ValueError, match="t must be > 0"):
        cifar_cnn(activation="brelu", t=0)
    with pytest.raises(ValueError, match="depth must be 6n \\+ 2"):
        resnet(21)
    with pytest.raises(ValueError, match="depth must be >= 8"):
        resnet(2)
    with pytest.raises(ValueError, match="too small"):
        mnist_cnn(input_size=8)
    with pytest.raises(ValueError, match="dropout must be in"):
        cifar_cnn(dropout=1.0)
    with pytest.raises(TypeError, match="dropout must be a real number, got str"):
        cifar_cnn(dropout="0.5")  # was the comparison's TypeError, naming no argument
    with pytest.raises(ValueError, match="name must be one of"):
        build_model("vgg")


def test_the_choices_the_cli_and_the_config_take_are_exported():
    namespace: dict = {}
    exec("from nemesis_fast.models import *", namespace)
    assert namespace["ACTIVATIONS"] == ("relu", "brelu") and namespace["CONV2_PADDINGS"] == ("valid", "same")
