"""Triton kernel of the JSMA saliency-map pair search, as the op nemesis_fast::jsma_saliency_search_triton.

One program per (sample, row block) scans the pairs p < q with p in its block of ROWS rows, COLS columns at a
time, keeping for every (row, lane) position its best score and column (a strictly higher score replaces, and
columns come in increasing order, so each position keeps its smallest q). The program then writes its best
score and the smallest key p * n + q among the positions holding it; a few torch ops reduce the (B, n / ROWS)
partials per sample the same way. The per-pair math is that of the reference: float32 a = t_p + t_q and
b = o_p + o_q, one float32 multiplication.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..reference.jsma_saliency_search import check_inputs
from ._common import launch

ROWS = 32
COLS = 128
NUM_WARPS = 4
_NO_KEY = torch.iinfo(torch.int64).max


@triton.jit
def _prepare(target, other, domain, INCREASE: tl.constexpr):
    """(t, u) of the header csrc/jsma_saliency_search.h: a pair is valid when t_p + t_q > 0 and u_p + u_q > 0."""
    usable = (domain != 0) & (target == target) & (other == other)
    if INCREASE:
        t = target
        u = -other
    else:
        t = -target
        u = other
    return tl.where(usable, t, float("-inf")), tl.where(usable, u, float("-inf"))


@triton.jit
def _search_kernel(
    target_ptr,
    other_ptr,
    domain_ptr,
    score_ptr,
    key_ptr,
    n,
    t_stride0,
    t_stride1,
    o_stride0,
    o_stride1,
    d_stride0,
    d_stride1,
    INCREASE: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
    row_blocks = tl.cdiv(n, ROWS)
    b = tl.program_id(0).to(tl.int64) // row_blocks
    row_block = tl.program_id(0) % row_blocks
    p = row_block.to(tl.int64) * ROWS + tl.arange(0, ROWS)
    p_in = p < n
    target = tl.load(target_ptr + b * t_stride0 + p * t_stride1, mask=p_in, other=0.0).to(tl.float32)
    other = tl.load(other_ptr + b * o_stride0 + p * o_stride1, mask=p_in, other=0.0).to(tl.float32)
    domain = tl.load(domain_ptr + b * d_stride0 + p * d_stride1, mask=p_in, other=0)
    tp, up = _prepare(target, other, domain, INCREASE)
    best = tl.full((ROWS, COLS), -1.0, tl.float32)
    best_q = tl.zeros((ROWS, COLS), tl.int32)  # n < 2**31 (checked by the op)
    for start in range(row_block * ROWS, n, COLS):
        q = start + tl.arange(0, COLS)
        q_in = q < n
        q64 = q.to(tl.int64)
        # New names, not the row values': compiled Triton forbids a loop from changing a variable's shape.
        target_q = tl.load(target_ptr + b * t_stride0 + q64 * t_stride1, mask=q_in, other=0.0).to(tl.float32)
        other_q = tl.load(other_ptr + b * o_stride0 + q64 * o_stride1, mask=q_in, other=0.0).to(tl.float32)
        domain_q = tl.load(domain_ptr + b * d_stride0 + q64 * d_stride1, mask=q_in, other=0)
        tq, uq = _prepare(target_q, other_q, domain_q, INCREASE)
        a = tp[:, None] + tq[None, :]
        s = up[:, None] + uq[None, :]
        score = a * s
        better = (a > 0) & (s > 0) & (p[:, None] < q64[None, :]) & (score > best)
        best = tl.where(better, score, best)
        best_q = tl.where(better, q[None, :], best_q)
    top = tl.max(best)
    key = tl.where(best == top, p[:, None] * n + best_q.to(tl.int64), 0x7FFFFFFFFFFFFFFF)
    tl.store(score_ptr + tl.program_id(0), top)
    tl.store(key_ptr + tl.program_id(0), tl.min(key))


@triton_op("nemesis_fast::jsma_saliency_search_triton", mutates_args=())
def jsma_saliency_search_triton(
    target_grad: torch.Tensor, other_grad: torch.Tensor, search_domain: torch.Tensor, increase: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_inputs(target_grad, other_grad, search_domain, increase)
    batch, n = target_grad.shape
    device = target_grad.device
    minus_one = torch.full((batch,), -1, dtype=torch.int64, device=device)
    if batch == 0 or n < 2:
        return minus_one, minus_one.clone(), torch.zeros(batch, dtype=torch.bool, device=device)
    row_blocks = triton.cdiv(n, ROWS)
    score = torch.empty(batch, row_blocks, dtype=torch.float32, device=device)
    key = torch.empty(batch, row_blocks, dtype=torch.int64, device=device)
    domain = search_domain.view(torch.uint8)
    launch(
        _search_kernel,
        (batch * row_blocks,),
        target_grad,
        other_grad,
        domain,
        score,
        key,
        n,
        *target_grad.stride(),
        *other_grad.stride(),
        *domain.stride(),
        INCREASE=increase,
        ROWS=ROWS,
        COLS=COLS,
        num_warps=NUM_WARPS,
    )
    top = score.amax(1, keepdim=True)
    best_key = torch.where(score == top, key, torch.full_like(key, _NO_KEY)).amin(1)
    found = top.squeeze(1) >= 0
    return torch.where(found, best_key // n, minus_one), torch.where(found, best_key % n, minus_one), found
