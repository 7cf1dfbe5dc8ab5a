"""How many images an attack ran through the model per call: the rows that pass through the model's first layer.

An image attacked for s steps counts about s times, so two implementations of one algorithm that count differently
on the same images did different work: one stepped on where the other stopped (an image at a fixed point that a
peer steps through to its last step), or one ran images that had finished. Counted at the first layer rather than at
the model, because ART's classifier calls a model's layers one by one, not the model itself. A forward hook reads
only the batch size: no synchronisation with a GPU. Backward passes do not count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class ImageRows:
    """Counts the image rows of the calls that `counting` wraps, per side, at `model`'s first layer (its first
    module without children, in registration order: where a forward pass begins in a sequential network)."""

    def __init__(self, model: nn.Module) -> None:
        self.rows: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._side: str | None = None
        first = next(module for module in model.modules() if not any(module.children()))
        self._handle = first.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if self._side is not None and inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0:
            self.rows[self._side] += inputs[0].shape[0]

    def counting(self, side: str, call: Callable[[], None]) -> Callable[[], None]:
        """`call`, its model rows counted for `side` (calls outside such a wrapper count for no side)."""

        def counted() -> None:
            self._side = side
            self.calls[side] += 1
            try:
                call()
            finally:
                self._side = None

        return counted

    def per_call(self, side: str) -> float | None:
        """The image rows of one call of `side` (the mean over its calls), or None where it was never called."""
        return self.rows[side] / self.calls[side] if self.calls[side] else None

    def close(self) -> None:
        self._handle.remove()
