"""jsma_saliency_search: fake kernels and the backend table. The outputs are integer indices and a mask, so the
op has no autograd."""

from __future__ import annotations

import torch

from .. import _extension
from .. import triton as _triton
from .._dispatch import OpBackends
from ..reference.jsma_saliency_search import check_inputs
from ..reference.jsma_saliency_search import jsma_saliency_search as _reference

native = triton = None
if _extension.LOADED:

    @torch.library.register_fake("nemesis_fast::jsma_saliency_search")
    def _(
        target_grad: torch.Tensor, other_grad: torch.Tensor, search_domain: torch.Tensor, increase: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_inputs(target_grad, other_grad, search_domain, increase)  # also a mix of meta and other devices
        batch = target_grad.shape[0]
        index = target_grad.new_empty((batch,), dtype=torch.int64)
        return index, torch.empty_like(index), target_grad.new_empty((batch,), dtype=torch.bool)

    native = torch.ops.nemesis_fast.jsma_saliency_search.default

if _triton.AVAILABLE:
    from ..triton.jsma_saliency_search import jsma_saliency_search_triton as triton

BACKENDS = OpBackends("jsma_saliency_search", native=native, triton=triton, torch=_reference)


# The bound of the CPU kernel's pruned search (csrc/cpu/jsma_saliency_search.cpp), in torch for the GPU backends:
# from BOUNDED_MIN_FEATURES features their n^2 / 2 pairs cost more than finding the few features that can form the
# best pair. Same seeds, bound, margins and guards as the CPU kernel (its comment derives them).
BOUNDED_MIN_FEATURES = 16384
SEEDS_PER_KEY = 16
LARGEST_BOUNDED = 1e15
SMALLEST_SEED = 1e-20


def bounded(
    search, target_grad: torch.Tensor, other_grad: torch.Tensor, search_domain: torch.Tensor, increase: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`search`'s answer (a backend of the op), computed on the features that can form a pair scoring at least as
    much as the best pair among the seeds, which are in order the features of every pair that can win or tie; the
    same (p, q, found) as `search` on all features. Falls back to all features where the bound would keep more
    than a quarter of them (one host synchronisation decides)."""
    batch, n = target_grad.shape
    if batch == 0 or n < 2:
        return search(target_grad, other_grad, search_domain, increase)
    t, u = target_grad.float(), other_grad.float()
    t, u = (t, -u) if increase else (-t, u)
    usable = search_domain & ~t.isnan() & ~u.isnan()
    t_usable, u_usable = t.masked_fill(~usable, float("-inf")), u.masked_fill(~usable, float("-inf"))
    k = min(SEEDS_PER_KEY, n)
    keys = (t_usable, u_usable, t_usable + u_usable)
    seeds = torch.cat([key.topk(k, 1).indices for key in keys], 1)  # (B, 3k)
    t_seed, u_seed = t_usable.gather(1, seeds), u_usable.gather(1, seeds)
    a = t_seed[:, :, None] + t_seed[:, None, :]
    s = u_seed[:, :, None] + u_seed[:, None, :]
    distinct = seeds[:, :, None] != seeds[:, None, :]
    score = (a * s).masked_fill(~((a > 0) & (s > 0) & distinct), -1.0).flatten(1)
    s0, best = score.max(1)
    a0, u0 = a.flatten(1).gather(1, best[:, None]).squeeze(1), s.flatten(1).gather(1, best[:, None]).squeeze(1)
    in_range = ((t.abs() <= LARGEST_BOUNDED) & (u.abs() <= LARGEST_BOUNDED)) | ~usable
    bounded_sample = (s0 >= SMALLEST_SEED) & in_range.all(1)
    lam = torch.where(bounded_sample, (u0.double() / a0.double()).sqrt(), 1.0)[:, None]
    c = torch.where(usable, lam * t.double() + u.double() / lam, float("-inf"))
    spread = torch.where(usable, lam * t.double().abs() + u.double().abs() / lam, 0.0).amax(1)
    threshold = 2.0 * s0.double().clamp_min(0).sqrt() * (1.0 - 1e-6) - 1e-12 * spread
    kept = usable & (c + c.amax(1, keepdim=True) >= threshold[:, None])
    kept = torch.where(bounded_sample[:, None], kept, usable)
    counts = kept.sum(1)
    m = max(int(counts.max()), 2)
    if m > n // 4:
        return search(target_grad, other_grad, search_domain, increase)
    index = torch.argsort((~kept).to(torch.uint8), dim=1, stable=True)[:, :m]  # the kept features, in order
    domain = torch.arange(m, device=t.device)[None, :] < counts[:, None]
    p, q, found = search(target_grad.gather(1, index), other_grad.gather(1, index), domain, increase)
    p = torch.where(found, index.gather(1, p.clamp_min(0)[:, None]).squeeze(1), -1)
    q = torch.where(found, index.gather(1, q.clamp_min(0)[:, None]).squeeze(1), -1)
    return p, q, found
