"""jsma_saliency_search: fake kernels and the backend table. The outputs are integer indices and a mask, so the
op has no autograd."""

from __future__ import annotations

import torch

from .. import _extension
from .. import triton as _triton
from .._dispatch import OpBackends
from ..reference.jsma_saliency_search import jsma_saliency_search as _reference

native = triton = None
if _extension.LOADED:

    @torch.library.register_fake("nemesis_fast::jsma_saliency_search")
    def _(
        target_grad: torch.Tensor, other_grad: torch.Tensor, search_domain: torch.Tensor, increase: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = target_grad.shape[0]
        index = target_grad.new_empty((batch,), dtype=torch.int64)
        return index, torch.empty_like(index), target_grad.new_empty((batch,), dtype=torch.bool)

    native = torch.ops.nemesis_fast.jsma_saliency_search.default

if _triton.AVAILABLE:
    from ..triton.jsma_saliency_search import jsma_saliency_search_triton as triton

BACKENDS = OpBackends("jsma_saliency_search", native=native, triton=triton, torch=_reference)
