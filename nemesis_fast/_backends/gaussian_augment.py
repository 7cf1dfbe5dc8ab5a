"""gaussian_augment: fake kernel, an autograd registration that refuses gradients, and the backend table.

The op makes training data: it has no gradient. Its output requires grad when x does, so that calling backward
through it raises a clear error rather than the generic "does not require grad" (or, worse, a silent zero).
"""

from __future__ import annotations

import torch

from .. import _extension
from .. import triton as _triton
from .._checks import check_int, check_number
from .._dispatch import OpBackends
from ..reference.gaussian_augment import check_arguments, empty_output
from ..reference.gaussian_augment import gaussian_augment as _reference

NO_GRADIENT = "gaussian_augment makes training data and has no gradient; pass x.detach() instead"


def _refuse_gradient(ctx, grad):
    raise RuntimeError(NO_GRADIENT)


def _setup(ctx, inputs, output):
    pass


def _register_autograd(op) -> None:
    torch.library.register_autograd(op, _refuse_gradient, setup_context=_setup)


class _ReferenceRefusingGradient(torch.autograd.Function):
    """The reference, whose backward raises NO_GRADIENT like the kernels' registrations. In the form torch.func's
    transforms take (a setup_context, a generated vmap rule), so that it also serves under them."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, *arguments) -> torch.Tensor:
        return _reference(x, *arguments)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(NO_GRADIENT)


def reference(x: torch.Tensor, *arguments) -> torch.Tensor:
    """The reference as a backend (same arguments as the op), refusing gradients as the kernels do."""
    if torch._C._are_functorch_transforms_active() or (x.requires_grad and torch.is_grad_enabled()):
        return _ReferenceRefusingGradient.apply(x, *arguments)
    return _reference(x, *arguments)


native = triton = None
if _extension.LOADED:

    @torch.library.register_fake("nemesis_fast::gaussian_augment")
    def _(x, copies, sigma, clip_min, clip_max, include_original, seed, offset, out_dtype):
        return empty_output(x, copies, sigma, clip_min, clip_max, include_original, offset, out_dtype)

    native = torch.ops.nemesis_fast.gaussian_augment.default
    _register_autograd(native)

if _triton.AVAILABLE:
    from ..triton.gaussian_augment import gaussian_augment_triton

    triton = gaussian_augment_triton
    _register_autograd(gaussian_augment_triton)

BACKENDS = OpBackends("gaussian_augment", native=native, triton=triton, torch=reference)


def clip_bounds(clip, name: str = "clip") -> tuple[float | None, float | None]:
    """(low, high) from None (no clipping) or a pair whose entries are numbers or None (that side unbounded)."""
    if clip is None:
        return None, None
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise TypeError(f"{name} must be None or a pair (low, high), got {clip!r}")
    low, high = (None if v is None else check_number(v, f"{name}[{i}]") for i, v in enumerate(clip))
    if low is not None and high is not None and low > high:
        raise ValueError(f"{name} must have low <= high, got {clip!r}")
    return low, high


def resolve_seed(seed: int | None) -> int:
    """An explicit seed as a signed 64-bit int (any int in [-2**63, 2**64)), or a fresh one drawn from torch's
    default CPU generator (so torch.manual_seed governs it, and successive calls differ)."""
    if seed is None:
        if torch.compiler.is_compiling():
            raise ValueError("seed=None draws a seed eagerly; under torch.compile pass an explicit seed=")
        return int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64).item())
    seed = check_int(seed, "seed", low=-(2**63), high=2**64 - 1)
    return seed - 2**64 if seed >= 2**63 else seed


def public_arguments(
    x: torch.Tensor,
    copies: int,
    sigma: float,
    clip,
    seed: int | None,
    offset: int,
    out_dtype: torch.dtype | None,
) -> tuple[float | None, float | None, int]:
    """Checks the public function's arguments; returns (clip_min, clip_max, seed) as the op takes them."""
    clip_min, clip_max = clip_bounds(clip)
    check_arguments(x, copies, sigma, clip_min, clip_max, offset, out_dtype)
    return clip_min, clip_max, resolve_seed(seed)
