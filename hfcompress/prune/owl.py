"""OWL (Yin et al. 2023, "Outlier Weighed Layerwise sparsity").

One dense calibration pass (block by block) computes, per block, the fraction of Wanda scores
|W_ij| * ||X_j|| that exceed ``m`` x the mean score of their layer ("outlier ratio" D_b). The
ratios are min-max normalised to [0, 2*lambda], centred, and each block gets sparsity
``target - (r_b - mean r)``: blocks rich in outliers are pruned less; the mean sparsity stays
the target.
"""

from __future__ import annotations

import torch

from .engine import Sequential, block_index


@torch.no_grad()
def owl_block_sparsities(model, info, linears, ids, target: float, lam: float, m: float,
                         batch_size: int | None, progress: bool = False, compute_dtype=None) -> list[float]:
    n_blocks = len(info.layers)
    outliers = [0] * n_blocks
    counts = [0] * n_blocks
    acc: dict[str, torch.Tensor] = {}

    def on_chunk(names, x):
        v = torch.linalg.vector_norm(x, dim=0, dtype=torch.float32).pow_(2)
        acc[names[0]] = acc[names[0]] + v if names[0] in acc else v

    def on_group(names, x):
        sq = torch.linalg.vector_norm(x, dim=0, dtype=torch.float32).pow_(2) if x is not None \
            else acc.pop(names[0])
        norm = sq.sqrt_()
        for name in names:
            score = linears[name].weight.detach().abs().float() * norm
            b = block_index(name, info)
            outliers[b] += int((score > m * score.mean()).sum())
            counts[b] += score.numel()

    Sequential(model, info, linears, on_group, on_chunk, batch_size, progress=progress,
               compute_dtype=compute_dtype).run(ids)
    ratios = torch.tensor([o / c if c else 0.0 for o, c in zip(outliers, counts, strict=True)], dtype=torch.float64)
    span = float(ratios.max() - ratios.min())
    if span <= 0:
        return [target] * n_blocks
    r = (ratios - ratios.min()) / span * (2 * lam)
    sp = target - (r - r.mean())
    return [float(min(max(x, 0.0), 0.99)) for x in sp]
