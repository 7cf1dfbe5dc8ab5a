"""The networks of the paper (Zantedeschi et al., 2017), the authors' small ResNet that crafted their black-box
attacks, and a CIFAR-style ResNet.

Every builder takes `activation="relu"|"brelu"` and the BReLU threshold `t`, expects images in [0, 1]
(no normalisation layer) and returns logits. The model it returns records how it was built in
`model.architecture = {"name": ..., "kwargs": {...}}`, which checkpoints store and check on loading.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import marshal
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_choice, check_int, check_number, check_positive
from .nn import BoundedReLU

__all__ = [
    "ACTIVATIONS",
    "CONV2_PADDINGS",
    "MODELS",
    "BasicBlock",
    "BottleneckIdentityBlock",
    "ResNet",
    "activation_factory",
    "architecture_of",
    "build_model",
    "cifar_cnn",
    "live_architecture",
    "mnist_cnn",
    "resnet",
    "small_resnet",
]

ACTIVATIONS = ("relu", "brelu")
CONV2_PADDINGS = ("valid", "same")  # cifar_cnn's second convolution


def activation_factory(activation: str, t: float = 1.0) -> Callable[[], nn.Module]:
    """A function making a fresh activation module: nn.ReLU for "relu", BoundedReLU(t) for "brelu"."""
    check_choice(activation, "activation", ACTIVATIONS)
    t = check_positive(t, "t")
    if activation == "brelu":
        return lambda: BoundedReLU(t)
    return nn.ReLU


def _record(model: nn.Module, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """`model` with the record of its builder, numpy numbers among the kwargs as Python's (so that checkpoints,
    which load only plain types, and JSON take them)."""
    model.architecture = {
        "name": name,
        "kwargs": {k: v.item() if isinstance(v, np.generic) else v for k, v in kwargs.items()},
    }
    return model


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) along one axis: the output has ceil(size / stride) cells."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"input_size is too small for this network: a {kernel}x{kernel} kernel meets {size} pixels")
    return out


def _check_image_io(in_channels: int, input_size: int, num_classes: int) -> None:
    """The input and output sizes every builder of square images takes, checked (ValueError naming them)."""
    check_int(in_channels, "in_channels", low=1)
    check_int(input_size, "input_size", low=1)
    check_int(num_classes, "num_classes", low=2)


def mnist_cnn(
    *, activation: str = "relu", t: float = 1.0, in_channels: int = 1, input_size: int = 28, num_classes: int = 10
) -> nn.Sequential:
    """The paper's MNIST network: Conv 64 8x8 stride 2 "same", Conv 128 6x6 stride 2 "valid", Conv 128 5x5
    "valid", each followed by the activation, then Dense `num_classes`.

    On 28x28 inputs the feature maps are 14x14, 5x5 and 1x1. Input (B, in_channels, input_size, input_size).
    """
    kwargs = dict(activation=activation, t=t, in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    act = activation_factory(activation, t)
    _check_image_io(in_channels, input_size, num_classes)
    before, after = _same_padding(input_size, 8, 2)
    if before == after:
        first: list[nn.Module] = [nn.Conv2d(in_channels, 64, 8, stride=2, padding=before)]
    else:
        first = [nn.ZeroPad2d((before, after, before, after)), nn.Conv2d(in_channels, 64, 8, stride=2)]
    size = _conv_out(_conv_out(-(-input_size // 2), 6, 2), 5)
    model = nn.Sequential(
        *first,
        act(),
        nn.Conv2d(64, 128, 6, stride=2),
        act(),
        nn.Conv2d(128, 128, 5),
        act(),
        nn.Flatten(),
        nn.Linear(128 * size * size, num_classes),
    )
    return _record(model, "mnist_cnn", kwargs)


def cifar_cnn(
    *,
    activation: str = "relu",
    t: float = 1.0,
    in_channels: int = 3,
    input_size: int = 32,
    num_classes: int = 10,
    dropout: float = 0.5,
    conv2_padding: str = "valid",
) -> nn.Sequential:
    """The paper's CIFAR-10 network: Conv 32 3x3 ("same"), max-pool 2, dropout, Conv 64 3x3 (`conv2_padding`),
    max-pool 2, dropout, Dense 500, dropout, Dense `num_classes`; the activation after each conv and Dense 500.

    conv2_padding="valid" (the default, this package's first reading of the network): 32 -> 32 -> 16 -> 14 -> 7,
    Dense 500 on 3,136 features (1,592,902 parameters on CIFAR-10); "same" (the authors' scripts, `cifar10_layers`
    in src/classifiers/cnn.py from bbbc14615, 6 July 2017): 32 -> 32 -> 16 -> 16 -> 8, Dense 500 on 4,096
    (2,072,902 parameters). The first convolution pads "same" either way, as in those scripts.
    """
    kwargs = dict(activation=activation, t=t, in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    act = activation_factory(activation, t)
    _check_image_io(in_channels, input_size, num_classes)
    kwargs["dropout"] = dropout = check_number(dropout, "dropout")  # a real number (TypeError naming it), finite
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    check_choice(conv2_padding, "conv2_padding", CONV2_PADDINGS)
    if conv2_padding != "valid":  # recorded only where it is not the default: checkpoints written before stay alike
        kwargs["conv2_padding"] = conv2_padding
    size = (input_size // 2 if conv2_padding == "same" else _conv_out(input_size // 2, 3)) // 2
    if size < 1:
        least = 4 if conv2_padding == "same" else 8
        raise ValueError(
            f"input_size {input_size} is too small for the CIFAR-10 network with conv2_padding {conv2_padding!r} "
            f"(at least {least})"
        )
    model = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
        nn.Conv2d(32, 64, 3, padding=1 if conv2_padding == "same" else 0),
        act(),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(64 * size * size, 500),
        act(),
        nn.Dropout(dropout),
        nn.Linear(500, num_classes),
    )
    return _record(model, "cifar_cnn", kwargs)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (1x1 convolution where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = act()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """He et al.'s CIFAR ResNet: a 3x3 stem, three stages of (depth - 2) / 6 basic blocks with `width`,
    2 * width and 4 * width channels (stride 2 between stages), global average pooling, a linear layer."""

    def __init__(
        self, depth: int, *, act: Callable[[], nn.Module], in_channels: int, num_classes: int, width: int
    ) -> None:
        super().__init__()
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), act())
        layers: list[nn.Module] = []
        cin = width
        for stage in range(3):
            cout = width * 2**stage
            for block in range(blocks):
                layers.append(BasicBlock(cin, cout, 2 if stage > 0 and block == 0 else 1, act))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def resnet(
    depth: int = 20,
    *,
    activation: str = "relu",
    t: float = 1.0,
    in_channels: int = 3,
    num_classes: int = 10,
    width: int = 16,
) -> ResNet:
    """A ResNet-`depth` (20 by default; depth = 6n + 2: 20, 32, 44, 56, 110...), the source model of
    black-box attacks. Any input size works (global average pooling); in_channels=1 for MNIST."""
    kwargs = dict(depth=depth, activation=activation, t=t, in_channels=in_channels, num_classes=num_classes)
    kwargs["width"] = width
    act = activation_factory(activation, t)
    check_int(depth, "depth", low=8)
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110...), got {depth}")
    check_int(in_channels, "in_channels", low=1)
    check_int(num_classes, "num_classes", low=2)
    check_int(width, "width", low=1)
    model = ResNet(depth, act=act, in_channels=in_channels, num_classes=num_classes, width=width)
    return _record(model, "resnet", kwargs)


class BottleneckIdentityBlock(nn.Module):
    """Keras' identity block without batch norm: 1x1 `mid`, 3x3 `mid` ("same"), 1x1 back to `channels`, each
    with a bias; the input added; ReLU after the first two convolutions and after the sum."""

    def __init__(self, channels: int, mid: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.act1 = act()
        self.conv = nn.Conv2d(mid, mid, 3, padding=1)
        self.act2 = act()
        self.expand = nn.Conv2d(mid, channels, 1)
        self.act3 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.act2(self.conv(self.act1(self.reduce(x)))))
        return self.act3(out + x)


def small_resnet(
    *,
    activation: str = "relu",
    t: float = 1.0,
    in_channels: int = 1,
    input_size: int = 28,
    num_classes: int = 10,
    filters: int = 64,
) -> nn.Sequential:
    """The authors' black-box source (`src/classifiers/resnet.py` of the seed's code, ART history, June-August
    2017): the paper CNN's first two layers (Conv `filters` 8x8 stride 2 "same", Conv 2 * `filters` 6x6 stride 2
    "valid", each followed by the activation), one bottleneck identity block (1x1 `filters`, 3x3 `filters`,
    1x1 2 * `filters`, add, activation), max-pool 3x3 (stride 3, "valid"), Dense `num_classes`; no batch norm.

    On 28x28 MNIST the maps are 14x14x64, 5x5x128, 5x5x128 and 1x1x128 after pooling: 353,994 parameters.
    Input (B, in_channels, input_size, input_size).
    """
    kwargs = dict(activation=activation, t=t, in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    kwargs["filters"] = filters
    act = activation_factory(activation, t)
    _check_image_io(in_channels, input_size, num_classes)
    check_int(filters, "filters", low=1)
    before, after = _same_padding(input_size, 8, 2)
    size = _conv_out(_conv_out(-(-input_size // 2), 6, 2), 3, 3)
    model = nn.Sequential(
        nn.ZeroPad2d((before, after, before, after)),
        nn.Conv2d(in_channels, filters, 8, stride=2),
        act(),
        nn.Conv2d(filters, 2 * filters, 6, stride=2),
        act(),
        BottleneckIdentityBlock(2 * filters, filters, act),
        nn.MaxPool2d(3),
        nn.Flatten(),
        nn.Linear(2 * filters * size * size, num_classes),
    )
    return _record(model, "small_resnet", kwargs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnist_cnn": mnist_cnn,
    "cifar_cnn": cifar_cnn,
    "resnet": resnet,
    "small_resnet": small_resnet,
}


_PACKAGE_BUILDERS = dict(MODELS)


def builder_digest(name: str) -> str | None:
    """None where ``MODELS[name]`` is this package's own builder; else "module.qualname:sha256 of its code" of the
    builder put in its place (a model of one's own under a built-in's name), so that caches keyed by the name do
    not hand it the built-in's weights. The code is the builder's own source (or its bytecode where the source is
    not at hand; a callable object's class), not that of the functions it calls."""
    builder = MODELS[name]
    if builder is _PACKAGE_BUILDERS.get(name):
        return None
    parts: list[Any] = []
    while isinstance(builder, functools.partial):
        parts.append((builder.args, sorted(builder.keywords.items())))
        builder = builder.func
    builder = inspect.unwrap(builder)
    code_of = builder if inspect.isroutine(builder) or inspect.isclass(builder) else type(builder)  # an instance's
    try:
        code = inspect.getsource(code_of).encode()
    except (OSError, TypeError):
        code_object = getattr(code_of, "__code__", None)
        code = marshal.dumps(code_object) if code_object is not None else code_of.__qualname__.encode()
    digest = hashlib.sha256(code + repr(parts).encode()).hexdigest()
    return f"{code_of.__module__}.{code_of.__qualname__}:{digest}"


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """The model `name` ("mnist_cnn", "cifar_cnn", "resnet" or "small_resnet") built with `kwargs`."""
    check_choice(name, "name", MODELS)
    return MODELS[name](**kwargs)


def architecture_of(model: nn.Module) -> dict[str, Any] | None:
    """{"name": ..., "kwargs": ...} for a model made by this module, else None: as it was built (a model changed in
    place since, by :func:`nemesis_fast.nn.replace_relu` say, still has the record of its builder; see
    :func:`live_architecture`)."""
    arch = getattr(model, "architecture", None)
    return arch if isinstance(arch, dict) and arch.get("name") in MODELS else None


def live_architecture(model: nn.Module, recorded: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The architecture that describes `model` as it is now: `recorded` (default :func:`architecture_of`; None: no
    record, returned as it is) with the kwargs `activation` and `t` read from the model's activation layers, so
    that a builder's model whose ReLUs were replaced by BoundedReLU(t) since (nn.replace_relu, thresholds set by
    hand, or nn.to_hardtanh's Hardtanh(0, t) copy) is recorded as the builder makes it with activation="brelu" and
    that t. A record whose kwargs have no `activation` is returned as it is. ValueError where the layers are of
    mixed kinds or thresholds, which no builder makes."""
    recorded = architecture_of(model) if recorded is None else recorded
    kwargs = recorded.get("kwargs") if isinstance(recorded, dict) else None
    if not isinstance(kwargs, dict) or "activation" not in kwargs:
        return recorded
    relus = sorted(name for name, m in model.named_modules() if isinstance(m, nn.ReLU))
    thresholds = {name: m.t for name, m in model.named_modules() if isinstance(m, BoundedReLU)}
    # nn.Hardtanh(0, t) computes BoundedReLU(t) (nn.to_hardtanh's copies; nn.ReLU6 is Hardtanh(0, 6)); other bounds
    # are a kind no builder makes.
    for name, m in model.named_modules():
        if isinstance(m, nn.Hardtanh):
            thresholds[name] = (
                float(m.max_val) if m.min_val == 0 and m.max_val > 0 else f"Hardtanh({m.min_val}, {m.max_val})"
            )
    if (
        (relus and thresholds)
        or len(set(thresholds.values())) > 1
        or any(isinstance(t, str) for t in thresholds.values())
    ):
        raise ValueError(
            f"model: its activations are of mixed kinds or thresholds (ReLU at {relus}, BoundedReLU t by layer "
            f"{thresholds}), which the {recorded.get('name')!r} builder's kwargs cannot describe; give every layer "
            "one activation, or save the model with no architecture recorded (delete model.architecture)"
        )
    if thresholds:
        live = {"activation": "brelu", "t": next(iter(thresholds.values()))}
    elif relus:
        live = {"activation": "relu", "t": kwargs.get("t", 1.0)}
    else:  # neither kind: as recorded
        return recorded
    return {**recorded, "kwargs": {**kwargs, **live}}
