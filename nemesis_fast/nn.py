"""Modules: the bounded ReLU as a layer, a helper that puts it in place of every ReLU of a model, one that readies a
BReLU model for BPDA attacks (ReLU's gradient through the upper bound), and one that copies it into plain torch."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ._checks import check_choice, check_positive
from ._dispatch import BACKENDS
from .ops import SAVES, bounded_relu

__all__ = ["GRADIENTS", "BoundedReLU", "replace_relu", "to_hardtanh", "with_relu_gradient"]

GRADIENTS = ("exact", "relu")


class _ReluGradient(torch.autograd.Function):
    """BReLU's output, ReLU's gradient (1 where x > 0): the upper bound is passed through in backward."""

    generate_vmap_rule = True  # (torch.func.vmap, and grad under it)

    @staticmethod
    def forward(x: torch.Tensor, t: float, backend: str | None) -> torch.Tensor:
        return bounded_relu(x, t, backend=backend)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return torch.where(x <= 0, 0.0, grad), None, None  # torch's ReLU's: 0 where x <= 0, whatever grad holds

    @staticmethod
    def jvp(ctx, x_tangent: torch.Tensor, t_tangent: None, backend_tangent: None) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.where(x <= 0, 0.0, x_tangent)  # forward mode: the same rule


class BoundedReLU(nn.Module):
    """f_t(x) = min(max(x, 0), t) (Zantedeschi et al., 2017), on nemesis_fast's fused kernels.

    Args:
        t: the upper bound, a finite number > 0.
        save: what backward keeps: "output" (default; training memory equals nn.ReLU's) or "mask" (1 bit per
            element, n / 8 bytes more, and less memory traffic); as for :func:`nemesis_fast.bounded_relu`.
        backend: as for :func:`nemesis_fast.bounded_relu`.
        gradient: "exact" (default: 1 where 0 < x < t, else 0) or "relu" (1 where x > 0: BPDA, Athalye et al.
            2018, for attacking a BReLU model, whose saturated units otherwise pass no gradient; the forward
            pass is the same). See :func:`with_relu_gradient`.
    """

    def __init__(
        self, t: float = 1.0, *, save: str = "output", backend: str | None = None, gradient: str = "exact"
    ) -> None:
        super().__init__()
        self.t = check_positive(t, "t")
        self.save = check_choice(save, "save", SAVES)
        self.backend = None if backend is None else check_choice(backend, "backend", BACKENDS)
        self.gradient = check_choice(gradient, "gradient", GRADIENTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient == "relu":
            if torch.compiler.is_exporting() and not torch.onnx.is_in_onnx_export():
                warnings.warn(
                    "torch.export keeps BoundedReLU's values but not its gradient='relu' (the exported program's "
                    "gradient is BReLU's own, which masks gradients): attack the eager model, and export "
                    "to_hardtanh(model) for inference",
                    stacklevel=2,
                )
            return _ReluGradient.apply(x, self.t, self.backend)
        return bounded_relu(x, self.t, save=self.save, backend=self.backend)

    def __prepare_scriptable__(self) -> nn.Module:
        """torch.jit.script cannot compile the op's Python call; its own error names no way out. (Returning a
        Hardtanh here would work, but torch.jit.script writes what this returns into the user's model.)"""
        raise TypeError(
            "torch.jit.script cannot compile BoundedReLU (a custom op called from Python): script "
            "nemesis_fast.nn.to_hardtanh(model), a plain-torch copy with the same values and gradient, or use "
            "torch.jit.trace or torch.export"
        )

    def extra_repr(self) -> str:
        return (
            f"t={self.t}"
            + (f", save={self.save!r}" if self.save != "output" else "")
            + (f", backend={self.backend!r}" if self.backend is not None else "")
            + (f", gradient={self.gradient!r}" if self.gradient != "exact" else "")
        )


