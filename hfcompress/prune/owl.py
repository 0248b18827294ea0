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
    acc = SquaredNorms()
    norms: dict[str, torch.Tensor | None] = {}

    def on_group(names, x):
        if x is not None:
            acc.add(names[0], x)
        norms.update(dict.fromkeys(names, acc.pop_norms(names[0])))

    Sequential(model, None, linears, on_group, acc_add(acc), batch_size, progress=progress,
               compute_dtype=compute_dtype, stacks=stacks).run(ids)
    return owl_from_norms({n: mod.weight for n, mod in linears.items()}, norms, stacks, target, lam, m)


def stack_block(name: str, stacks: list[Any]) -> int | None:
    """The block a module belongs to, numbered over all stacks (encoder, then decoder); None outside them."""
    where = block_index(name, stacks)
    return None if where is None else sum(len(s) for s in stacks[:where[0]]) + where[1]


def owl_from_norms(weights: dict[str, torch.Tensor], norms: dict[str, torch.Tensor | None], stacks: list[Any],
                   target: float, lam: float, m: float) -> list[float]:
    """Per-block sparsities from each layer's weight and input norms ``||X_j||`` (None: no token)."""
    outliers = [0] * sum(len(s) for s in stacks)
    counts = list(outliers)
    for name, weight in weights.items():
        b = stack_block(name, stacks)
        if b is None:
            continue
        score = weight.detach().abs().float()
        if norms.get(name) is not None:
            score = score * norms[name]
        outliers[b] += int((score > m * score.mean()).sum())
        counts[b] += score.numel()
    ratios = torch.tensor([o / c if c else 0.0 for o, c in zip(outliers, counts, strict=True)], dtype=torch.float64)
    span = float(ratios.max() - ratios.min())
    if span <= 0:
        return [target] * len(outliers)
    r = (ratios - ratios.min()) / span * (2 * lam)
    sp = target - (r - r.mean())
    return [float(min(max(x, 0.0), 0.99)) for x in sp]


def acc_add(acc: SquaredNorms):
    """``on_chunk`` callback adding each chunk's input to ``acc`` under the group's first name."""
    return lambda names, x: acc.add(names[0], x)
