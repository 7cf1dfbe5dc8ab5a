"""The checks of an attack's arguments and of each call's inputs: ValueError or TypeError naming the argument."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._checks import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    check_class_logits,
    check_int,
    check_tensor,
    dtype_name,
    raise_model_input_error,
)
from .precision import clip_tolerance

if TYPE_CHECKING:
    from .base import Attack, Seed


def check_seed(seed: Any) -> Seed:
    """An attack's `seed`: None, a torch.Generator, or an int in [0, 2**63)."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return check_int(seed, "seed", low=0, high=2**63 - 1)


def check_call(attack: Attack, x: Any, y: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Types, shapes and devices (no device sync); the values are checked by :func:`check_values`."""
    check_tensor(x, "x", dtypes=FLOAT_DTYPES, min_ndim=2)
    largest = torch.finfo(x.dtype).max
    if attack.clip is not None and max(abs(attack.clip[0]), abs(attack.clip[1])) > largest:
        raise ValueError(f"clip={attack.clip} holds a bound beyond the range of {x.dtype} images (+-{largest:g})")
    check_step_sizes(attack, attack.step_dtype(x.dtype))
    if x.is_inference():
        x = x.clone()
    x = x.detach()
    y = check_labels(y, "y", x)
    if target is not None:
        if not attack.supports_targeted:
            raise ValueError(f"target: {type(attack).__name__} has no targeted mode")
        target = check_labels(target, "target", x)
    if isinstance(attack.model, nn.Module):
        param = next(iter(attack.model.parameters()), None)
        if param is not None and param.device != x.device:
            raise ValueError(f"x is on {x.device} but the model's parameters are on {param.device}")
    return x, y, target


def check_step_sizes(attack: Attack, dtype: torch.dtype) -> None:
    """ValueError naming the first of `step_sizes` beyond the range of `dtype`, the dtype of the steps (a step of
    that size is inf in it, and inf times a zero gradient is NaN)."""
    largest, name_of_dtype = torch.finfo(dtype).max, dtype_name(dtype)
    for name, factor in attack.step_sizes.items():
        value = getattr(attack, name)
        if abs(value) * factor > largest:
            times = "" if factor == 1 else f" ({factor:g} times it)"
            raise ValueError(
                f"{name}={value:g} is beyond the range of {name_of_dtype} (largest {largest:g}), the dtype of "
                f"{type(attack).__name__}'s steps{times} on these images: they would overflow to inf, and to NaN "
                "where the gradient is 0"
            )


def check_labels(labels: Any, name: str, x: torch.Tensor) -> torch.Tensor:
    check_tensor(labels, name, dtypes=INTEGER_DTYPES, ndim=1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must hold one label per image: {x.shape[0]} images, {labels.shape[0]} labels")
    labels = labels.detach().to(device=x.device, dtype=torch.int64)
    return labels.clone() if labels.is_inference() else labels


def _first_logits(attack: Attack, x: torch.Tensor) -> torch.Tensor:
    """The model's logits for x's first image (a copy: a model that changes its input is refused on it). Where the
    model fails on it with torch's plain RuntimeError (a layer's shapes: images of another data set, or without
    their channel or batch dimension), the same error type, naming x's shape as well as the layer's complaint."""
    try:
        return attack.logits(x[:1].clone())
    except RuntimeError as error:
        images = f"the images of x, of shape {tuple(x.shape[1:])} (x: {tuple(x.shape)})"
        raise_model_input_error(error, f"{type(attack).__name__}: the model failed on {images}")


def check_values(attack: Attack, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> bool:
    """Learns the number of classes (one forward pass of one image, first call only: its logits must be
    finite), then checks that x is finite and inside clip (up to :func:`clip_tolerance`) and that the labels
    are in range, with a single device synchronisation. Returns whether x strays outside clip (within the
    tolerance)."""
    first_logits = None
    if attack.num_classes is None:
        first_logits = _first_logits(attack, x)
        check_class_logits(first_logits)
        attack.num_classes = first_logits.shape[1]
    c = attack.num_classes
    values = [*torch.aminmax(x), *torch.aminmax(y)]  # NaN propagates into x's min and max
    if target is not None:
        values += [*torch.aminmax(target), (target == y).any()]
    if first_logits is not None:
        values.append(torch.isfinite(first_logits).all())
    values = torch.stack([v.to(torch.float64) for v in values]).tolist()
    finite_logits = values.pop() if first_logits is not None else True
    x_min, x_max, y_min, y_max = values[:4]
    if not (math.isfinite(x_min) and math.isfinite(x_max)):
        raise ValueError("x must be finite; it holds NaN or infinite values")
    clip = attack.clip or (-math.inf, math.inf)
    tolerance = clip_tolerance(clip, x.dtype) if attack.clip is not None else 0.0
    if x_min < clip[0] - tolerance or x_max > clip[1] + tolerance:
        raise ValueError(
            f"x must lie inside clip={attack.clip} (up to {tolerance:.3g}, a few units in the last place of "
            f"{dtype_name(x.dtype)}); it spans [{x_min}, {x_max}]"
        )
    if not finite_logits:  # x's first image is valid: the model is to blame
        raise ValueError("model must give finite logits; it gave NaN or infinite ones for the first image of x")
    if y_min < 0 or y_max >= c:
        raise ValueError(f"y must hold labels in [0, {c}); got values in [{int(y_min)}, {int(y_max)}]")
    if target is not None:
        t_min, t_max, same = values[4:]
        if t_min < 0 or t_max >= c:
            raise ValueError(f"target must hold classes in [0, {c}); got values in [{int(t_min)}, {int(t_max)}]")
        if same:
            raise ValueError("target must differ from y for every image")
    return x_min < clip[0] or x_max > clip[1]
