"""Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, pruned per output row.

``X_j`` is the j-th input feature of the layer over all calibration tokens. The blocks are
calibrated sequentially (``hfcompress.calibration.Sequential``): each block sees the outputs of the already
pruned blocks before it, and inside a block each Linear sees inputs from the already-pruned
layers before it (one forward per block). ``owl: true`` adds OWL (Yin et al. 2023) non-uniform
layer-wise sparsity: blocks with more outliers (scores > owl_m x mean) keep more weights,
sparsity ranging over target +- owl_lambda.
With ``structured``, activations are the importance: FFN channel j scores ||h_j|| * ||W_down[:, j]||.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..calibration import SquaredNorms, describe_batch
from ..registry import register
from .base import PruneConfig
from .engine import finish_unstructured, prepare_calibrated
from .masks import prune_mask, zero_
from .owl import acc_add


class WandaConfig(PruneConfig):
    """Wanda: |w| x input-activation norm, per output row; N:M; OWL; structured by activations."""

    supports_pattern = True
    supports_calibration_dtype = True
    supports_structured = True
    supports_offload = True
    method: Literal["wanda"] = "wanda"
    owl: bool = Field(False, description="OWL outlier-weighted layer-wise sparsity")
    owl_lambda: float = Field(0.08, ge=0.0, lt=0.5)
    owl_m: float = Field(5.0, gt=0.0)


@register(WandaConfig)
@torch.no_grad()
def apply_wanda(bundle, cfg: WandaConfig, ctx):
    if cfg.structured:
        from .structured import apply_structured

        return apply_structured(bundle, cfg, ctx, importance="activations")
    run = prepare_calibrated(bundle, cfg, ctx)
    linears, nm, ids, extra = run.linears, run.nm, run.ids, run.extra
    acc = SquaredNorms()

    def on_group(names, x):
        if x is not None:
            acc.add(names[0], x)
        norm = acc.pop_norms(names[0])  # None: no token reached these (e.g. an idle expert): magnitude
        for name in names:
            w = linears[name].weight
            score = w.detach().abs().float()
            if norm is not None:
                score.mul_(norm)
            zero_(w, prune_mask(score, run.sparsity(name, cfg.overrides), nm, per="row"))

    run.calibrate(cfg, on_group, acc_add(acc), ctx.progress)
    extra.update(describe_batch(ids, "calibration_samples"))
    return finish_unstructured(bundle, cfg, linears, extra)
