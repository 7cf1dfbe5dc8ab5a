"""Triton kernel of the JSMA saliency-map pair search, as the op nemesis_fast::jsma_saliency_search_triton.

One program per (row block, sample) scans the pairs p < q with p in its block of ROWS rows, COLS columns at a
time. Programs are numbered row block first, so the longest ones (the first row blocks, whose rows pair with the
most columns) start first and the grid ends on short ones. Only the first cdiv(ROWS, COLS) column tiles, from the
row block's first row, hold pairs with q <= p, so only they apply the p < q mask. The scan keeps, for every
(row, column) position of the tile, the highest clamped score fl(max(a, 0) * u) over the column tiles: no
comparison and no index, five operations a pair. A clamped score above 0 is the score of a valid pair, with the
same bits (max(a, 0) * u > 0 needs a > 0 and u > 0, and then max(a, 0) = a); an invalid pair's is 0, -0,
negative or NaN (which the maximum ignores), and so is a valid pair's that underflowed to 0. So where the
program's top is above 0, it is its best score, the smallest row p holding it is read off the positions, and
one pass over that row's columns finds the smallest q. Where it is not, the rows are scanned again as the
reference does, keeping per position the best score and column (a strictly higher score replaces, and columns
come in increasing order, so each position keeps its smallest q), for a valid pair scoring 0. The program writes
its best score and the smallest key p * n + q holding it; a second kernel, one program per sample, reduces the
(n / ROWS, B) partials the same way and writes p, q and found (two launches, no fills). The per-pair math is
that of the reference: float32 a = t_p + t_q and b = o_p + o_q, one float32 multiplication.

The tile is 3-D, (COLS // 32, ROWS, 32): column group, row, lane. Triton's default layout puts the 32 lanes of
a warp on the last axis and, that axis being full, the warps on the rows, so a thread holds ROWS / num_warps rows
and COLS // 32 columns (not every row, as a 2-D (ROWS, COLS) tile would give it), and a column tile of fewer
elements than threads is loaded in place by each warp, with no layout conversion through shared memory. The
whole column tiles load with no mask; only the last, partial one is masked. With 32 rows, 32 columns and 4 warps
a thread scans 8 rows x 1 column per step, in about 8.4 instructions a pair for sm_90 (the exact scan, with three
comparisons and two selects a pair more, in 11 to 12); the kernel takes 80 to 92 registers (64 to 72 before the
first pass was split from the exact scan).

Index arithmetic: n < 2**31 (checked by the op), but a tile's base index plus its width, and b * stride, can
exceed 2**31, so tile bases (row_base, the column start) and addresses are int64. Inside a tile the indices are
int32: row and column offsets in [0, max(ROWS, COLS)), and a position's best column as its offset from row_base
(< n).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..reference.jsma_saliency_search import check_inputs
from ._common import interpreter_maximum_ignores_nan, launch

ROWS = 32
COLS = 32
NUM_WARPS = 4
ROW_SEARCH = 512  # columns of the best pair's row searched at a time
FINISH_BLOCK = 128  # partials the finishing kernel reads at a time
_INT32_MAX = 2**31 - 1


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
def _maximum(kept, other, IGNORES_NAN: tl.constexpr):
    """The larger of `kept` (never NaN) and `other`, `kept` where `other` is NaN: IEEE maxNum, which
    tl.maximum is on a GPU. IGNORES_NAN False: by a comparison, for an interpreter whose tl.maximum returns NaN
    (Triton 3.6's; 3.8's does not)."""
    if IGNORES_NAN:
        return tl.maximum(kept, other)
    return tl.where(other > kept, other, kept)


@triton.jit
def _clamped_score(a, s, IGNORES_NAN: tl.constexpr):
    """fl(max(a, 0) * s) of the pairs with sums a and s: their score where it is above 0 (the module's docstring).
    The first pass and the search of the best row's column both take it here, so that they round alike."""
    return _maximum(0.0, a, IGNORES_NAN) * s


@triton.jit
def _top(best):
    """The highest of the positions' scores (COLS // 32, ROWS, 32)."""
    return tl.max(tl.max(tl.max(best, 2), 1), 0)


@triton.jit
def _first_row(at_top, rows, ROWS: tl.constexpr):
    """The smallest row (int32) of the positions where `at_top` holds; ROWS where it holds nowhere."""
    return tl.min(tl.min(tl.min(tl.where(at_top, rows[None, :, None], ROWS), 2), 1), 0)


@triton.jit
def _row_block(pid, batch, ROWS: tl.constexpr):
    """(b, row_base) of program `pid`: its sample and the first of its ROWS rows, both int64. Programs are
    numbered row block first: pid = row_block * batch + b."""
    row_block = pid // batch
    b = pid - row_block * batch
    return b.to(tl.int64), row_block.to(tl.int64) * ROWS


@triton.jit
def _tile(base, n, offsets, SIZE: tl.constexpr):
    """Whether each index base + offsets of a tile of SIZE indices (base: int64; offsets: int32 in [0, SIZE)) is
    < n. The count of indices left, n - base, is taken in int64 and clamped to SIZE (none when it is <= 0), so
    nothing wraps when base + SIZE passes 2**31."""
    return offsets < tl.minimum(n - base, SIZE).to(tl.int32)


@triton.jit
def _column_tiles(row_base, n, DIAGONAL_COLS: tl.constexpr, COLS: tl.constexpr):
    """(first, last), int64: the columns past the DIAGONAL_COLS diagonal ones of the row block at row_base are
    the whole tiles first, first + COLS, ... up to last, then, when last < n, the partial tile [last, n)."""
    first = row_base + DIAGONAL_COLS
    return first, first + tl.maximum(n - first, 0) // COLS * COLS


@triton.jit
def _sample_offset(b, base, stride0, stride1):
    """The element offset b * stride0 + base * stride1 of feature `base` of sample b, int64 (b, base: int64)."""
    return b * stride0 + base * stride1


@triton.jit
def _pair_key(row_base, row, column, n):
    """The key p * n + q (int64) of p = row_base + row and q = row_base + column (row, column: int32)."""
    return (row_base + row) * n + (row_base + column)


@triton.jit
def _column_offsets(COLS: tl.constexpr):
    """The offsets 0 .. COLS - 1 of a column tile as a (COLS // 32, 32) grid, offset c * 32 + lane: a warp's
    lanes hold consecutive columns."""
    return tl.arange(0, COLS // 32)[:, None] * 32 + tl.arange(0, 32)[None, :]


@triton.jit
def _load_tile(
    target_ptr,
    other_ptr,
    domain_ptr,
    b,
    base,
    offsets,
    mask,
    t_stride0,
    t_stride1,
    o_stride0,
    o_stride1,
    d_stride0,
    d_stride1,
    INCREASE: tl.constexpr,
):
    """(t, u) of the features base + offsets of sample b (int64 addresses); (-inf, -inf) where `mask` is off.
    `mask` None: every feature is < n."""
    k = offsets.to(tl.int64)
    target_ptrs = target_ptr + _sample_offset(b, base, t_stride0, t_stride1) + k * t_stride1
    other_ptrs = other_ptr + _sample_offset(b, base, o_stride0, o_stride1) + k * o_stride1
    domain_ptrs = domain_ptr + _sample_offset(b, base, d_stride0, d_stride1) + k * d_stride1
    if mask is None:
        target = tl.load(target_ptrs)
        other = tl.load(other_ptrs)
        domain = tl.load(domain_ptrs)
    else:
        target = tl.load(target_ptrs, mask=mask, other=0.0)
        other = tl.load(other_ptrs, mask=mask, other=0.0)
        domain = tl.load(domain_ptrs, mask=mask, other=0)
    return _prepare(target.to(tl.float32), other.to(tl.float32), domain, INCREASE)


@triton.jit
def _scan_tile(tp, up, tq, uq, q, best, best_q, upper, EXACT: tl.constexpr, IGNORES_NAN: tl.constexpr):
    """One tile of pairs, laid out (COLS // 32, ROWS, 32): column group, row, lane, where `upper` (the p < q
    mask; None: every pair) holds. EXACT: where a pair is valid and scores strictly higher than its position's
    best, it replaces it, with q (int32) as the position's best column. Otherwise each position keeps the highest
    clamped score (best_q is returned as given)."""
    a = tp[None, :, None] + tq[:, None, :]
    s = up[None, :, None] + uq[:, None, :]
    if EXACT:
        score = a * s
        better = (a > 0) & (s > 0) & (score > best)
        if upper is not None:
            better = better & upper
        return tl.where(better, score, best), tl.where(better, q[:, None, :], best_q)
    clamped = _clamped_score(a, s, IGNORES_NAN)
    if upper is not None:
        clamped = tl.where(upper, clamped, 0.0)
    return _maximum(best, clamped, IGNORES_NAN), best_q


@triton.jit
def _scan_columns(
    target_ptr,
    other_ptr,
    domain_ptr,
    b,
    row_base,
    n,
    tp,
    up,
    t_stride0,
    t_stride1,
    o_stride0,
    o_stride1,
    d_stride0,
    d_stride1,
    INCREASE: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
    EXACT: tl.constexpr,
    IGNORES_NAN: tl.constexpr,
):
    """Every pair of the row block at row_base (values tp, up) with a later column, by _scan_tile: the
    positions' best scores (EXACT: -1 where no valid pair; otherwise clamped, >= 0) and best columns, as offsets
    from row_base (EXACT only)."""
    rows = tl.arange(0, ROWS)
    best = tl.full((COLS // 32, ROWS, 32), -1.0 if EXACT else 0.0, tl.float32)
    best_q = tl.zeros((COLS // 32, ROWS, 32), tl.int32)  # the column's offset from row_base
    cols = _column_offsets(COLS)

    # The diagonal tiles: columns row_base .. row_base + DIAGONAL * COLS - 1, which cover the rows' own indices;
    # only pairs with row < column count.
    DIAGONAL: tl.constexpr = (ROWS + COLS - 1) // COLS
    for d in tl.static_range(DIAGONAL):
        start = row_base + d * COLS
        tq, uq = _load_tile(
            target_ptr, other_ptr, domain_ptr, b, start, cols, _tile(start, n, cols, COLS), t_stride0, t_stride1,
            o_stride0, o_stride1, d_stride0, d_stride1, INCREASE,
        )  # fmt: skip
        q = d * COLS + cols
        best, best_q = _scan_tile(
            tp, up, tq, uq, q, best, best_q, rows[None, :, None] < q[:, None, :], EXACT, IGNORES_NAN
        )

    # The tiles past them, where every column is after every row: the whole ones with no mask at all, then the
    # last, partial one. Column starts are int64 (row_base is); a column's offset from row_base is below
    # n < 2**31 wherever it can win (columns past n have t = u = -inf).
    first, last = _column_tiles(row_base, n, DIAGONAL * COLS, COLS)
    for start in range(first, last, COLS):
        tq, uq = _load_tile(
            target_ptr, other_ptr, domain_ptr, b, start, cols, None, t_stride0, t_stride1, o_stride0, o_stride1,
            d_stride0, d_stride1, INCREASE,
        )  # fmt: skip
        q = (start - row_base).to(tl.int32) + cols
        best, best_q = _scan_tile(tp, up, tq, uq, q, best, best_q, None, EXACT, IGNORES_NAN)
    if last < n:
        tq, uq = _load_tile(
            target_ptr, other_ptr, domain_ptr, b, last, cols, _tile(last, n, cols, COLS), t_stride0, t_stride1,
            o_stride0, o_stride1, d_stride0, d_stride1, INCREASE,
        )  # fmt: skip
        q = (last - row_base).to(tl.int32) + cols
        best, best_q = _scan_tile(tp, up, tq, uq, q, best, best_q, None, EXACT, IGNORES_NAN)
    return best, best_q


@triton.jit
def _first_column_scoring(
    target_ptr,
    other_ptr,
    domain_ptr,
    b,
    p,
    tp,
    up,
    n,
    top,
    t_stride0,
    t_stride1,
    o_stride0,
    o_stride1,
    d_stride0,
    d_stride1,
    INCREASE: tl.constexpr,
    BLOCK: tl.constexpr,
    IGNORES_NAN: tl.constexpr,
):
    """The smallest q > p (int64) whose clamped score with feature p (values tp, up) is `top`, a score above 0 of
    p's row; BLOCK columns at a time, stopping at the first block that holds it."""
    offsets = tl.arange(0, BLOCK)
    found = n.to(tl.int64)
    start = p + 1
    while (start < n) & (found == n):
        tq, uq = _load_tile(
            target_ptr, other_ptr, domain_ptr, b, start, offsets, _tile(start, n, offsets, BLOCK), t_stride0,
            t_stride1, o_stride0, o_stride1, d_stride0, d_stride1, INCREASE,
        )  # fmt: skip
        score = _clamped_score(tp + tq, up + uq, IGNORES_NAN)
        found = tl.min(tl.where(score == top, start + offsets, n))
        start += BLOCK
    return found


@triton.jit
def _search_kernel(
    target_ptr,
    other_ptr,
    domain_ptr,
    score_ptr,
    key_ptr,
    batch,
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
    ROW_SEARCH: tl.constexpr,
    IGNORES_NAN: tl.constexpr,
):
    pid = tl.program_id(0)
    b, row_base = _row_block(pid, batch, ROWS)
    rows = tl.arange(0, ROWS)
    tp, up = _load_tile(
        target_ptr, other_ptr, domain_ptr, b, row_base, rows, _tile(row_base, n, rows, ROWS), t_stride0, t_stride1,
        o_stride0, o_stride1, d_stride0, d_stride1, INCREASE,
    )  # fmt: skip
    best, _ = _scan_columns(
        target_ptr, other_ptr, domain_ptr, b, row_base, n, tp, up, t_stride0, t_stride1, o_stride0, o_stride1,
        d_stride0, d_stride1, INCREASE, ROWS, COLS, False, IGNORES_NAN,
    )  # fmt: skip
    top = _top(best)
    if top > 0:
        # The best score; its smallest row is the first holding it, its smallest column is searched in that row.
        first_row = _first_row(best == top, rows, ROWS)
        tp_row = tl.max(tl.where(rows == first_row, tp, float("-inf")))  # tp[first_row], exactly
        up_row = tl.max(tl.where(rows == first_row, up, float("-inf")))
        p = row_base + first_row
        q = _first_column_scoring(
            target_ptr, other_ptr, domain_ptr, b, p, tp_row, up_row, n, top, t_stride0, t_stride1, o_stride0,
            o_stride1, d_stride0, d_stride1, INCREASE, ROW_SEARCH, IGNORES_NAN,
        )  # fmt: skip
        key = p * n + q
    else:
        # No pair scores above 0: the exact scan, for a valid pair scoring 0 (top -1 where there is none). The
        # smallest (p, q) among the positions holding the top score: the smallest row, then in it the smallest
        # column, both int32; then the int64 key (p * n + q passes 2**31).
        best, best_q = _scan_columns(
            target_ptr, other_ptr, domain_ptr, b, row_base, n, tp, up, t_stride0, t_stride1, o_stride0, o_stride1,
            d_stride0, d_stride1, INCREASE, ROWS, COLS, True, IGNORES_NAN,
        )  # fmt: skip
        top = _top(best)
        at_top = best == top
        first_row = _first_row(at_top, rows, ROWS)
        in_first_row = at_top & (rows[None, :, None] == first_row)
        first_q = tl.min(tl.min(tl.min(tl.where(in_first_row, best_q, 0x7FFFFFFF), 2), 1), 0)
        key = _pair_key(row_base, first_row, first_q, n)
    tl.store(score_ptr + pid, top)
    tl.store(key_ptr + pid, key)


@triton.jit
def _finish_kernel(score_ptr, key_ptr, p_ptr, q_ptr, found_ptr, batch, n, row_blocks, BLOCK: tl.constexpr):
    """One program per sample b: the best of its row blocks' partials (score_ptr / key_ptr [row block, b]), the
    highest score, then the smallest key, written as p = key // n, q = key % n and found (bool), or -1, -1 and
    False where no pair is valid."""
    b = tl.program_id(0)
    offsets = tl.arange(0, BLOCK)
    best = tl.full((BLOCK,), -1.0, tl.float32)
    best_key = tl.full((BLOCK,), 0x7FFFFFFFFFFFFFFF, tl.int64)
    for start in range(0, row_blocks, BLOCK):
        block = start + offsets
        partial = block.to(tl.int64) * batch + b
        score = tl.load(score_ptr + partial, mask=block < row_blocks, other=-1.0)
        key = tl.load(key_ptr + partial, mask=block < row_blocks, other=0x7FFFFFFFFFFFFFFF)
        better = (score > best) | ((score == best) & (key < best_key))
        best = tl.where(better, score, best)
        best_key = tl.where(better, key, best_key)
    top = tl.max(best)
    key = tl.min(tl.where(best == top, best_key, 0x7FFFFFFFFFFFFFFF))
    found = top >= 0
    tl.store(p_ptr + b, tl.where(found, key // n, -1))
    tl.store(q_ptr + b, tl.where(found, key % n, -1))
    tl.store(found_ptr + b, found)


@triton_op("nemesis_fast::jsma_saliency_search_triton", mutates_args=())
def jsma_saliency_search_triton(
    target_grad: torch.Tensor, other_grad: torch.Tensor, search_domain: torch.Tensor, increase: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_inputs(target_grad, other_grad, search_domain, increase)
    batch, n = target_grad.shape
    device = target_grad.device
    if batch == 0 or n < 2:  # no pair to search: the only fills (the finishing kernel writes every output)
        minus_one = torch.full((batch,), -1, dtype=torch.int64, device=device)
        return minus_one, minus_one.clone(), torch.zeros(batch, dtype=torch.bool, device=device)
    row_blocks = triton.cdiv(n, ROWS)
    if batch * row_blocks > _INT32_MAX:  # one program per (row block, sample), on a grid's first axis
        raise ValueError(f"target_grad is too large for the Triton kernel: {batch} x {n} (B * n / {ROWS} >= 2**31)")
    # Partials (row block, sample), indexed by program.
    score = torch.empty(row_blocks, batch, dtype=torch.float32, device=device)
    key = torch.empty(row_blocks, batch, dtype=torch.int64, device=device)
    launch(
        _search_kernel,
        (row_blocks * batch,),
        target_grad,
        other_grad,
        search_domain,  # bool: Triton loads it as bytes
        score,
        key,
        batch,
        n,
        *target_grad.stride(),
        *other_grad.stride(),
        *search_domain.stride(),
        INCREASE=increase,
        ROWS=ROWS,
        COLS=COLS,
        ROW_SEARCH=ROW_SEARCH,
        IGNORES_NAN=interpreter_maximum_ignores_nan(),
        num_warps=NUM_WARPS,
    )
    p = torch.empty(batch, dtype=torch.int64, device=device)
    q = torch.empty(batch, dtype=torch.int64, device=device)
    found = torch.empty(batch, dtype=torch.bool, device=device)
    launch(_finish_kernel, (batch,), score, key, p, q, found, batch, n, row_blocks, BLOCK=FINISH_BLOCK)
    return p, q, found
