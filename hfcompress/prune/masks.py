"""Mask math of the pruning methods: exact per-row / per-layer top-k, N:M groups, global thresholds.

Every mask marks the entries to ZERO (the lowest-scoring ones); counts are exact, ties broken
by position. ``zero_`` applies a mask in place (works on views, e.g. a transposed ``Conv1D``
weight or one expert of a fused 3-D tensor).
"""

from __future__ import annotations

import math

import torch


def lowest_k_mask(scores: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """Boolean mask of exactly ``k`` lowest entries along ``dim`` (ties broken by position).

    ``kthvalue`` + a comparison instead of ``topk``: 2-5x faster on CPU for the large k of
    pruning (half a row), and the count stays exact when scores tie (e.g. already-zero weights).
    """
    n = scores.shape[dim]
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    kth = torch.kthvalue(scores, k, dim=dim, keepdim=True).values
    mask = scores <= kth
    if bool((mask.sum(dim, keepdim=True, dtype=torch.int32) == k).all()):  # no tie straddles the k-th value
        return mask
    below = scores < kth
    eq = scores == kth
    need = k - below.sum(dim, keepdim=True)
    return below.logical_or_(eq & (eq.cumsum(dim) <= need))


def zero_(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight[mask] = 0`` in place (+0.0, never -0.0, so saved bytes are canonical).

    A multiply is ~4x faster than ``masked_fill_`` on CPU; ``add_(0.0)`` turns the -0.0 that
    negative weights times zero give into +0.0.
    """
    return weight.mul_(mask.logical_not()).add_(0.0)


def prune_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None,
               per: str = "row") -> torch.Tensor:
    """Boolean mask of the entries to ZERO: the lowest-scoring ones.

    ``per="row"``: round(cols * sparsity) per output row; ``per="layer"``: round(numel * sparsity)
    over the whole matrix; ``nm=(N, M)``: M - N lowest in every group of M consecutive inputs.
    """
    rows, cols = scores.shape
    if nm is not None:
        n, m = nm
        g = scores.reshape(rows, cols // m, m)
        idx = torch.topk(g, m - n, dim=-1, largest=False).indices
        mask = torch.zeros_like(g, dtype=torch.bool)
        mask.scatter_(-1, idx, True)
        return mask.reshape(rows, cols)
    if per == "row":
        return lowest_k_mask(scores, int(round(cols * sparsity)), dim=1)
    return lowest_k_mask(scores.reshape(-1), int(round(rows * cols * sparsity)), dim=0).reshape(rows, cols)


def global_threshold(tensors: list[torch.Tensor], fraction: float) -> float:
    """Value t such that about ``fraction`` of all entries of ``tensors`` are < t (bisection on
    counts, so no concatenated copy of all the weights is made)."""
    total = sum(t.numel() for t in tensors)
    target = int(round(total * fraction))
    if target <= 0:
        return -math.inf
    lo = 0.0
    hi = max(float(t.max()) for t in tensors) * (1 + 1e-6) + 1e-30
    for _ in range(64):
        mid = (lo + hi) / 2
        cnt = sum(int((t < mid).sum()) for t in tensors)
        if cnt < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(hi, 1e-30):
            break
    return hi
