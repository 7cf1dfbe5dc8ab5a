"""The public functional ops. Each checks its arguments, then runs on the backend chosen per call."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad

from ._backends import bounded_relu as _bounded_relu
from ._backends import gaussian_augment as _gaussian_augment
from ._backends import jsma_saliency_search as _jsma_saliency_search
from ._checks import check_bool, check_choice, check_positive, check_tensor
from ._dispatch import BACKENDS
from .reference.bounded_relu import rounds_to_zero
from .reference.jsma_saliency_search import check_inputs as _check_jsma_inputs

__all__ = ["SAVES", "bounded_relu", "gaussian_augment", "jsma_saliency_search"]


SAVES = ("output", "mask")


def _has_tangent(x: torch.Tensor) -> bool:
    """Whether `x` carries a forward-mode AD tangent (torch.func.jvp, torch.autograd.forward_ad)."""
    dual_level = forward_ad._current_level >= 0  # (unpack_dual alone costs a microsecond a call)
    return dual_level and not torch.compiler.is_compiling() and forward_ad.unpack_dual(x).tangent is not None


def _exporting_to_onnx() -> bool:
    """Whether torch.onnx.export is tracing the call (its two exporters trace with torch.jit and torch.export; asked
    first, as is_in_onnx_export costs microseconds a call)."""
    return (torch.jit.is_tracing() or torch.compiler.is_exporting()) and torch.onnx.is_in_onnx_export()


def _check_backend(backend: str | None) -> None:
    """ValueError naming `backend` unless it is None or a backend's name: checked before the paths that take the
    torch backend whatever `backend` asks (torch.func's transforms, forward-mode AD, ONNX export)."""
    if backend is not None:
        check_choice(backend, "backend", BACKENDS)


def _needs_torch_ops(x: torch.Tensor) -> bool:
    """Whether the call must run plain torch operations: under torch.onnx.export (which has no translation of the
    kernels' ops), for an `x` that a torch.func transform (grad, vmap, jacrev, jvp, ...) tracks or batches, or for
    an `x` with a tangent. The kernels' autograd registrations have reverse-mode rules only, in a form those
    transforms refuse (or, for a tangent, silently drop). An `x` the transforms do not see (a constant under grad)
    keeps the kernels."""
    if _exporting_to_onnx():
        return True
    if torch.compiler.is_compiling():
        return False
    functorch = torch._C._are_functorch_transforms_active() and torch._C._functorch.is_functorch_wrapped_tensor(x)
    return functorch or _has_tangent(x)


def bounded_relu(x: torch.Tensor, t: float = 1.0, *, save: str = "output", backend: str | None = None) -> torch.Tensor:
    """Bounded ReLU, f_t(x) = min(max(x, 0), t), elementwise.

    Args:
        x: a float16, bfloat16, float32 or float64 tensor of any shape and strides.
        t: the upper bound, a finite number > 0 (the paper uses t = 1). It is rounded to x's dtype.
        save: what backward keeps. "output" (default): the output, which the next layer keeps anyway, so training
            memory equals nn.ReLU's; backward reads grad and the output. "mask": a bit-packed mask, 1 bit per
            element (n / 8 bytes more than "output" when the next layer keeps its input), which backward reads
            instead of the output: forward+backward moves 16.25 bytes per float32 element instead of 20. Where no
            gradient is needed (no grad mode, or x does not require grad), "mask" computes no mask.
        backend: None (automatic: the compiled kernel, then Triton on CUDA, then torch), "native",
            "triton" or "torch". NEMESIS_FAST_BACKEND sets the default.

    Returns:
        A tensor of x's shape and dtype, and x's layout (contiguous for a non-dense x with save="mask"). NaN
        propagates. The gradient is 1 where 0 < x < t and 0 elsewhere (also at 0, t and NaN), the same for both
        values of `save`. For an x that torch.func's transforms (grad, vmap, jacrev, jvp) track or batch, for
        forward-mode AD and under torch.onnx.export it runs the torch backend, whose rules they take: the same
        values and gradient.
    """
    check_tensor(x, "x")
    t = check_positive(t, "t")
    check_choice(save, "save", SAVES)
    _check_backend(backend)
    if rounds_to_zero(t, x.dtype):
        raise ValueError(f"t={t} rounds to 0 in {x.dtype}; use a larger t")
    if _needs_torch_ops(x):
        return _bounded_relu.BACKENDS.torch(x, t)
    # torch.jit.trace checks its graph by tracing again without grad: under tracing, `save` alone picks the op
    if save == "mask" and (torch.jit.is_tracing() or (x.requires_grad and torch.is_grad_enabled())):
        return _bounded_relu.MASKED_BACKENDS.select(x.device, backend)(x, t)
    return _bounded_relu.BACKENDS.select(x.device, backend)(x, t)


def gaussian_augment(
    x: torch.Tensor,
    copies: int = 10,
    sigma: float = 0.3,
    clip: tuple[float | None, float | None] | None = (0.0, 1.0),
    *,
    include_original: bool = True,
    seed: int | None = None,
    offset: int = 0,
    out_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Gaussian data augmentation in one pass: the batch, then `copies` noisy copies of it.

    Args:
        x: a batch (B, ...) of float16, bfloat16, float32 or float64 values, or of uint8 values, which are read as
            x / 255 (in [0, 1]). Any strides.
        copies: number of noisy copies of every sample, >= 0.
        sigma: standard deviation of the noise, in the units of x (of x / 255 for uint8), finite and >= 0.
        clip: (low, high) bounds applied to every output value, originals included; None, or None on one side,
            for no bound. Default (0, 1), the range of images.
        include_original: put the (clipped) originals first.
        seed: the noise's 64-bit key. None draws one from torch's default generator (so torch.manual_seed
            governs it and successive calls give fresh noise). Under torch.compile pass an explicit seed.
        offset: global index of x's first sample in the data set. The noise of copy c of sample b depends only on
            (seed, c, offset + b, feature), so augmenting a data set in batches, each with its own offset, gives
            exactly what augmenting it whole gives, on any backend.
        out_dtype: the output dtype, a floating type; default x's dtype, float32 for uint8.
        backend: None (automatic), "native", "triton" or "torch"; see :func:`nemesis_fast.bounded_relu`.

    Returns:
        ((copies + include_original) * B, *x.shape[1:]), contiguous: the originals, then copy 0 of every sample,
        then copy 1, and so on. Row (include_original + c) * B + b is clip(x[b] + sigma * n), n standard normal
        noise drawn with Philox4x32-10 and Box-Muller (see nemesis_fast.reference.gaussian_augment for the exact
        definition). Computed in float32 (float64 for float64 input). The op has no gradient: backward through it
        raises, and so does a call with a forward-mode AD tangent.
    """
    clip_min, clip_max, seed = _gaussian_augment.public_arguments(x, copies, sigma, clip, seed, offset, out_dtype)
    check_bool(include_original, "include_original")
    _check_backend(backend)
    if _has_tangent(x):
        raise RuntimeError(_gaussian_augment.NO_GRADIENT)
    if _needs_torch_ops(x):  # (its torch backend takes the transforms, and refuses a gradient as the kernels do)
        implementation = _gaussian_augment.BACKENDS.torch
    else:
        implementation = _gaussian_augment.BACKENDS.select(x.device, backend)
    return implementation(x, copies, float(sigma), clip_min, clip_max, include_original, seed, offset, out_dtype)


def jsma_saliency_search(
    target_grad: torch.Tensor,
    other_grad: torch.Tensor,
    search_domain: torch.Tensor,
    increase: bool = True,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The JSMA saliency-map pair search (Papernot et al. 2016): per sample, the best pair of features to change.

    Over the unordered pairs p < q with both features in the search domain, with a = t_p + t_q and
    b = o_p + o_q (float32 additions of the gradients converted to float32): when increasing, a pair is valid if
    a > 0 and b < 0 and scores a * (-b); when decreasing, valid if a < 0 and b > 0 and scores (-a) * b (one
    float32 multiplication). A pair touching a NaN gradient is invalid. The compiled kernels scan the pairs in
    tiles, keeping only running bests: O(B * n) extra memory, never the n x n matrix of pair scores. They first
    bound the search: the best pair among a few seed features scores s0, and only features that can pair into a
    score of s0 or more are scanned, which on a model's gradients leaves a few hundred pairs (the CPU kernel, for
    every n; on CUDA from 16,384 features, in torch in front of either GPU kernel, with one host synchronisation).
    The answer is the same.

    Args:
        target_grad: (B, n) gradient of the target class (logit or probability) with respect to each input
            feature; float32, or float16, bfloat16, float64 (converted to float32).
        other_grad: (B, n) gradient of the sum of the other classes; target_grad's dtype.
        search_domain: (B, n) bool, the features that may be chosen.
        increase: True to find the pair to increase (JSMA with theta > 0), False for the pair to decrease.
        backend: None (automatic: the compiled kernel, then Triton on CUDA, then torch), "native", "triton"
            or "torch". NEMESIS_FAST_BACKEND sets the default.

    Returns:
        (p, q, found), each of shape (B,): p < q the int64 feature indices of the valid pair of highest score
        (ties go to the smallest p, then the smallest q), and found, bool, False where no pair is valid (there
        p = q = -1). Integer outputs: no gradient flows through this op.
    """
    _check_jsma_inputs(target_grad, other_grad, search_domain, increase)
    search = _jsma_saliency_search.BACKENDS.select(target_grad.device, backend)
    if (
        target_grad.device.type == "cuda"
        and target_grad.shape[1] >= _jsma_saliency_search.BOUNDED_MIN_FEATURES
        and not torch.compiler.is_compiling()
    ):
        return _jsma_saliency_search.bounded(search, target_grad, other_grad, search_domain, increase)
    return search(target_grad, other_grad, search_domain, increase)
