"""SparseGPT (Frantar & Alistarh 2023): one-shot second-order (OBS) pruning with weight updates.

For each Linear, with the calibration Hessian H = X^T X (fp32, accumulated with addmm), damped
by ``percdamp`` x mean(diag H), and the upper Cholesky factor U of H^-1: columns are processed in
blocks of ``blocksize``; at the start of a block the mask is chosen by the OBS saliency
w^2 / [U]_jj^2 over the block (exact count per block; N:M: per group of M columns as they are
reached); each column is then zeroed where masked and its error is propagated to the remaining
columns of the block (rank-1 updates), and the block's accumulated error to all later columns
in one matmul (lazy batch update). Rows are independent given H, so layers that share an input
(q/k/v, gate/up) are processed together as one stacked matrix.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ..calibration import Hessians, describe_batch, fix_dead, inverse_cholesky_upper
from ..registry import register
from .base import PruneConfig
from .engine import finish_unstructured, prepare_calibrated
from .masks import lowest_k_mask, prune_mask, zero_


class SparseGPTConfig(PruneConfig):
    """SparseGPT: OBS reconstruction with lazy block updates; N:M; OWL."""

    supports_pattern = True
    supports_calibration_dtype = True
    supports_offload = True
    method: Literal["sparsegpt"] = "sparsegpt"
    percdamp: float = Field(0.01, gt=0.0, lt=1.0, description="damping, fraction of mean(diag H)")
    blocksize: int = Field(128, ge=1, le=4096)
    owl: bool = Field(False, description="OWL outlier-weighted layer-wise sparsity")
    owl_lambda: float = Field(0.08, ge=0.0, lt=0.5)
    owl_m: float = Field(5.0, gt=0.0)

    @model_validator(mode="after")
    def _check_blocksize(self) -> SparseGPTConfig:
        nm = self.nm()
        if nm is not None and self.blocksize % nm[1]:
            raise ValueError(f"blocksize {self.blocksize} is not a multiple of M={nm[1]} of pattern "
                             f"{self.pattern}: N:M groups must not straddle blocks (e.g. blocksize 128)")
        return self


def _block_counts(rows: int, cols: int, sparsity: float, i1: int, i2: int) -> int:
    """Zeros to place in columns [i1, i2) so that the matrix total is exactly round(numel * s)."""
    return int(round(rows * i2 * sparsity)) - int(round(rows * i1 * sparsity))


#: columns handled one by one before their error is pushed to the rest of the block in one matmul
_SUB = 16


@torch.no_grad()
def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, segments: list[tuple[int, int, float]],
                    nm: tuple[int, int] | None, blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """Prune the fp32 matrix ``W`` [rows, cols] in place given H [cols, cols] (consumed).

    ``segments``: (row_start, row_end, sparsity) — the stacked layers, each with its exact count.
    The damped inverse's Cholesky factor uses all threads; the column loop runs on ONE intra-op
    thread: it is thousands of small ops on a sub-panel for which thread synchronisation costs
    more than the arithmetic (measured 10-20x faster on a busy 2-core machine).
    """
    fix_dead(H, W)
    Hinv = inverse_cholesky_upper(H, percdamp, inplace=True, what="SparseGPT: the calibration")
    del H
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _obs_prune(W, Hinv, segments, nm, blocksize)
    finally:
        torch.set_num_threads(threads)


def _obs_prune(W: torch.Tensor, Hinv: torch.Tensor, segments: list[tuple[int, int, float]],
               nm: tuple[int, int] | None, blocksize: int) -> torch.Tensor:
    """The column loop of :func:`sparsegpt_prune` given the upper Cholesky factor of ``H^-1``.

    It works on the transposed matrix: column j of W is the contiguous row j of ``WT``, so every
    per-column slice and every rank-1 / lazy update is contiguous. Inside a block, columns are
    taken ``_SUB`` at a time: rank-1 updates stay inside the sub-block, and the sub-block's error
    reaches the block's later columns in one matmul — the same arithmetic as the
    column-by-column original, with ~10x fewer tiny ops.
    """
    rows, cols = W.shape
    WT = W.t().contiguous()
    dinv = Hinv.diagonal().reciprocal()
    sub = _SUB if nm is None else max(nm[1], _SUB // nm[1] * nm[1])
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        P = WT[i1:i2]  # [B, rows] view: updated in place
        U = Hinv[i1:i2, i1:i2]
        d_inv = dinv[i1:i2]
        mask = torch.zeros_like(P, dtype=torch.bool)
        if nm is None:
            sal = P.pow(2).mul_(d_inv.pow(2).unsqueeze(1))  # OBS saliency w^2 / [U]_jj^2
            for a, b, s in segments:
                k = _block_counts(b - a, cols, s, i1, i2)
                if k > 0:
                    mask[:, a:b] = lowest_k_mask(sal[:, a:b].reshape(-1), k, dim=0).view(i2 - i1, b - a)
        scale = mask.float().mul_(d_inv.unsqueeze(1))  # mask / d
        err = torch.empty_like(P)
        count = i2 - i1
        for j1 in range(0, count, sub):
            j2 = min(j1 + sub, count)
            for i in range(j1, j2):
                if nm is not None and i % nm[1] == 0:
                    n, m = nm
                    sal = P[i:i + m].pow(2).mul_(d_inv[i:i + m].pow(2).unsqueeze(1))
                    idx = torch.topk(sal, m - n, dim=0, largest=False).indices
                    mask[i:i + m].scatter_(0, idx, True)
                    scale[i:i + m] = mask[i:i + m].float().mul_(d_inv[i:i + m].unsqueeze(1))
                e = torch.mul(P[i], scale[i], out=err[i])
                if i + 1 < j2:
                    P[i + 1:j2].addr_(U[i, i + 1:j2], e, alpha=-1)
            if j2 < count:
                P[j2:].addmm_(U[j1:j2, j2:].t(), err[j1:j2], alpha=-1)
        zero_(P, mask)
        if i2 < cols:
            WT[i2:].addmm_(Hinv[i1:i2, i2:].t(), err, alpha=-1)
    W.copy_(WT.t())
    return W


@register(SparseGPTConfig)
@torch.no_grad()
def apply_sparsegpt(bundle, cfg: SparseGPTConfig, ctx):
    run = prepare_calibrated(bundle, cfg, ctx)
    linears, nm, ids, extra = run.linears, run.nm, run.ids, run.extra
    acc = Hessians()

    def on_chunk(names, x):
        acc.add(names[0], x)

    def on_group(names, x):
        if x is not None:
            acc.add(names[0], x)
        H, tokens = acc.pop(names[0])
        mods = [linears[n] for n in names]
        if not tokens:  # no token reached these (e.g. an idle expert): exact-count magnitude pruning
            for name, m in zip(names, mods, strict=True):
                zero_(m.weight, prune_mask(m.weight.detach().abs().float(), run.sparsity(name, cfg.overrides),
                                           nm, per="layer"))
            return
        W = torch.cat([m.weight.detach().float() for m in mods], 0) if len(mods) > 1 \
            else mods[0].weight.detach().float().clone()
        segs, r = [], 0
        for name, m in zip(names, mods, strict=True):
            segs.append((r, r + m.out_features, run.sparsity(name, cfg.overrides)))
            r += m.out_features
        sparsegpt_prune(W, H, segs, nm, cfg.blocksize, cfg.percdamp)
        for (a, b, _), m in zip(segs, mods, strict=True):
            m.weight.copy_(W[a:b])

    run.calibrate(cfg, on_group, on_chunk, ctx.progress)
    extra.update({**describe_batch(ids, "calibration_samples"), "percdamp": cfg.percdamp, "blocksize": cfg.blocksize})
    return finish_unstructured(bundle, cfg, linears, extra)
