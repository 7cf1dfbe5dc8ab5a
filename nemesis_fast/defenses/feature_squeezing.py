"""Feature squeezing (Xu, Evans, Qi, NDSS 2018): bit-depth reduction and median smoothing of the input,
applied in front of a model at prediction time. The paper compared against it with 1 bit on MNIST and
3 bits on CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd import forward_ad

from .._checks import FLOAT_DTYPES, check_bool, check_int, check_tensor

PAPER_BIT_DEPTH = {"mnist": 1, "cifar10": 3}


def reduce_bit_depth(x: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """x -> round(x * (2^b - 1)) / (2^b - 1): 2^b levels evenly spaced in [0, 1] (x is expected in [0, 1];
    values outside are rounded onto the same grid). Halves round to even, as torch.round does. float16 and
    bfloat16 images are squeezed in float32 and the grid's values rounded to their dtype (x * 65535 overflows
    float16, and the products rounded in 16 bits can land next to the grid)."""
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    levels = 2 ** check_int(bit_depth, "bit_depth", low=1, high=16) - 1
    if x.dtype in (torch.float16, torch.bfloat16):  # x * 65535 overflows float16, and 16-bit grids are coarse
        return (torch.round(x.float() * levels) / levels).to(x.dtype)
    return torch.round(x * levels) / levels


def median_smooth(x: torch.Tensor, size: int) -> torch.Tensor:
    """The median of every size x size window of each channel of (B, C, H, W) images, the borders padded by
    reflection about the edge, the edge pixel repeated (d c b a | a b c d | d c b a).

    The window covers rows i - size // 2 .. i + (size - 1) // 2 (and likewise columns), and the median is the
    element of rank size * size // 2 in increasing order: scipy.ndimage.median_filter with its default mode
    "reflect", which Xu et al.'s feature squeezing and ART's SpatialSmoothing use. size // 2 must be below H and W.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES, ndim=4)
    size = check_int(size, "size", low=1)
    if size == 1:
        return x
    if size // 2 >= min(x.shape[2], x.shape[3]):
        raise ValueError(f"size={size} is too large for images of {x.shape[2]}x{x.shape[3]} pixels")
    before, after = size // 2, (size - 1) // 2
    padded = _pad_symmetric(_pad_symmetric(x, 2, before, after), 3, before, after)
    windows = padded.unfold(2, size, 1).unfold(3, size, 1).reshape(*x.shape, size * size)
    return windows.kthvalue(size * size // 2 + 1, dim=-1).values


class _StraightThrough(torch.autograd.Function):
    """Forward: the squeezed input; backward: the incoming gradient unchanged, and forward mode: x's tangent
    unchanged (BPDA with the identity). In the form torch.func's transforms take."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, squeezed: torch.Tensor) -> torch.Tensor:
        return squeezed.clone()  # (an input given back as it is would need a view as its tangent in forward mode)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None

    @staticmethod
    def jvp(ctx, x_tangent: torch.Tensor | None, squeezed_tangent: torch.Tensor | None) -> torch.Tensor | None:
        return x_tangent


class FeatureSqueezing(nn.Module):
    """`model` behind a squeezer: bit-depth reduction to `bit_depth` bits, then (optionally) median smoothing.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to logits (the bit-depth grid spans [0, 1]: [0, 255] images
            would pass through it unchanged, so rescale other data to [0, 1] first).
        bit_depth: bits per value, 1..16 (the paper's settings: 1 on MNIST, 3 on CIFAR-10; PAPER_BIT_DEPTH);
            None skips the bit-depth reduction.
        median_size: the side of median smoothing's square window, in pixels (e.g. 2 or 3; size // 2 must be
            below the images' H and W), or None for none.
        bpda: how gradients cross the squeezer. True (the default): BPDA (Athalye et al., 2018) with the
            identity; forward is squeezed, backward passes the gradient straight through, so white-box attacks
            see the model's gradient at the squeezed point. False: the true gradient, which is zero almost
            everywhere through the rounding; attacks that then fail are defeated by gradient masking, not
            by robustness, and results must be labelled so.

    The squeezer has no parameters; the wrapper's state dict is the model's under the prefix "model.".
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        bit_depth: int | None,
        *,
        median_size: int | None = None,
        bpda: bool = True,
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        if bit_depth is None and median_size is None:
            raise ValueError("bit_depth and median_size cannot both be None: nothing would be squeezed")
        self.model = model
        self.bit_depth = None if bit_depth is None else check_int(bit_depth, "bit_depth", low=1, high=16)
        self.median_size = None if median_size is None else check_int(median_size, "median_size", low=1)
        check_bool(bpda, "bpda")
        self.bpda = bpda

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """The squeezed images, with the gradient rule chosen by `bpda`."""
        if self.bpda:
            with torch.no_grad():
                squeezed = self._squeeze(x)
            tracked = (
                x.requires_grad
                or torch._C._functorch.is_functorch_wrapped_tensor(x)  # (grad(vmap(...)), jvp)
                or forward_ad.unpack_dual(x).tangent is not None  # (a dual tensor of torch.autograd.forward_ad)
            )
            return _StraightThrough.apply(x, squeezed) if tracked else squeezed
        return self._squeeze(x)

    def _squeeze(self, x: torch.Tensor) -> torch.Tensor:
        if self.bit_depth is not None:
            x = reduce_bit_depth(x, self.bit_depth)
        if self.median_size is not None:
            x = median_smooth(x, self.median_size)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.squeeze(x))

    def settings(self) -> dict[str, Any]:
        """{"bit_depth", "median_size", "bpda"}: the squeezer's settings, as checkpoints record them."""
        return {"bit_depth": self.bit_depth, "median_size": self.median_size, "bpda": self.bpda}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.settings().items())


def _pad_symmetric(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """`x` padded along `dim` with its first `before` and last `after` slices, mirrored (the edge repeated)."""
    length = x.shape[dim]
    head = x.narrow(dim, 0, before).flip(dim)
    tail = x.narrow(dim, length - after, after).flip(dim)
    return torch.cat([head, x, tail], dim)