def with_relu_gradient(model: nn.Module) -> nn.Module:
    """A copy of `model` for BPDA attacks (Athalye, Carlini, Wagner 2018): its outputs are `model`'s, bit for bit,
    and every :class:`BoundedReLU` in it passes ReLU's gradient (``gradient="relu"``). `model` is not changed.

    A BReLU model attacked through its own gradient can look more robust than it is: wherever a unit is
    saturated (x >= t) no gradient flows, and gradient attacks stall. Raises ValueError when `model` holds no
    BoundedReLU.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    copied = copy.deepcopy(model)
    layers = [m for m in copied.modules() if isinstance(m, BoundedReLU)]
    if not layers:
        raise ValueError("model has no BoundedReLU layer to pass ReLU's gradient through")
    for layer in layers:
        layer.gradient = "relu"
    return copied


def to_hardtanh(model: nn.Module) -> nn.Module:
    """A copy of `model` with every :class:`BoundedReLU` replaced by ``nn.Hardtanh(0, t)``: plain torch, for
    exporters (ONNX, TorchScript) and for running the model where nemesis_fast is not installed. `model` is not
    changed; the copy has its parameters and buffers, so their state dicts are interchangeable.

    The outputs are `model`'s, and so are the gradients (1 where 0 < x < t), with two exceptions. At x = NaN
    Hardtanh passes the gradient, BoundedReLU does not. In float16 and bfloat16, BoundedReLU rounds t to the
    input's dtype, Hardtanh compares in float32, so where t is not a 16-bit number an input equal to the rounded t
    passes gradient through Hardtanh only. Raises ValueError for a BPDA
    copy (:func:`with_relu_gradient`), whose ReLU gradient Hardtanh does not have.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if any(isinstance(m, BoundedReLU) and m.gradient == "relu" for m in model.modules()):
        raise ValueError("model passes ReLU's gradient through its BoundedReLU layers (BPDA); Hardtanh cannot")
    if isinstance(model, BoundedReLU):
        return _in_place_of(nn.Hardtanh(0.0, model.t), copy.deepcopy(model))  # its hooks, copied
    copied = copy.deepcopy(model)
    _replace_modules(copied, BoundedReLU, lambda layer: nn.Hardtanh(0.0, layer.t))
    return copied


# The hooks a module holds (nn.Module's own dictionaries): a replacement takes them over, so they keep firing and
# their handles keep removing them.
_HOOK_ATTRIBUTES = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_is_full_backward_hook",
)


def _in_place_of(new: nn.Module, old: nn.Module) -> nn.Module:
    """`new` with `old`'s train/eval mode and hooks."""
    new.train(old.training)
    for attribute in _HOOK_ATTRIBUTES:
        if hasattr(old, attribute):
            setattr(new, attribute, getattr(old, attribute))
    return new


def _replace_modules(
    model: nn.Module,
    kind: type[nn.Module],
    make: Callable[[nn.Module], nn.Module],
    made: dict[int, nn.Module] | None = None,
) -> None:
    """Replaces, in place, every submodule of `model` that is a `kind` with `make(that submodule)`, which takes
    over its mode and hooks. A module held under several names (one ReLU used twice, a block shared by two
    parents) is replaced under each of them, by one replacement, so what was shared stays shared."""
    made = {} if made is None else made
    for name, child in list(model._modules.items()):  # named_children() gives a module held twice only once
        if child is None:
            continue
        if isinstance(child, kind):
            if id(child) not in made:
                made[id(child)] = _in_place_of(make(child), child)
            setattr(model, name, made[id(child)])
        elif id(child) not in made:
            made[id(child)] = child
            _replace_modules(child, kind, make, made)


def replace_relu(model: nn.Module, t: float = 1.0, *, save: str = "output", backend: str | None = None) -> nn.Module:
    """Replaces every `nn.ReLU` submodule of `model` with a `BoundedReLU(t, save=save, backend=backend)`, in place,
    and returns `model`.

    Functional calls such as `F.relu` inside a `forward` are not modules and are left alone, as are other
    activations (`nn.ReLU6`) and BoundedReLU layers already there (their t stays): a model with no `nn.ReLU`
    submodule is returned unchanged, with a warning. An `nn.ReLU(inplace=True)` becomes an out-of-place BoundedReLU,
    so a forward that calls it for its side effect only, ignoring what it returns, loses the activation. When
    `model` is itself an `nn.ReLU`, a new `BoundedReLU` is returned.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    t = check_positive(t, "t")
    check_choice(save, "save", SAVES)
    if backend is not None:
        check_choice(backend, "backend", BACKENDS)
    if isinstance(model, nn.ReLU):
        return _in_place_of(BoundedReLU(t, save=save, backend=backend), model)
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        kept = sorted({m.t for m in model.modules() if isinstance(m, BoundedReLU)})
        found = f"; its BoundedReLU layers keep t = {', '.join(map(str, kept))}" if kept else ""
        warnings.warn(
            f"replace_relu: model has no nn.ReLU submodule, so nothing was replaced (F.relu calls inside forward are "
            f"not modules){found}",
            stacklevel=2,
        )
    _replace_modules(model, nn.ReLU, lambda _: BoundedReLU(t, save=save, backend=backend))
    return model
