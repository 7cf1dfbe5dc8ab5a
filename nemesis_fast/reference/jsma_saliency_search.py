"""Reference JSMA saliency-map pair search: it materialises the pair scores, a block of samples and rows at a
time, which is the specification of the op (and, as one block, the "materialised eager" search that the
benchmark compares against)."""

from __future__ import annotations

import torch

from .._checks import check_bool, check_tensor

# Largest block of pair scores the reference materialises at once (elements); the blocks only bound memory.
BLOCK_ELEMENTS = 1 << 24


def check_inputs(
    target_grad: torch.Tensor, other_grad: torch.Tensor, search_domain: torch.Tensor, increase: bool
) -> None:
    """The argument checks of every backend: ValueError or TypeError naming the argument."""
    check_tensor(target_grad, "target_grad", ndim=2)
    check_tensor(other_grad, "other_grad", dtypes=(target_grad.dtype,))
    if not isinstance(search_domain, torch.Tensor) or search_domain.dtype != torch.bool:
        got = search_domain.dtype if isinstance(search_domain, torch.Tensor) else type(search_domain).__name__
        raise ValueError(f"search_domain must be a bool tensor, got {got}")
    for name, tensor in (("other_grad", other_grad), ("search_domain", search_domain)):
        if tensor.shape != target_grad.shape:
            raise ValueError(
                f"target_grad and {name} must have the same shape (B, n), got {tuple(target_grad.shape)} and "
                f"{tuple(tensor.shape)}"
            )
        if tensor.device != target_grad.device:
            raise ValueError(f"{name} must be on {target_grad.device}, got {tensor.device}")
    check_bool(increase, "increase")
    if target_grad.shape[1] > 2**31 - 1:
        raise ValueError(f"target_grad has {target_grad.shape[1]} features; at most 2**31 - 1 are supported")


def saliency_scores(
    target_grad: torch.Tensor, other_grad: torch.Tensor, search_domain: torch.Tensor, increase: bool, rows: slice
) -> torch.Tensor:
    """Pair scores (B, len(rows), n) in float32: the score of pair (p, q) for p in `rows`, or -1 where the pair
    is not valid (p >= q, outside the domain, a NaN, or the sign conditions fail).

    a = t_p + t_q and b = o_p + o_q are float32 additions of the float32-converted gradients; a pair is valid
    when a > 0 and b < 0 (increase) or a < 0 and b > 0 (decrease), and scores a * (-b) or (-a) * b, one
    float32 multiplication. Valid scores are >= 0 (an underflow gives 0), so -1 marks the invalid ones.
    """
    t = target_grad.float()
    o = other_grad.float()
    n = t.shape[1]
    a = t[:, rows, None] + t[:, None, :]
    b = o[:, rows, None] + o[:, None, :]
    if increase:
        valid = (a > 0) & (b < 0)
        score = a * -b
    else:
        valid = (a < 0) & (b > 0)
        score = -a * b
    p = torch.arange(n, device=t.device)[rows]
    above_diagonal = p[:, None] < torch.arange(n, device=t.device)[None, :]
    valid &= above_diagonal & search_domain[:, rows, None] & search_domain[:, None, :]
    return score.masked_fill_(~valid, -1.0)


def jsma_saliency_search(
    target_grad: torch.Tensor,
    other_grad: torch.Tensor,
    search_domain: torch.Tensor,
    increase: bool,
    *,
    block_elements: int = BLOCK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best valid pair p < q of each sample: (p, q, found), each of shape (B,), p and q int64.

    Args:
        target_grad: (B, n) gradient of the target class (logit or probability) per input feature.
        other_grad: (B, n) gradient of the sum of the other classes.
        search_domain: (B, n) bool, the features that may be chosen.
        increase: True when the features are to be increased (JSMA with theta > 0), False to decrease them.
        block_elements: at most this many pair scores are held at once (a memory bound only).

    Returns:
        p, q: the pair of highest score (see :func:`saliency_scores`); ties go to the smallest p, then the
            smallest q; -1 where no pair is valid. found: (B,) bool, whether a pair is valid.
    """
    check_inputs(target_grad, other_grad, search_domain, increase)
    batch, n = target_grad.shape
    device = target_grad.device
    best = torch.full((batch,), -1.0, device=device)
    best_key = torch.zeros(batch, dtype=torch.int64, device=device)
    rows_per_block = max(1, block_elements // max(n, 1))
    samples_per_block = max(1, block_elements // max(n * n, 1))
    for s0 in range(0, batch, samples_per_block):
        samples = slice(s0, s0 + samples_per_block)
        for r0 in range(0, n, rows_per_block):
            rows = slice(r0, min(n, r0 + rows_per_block))
            score = saliency_scores(
                target_grad[samples], other_grad[samples], search_domain[samples], increase, rows
            ).flatten(1)
            # argmax returns the first maximum, which in row-major order is the smallest (p, q).
            value, index = score.max(1)
            # Earlier blocks hold smaller p, so a later block wins only with a strictly higher score.
            better = value > best[samples]
            best[samples] = torch.where(better, value, best[samples])
            best_key[samples] = torch.where(better, index + r0 * n, best_key[samples])
    found = best >= 0
    minus_one = torch.full_like(best_key, -1)
    p = torch.where(found, best_key // max(n, 1), minus_one)
    q = torch.where(found, best_key % max(n, 1), minus_one)
    return p, q, found
