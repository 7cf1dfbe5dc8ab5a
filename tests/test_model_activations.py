"""Where the activations sit in the paper's networks and the ResNet: after every conv / Dense layer the paper lists,
after the ResNet stem, and after (not before) a basic block's residual sum."""

from __future__ import annotations

import torch
from torch import nn

from nemesis_fast.models import BasicBlock, cifar_cnn, mnist_cnn, resnet, small_resnet
from nemesis_fast.nn import BoundedReLU


def _kinds(model: nn.Sequential) -> list[str]:
    names = {nn.Conv2d: "conv", nn.Linear: "dense", nn.ReLU: "act", BoundedReLU: "act", nn.MaxPool2d: "pool"}
    return [names[type(m)] for m in model if type(m) in names]


def test_the_cnns_have_an_activation_after_each_hidden_layer():
    assert _kinds(mnist_cnn()) == ["conv", "act", "conv", "act", "conv", "act", "dense"]
    assert _kinds(cifar_cnn()) == ["conv", "act", "pool", "conv", "act", "pool", "dense", "act", "dense"]
    # cifar_cnn's Dense 500 is bounded too: its output feeds the last layer through BReLU(t)
    model = cifar_cnn(activation="brelu", t=0.5).eval()
    hidden = []
    model[-2].register_forward_hook(lambda m, i, o: hidden.append(o))  # the dropout after the activation
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32) * 50)
    assert hidden[0].min() >= 0 and hidden[0].max() <= 0.5


def test_the_resnet_counts_one_activation_per_conv_stage_the_paper_describes():
    # ResNet-20: the stem's activation and two per basic block (9 blocks): 19
    assert sum(isinstance(m, nn.ReLU) for m in resnet(20).modules()) == 19
    assert sum(isinstance(m, nn.ReLU) for m in small_resnet().modules()) == 5
    stem = resnet(8, activation="brelu", t=0.25).stem.eval()
    with torch.no_grad():
        out = stem(torch.randn(2, 3, 8, 8) * 10)
    assert out.min() >= 0 and out.max() <= 0.25


def test_a_basic_block_applies_its_activation_after_the_residual_sum():
    torch.manual_seed(0)
    for cin, cout, stride in ((4, 4, 1), (4, 8, 2)):
        block = BasicBlock(cin, cout, stride, lambda: BoundedReLU(0.5)).eval()
        with torch.no_grad():
            out = block(torch.randn(3, cin, 8, 8) * 5)
        assert out.min() >= 0 and out.max() <= 0.5
