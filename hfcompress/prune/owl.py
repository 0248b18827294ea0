"""OWL (Yin et al. 2023, "Outlier Weighed Layerwise sparsity").

One dense calibration pass (block by block) computes, per block, the fraction of Wanda scores
|W_ij| * ||X_j|| that exceed ``m`` x the mean score of their layer ("outlier ratio" D_b). The
ratios are min-max normalised to [0, 2*lambda], centred, and each block gets sparsity
``target - (r_b - mean r)``: blocks rich in outliers are pruned less; the mean sparsity stays
the target. Blocks are counted over all stacks (encoder, then decoder).
"""

from __future__ import annotations

from typing import Any

import torch

from ..calibration import Sequential, SquaredNorms, block_index, find_block_stacks


@torch.no_grad()
def owl_block_sparsities(model, info: Any, linears: dict[str, Any], ids, target: float, lam: float, m: float,
                         batch_size: int | None, progress: bool = False, compute_dtype=None) -> list[float]:
    stacks = getattr(info, "stacks", None) or find_block_stacks(model)
    offsets = [sum(len(s) for s in stacks[:k]) for k in range(len(stacks))]
    n_blocks = sum(len(s) for s in stacks)
    outliers = [0] * n_blocks
    counts = [0] * n_blocks
    acc = SquaredNorms()

    def on_group(names, x):
        if x is not None:
            acc.add(names[0], x)
        norm = acc.pop_norms(names[0])
        for name in names:
            si, bi = block_index(name, stacks)
            o, c = outliers_of(linears[name].weight, norm, m)
            outliers[offsets[si] + bi] += o
            counts[offsets[si] + bi] += c

    Sequential(model, None, linears, on_group, acc_add(acc), batch_size, progress=progress,
               compute_dtype=compute_dtype, stacks=stacks).run(ids)
    return sparsities_from_ratios([o / c if c else 0.0 for o, c in zip(outliers, counts, strict=True)], target, lam)


def outliers_of(weight: torch.Tensor, norm: torch.Tensor | None, m: float) -> tuple[int, int]:
    """(Wanda scores ``|W_ij| * ||X_j||`` above ``m`` x their mean, scores) of one layer."""
    score = weight.detach().abs().float()
    if norm is not None:
        score = score * norm
    return int((score > m * score.mean()).sum()), score.numel()


def sparsities_from_ratios(ratios: list[float], target: float, lam: float) -> list[float]:
    """Per-block sparsity from the blocks' outlier ratios (see the module doc)."""
    r = torch.tensor(ratios, dtype=torch.float64)
    span = float(r.max() - r.min())
    if span <= 0:
        return [target] * len(ratios)
    r = (r - r.min()) / span * (2 * lam)
    sp = target - (r - r.mean())
    return [float(min(max(x, 0.0), 0.99)) for x in sp]


def acc_add(acc: SquaredNorms):
    """``on_chunk`` callback adding each chunk's input to ``acc`` under the group's first name."""
    return lambda names, x: acc.add(names[0], x)
