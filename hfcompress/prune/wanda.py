"""Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, pruned per output row.

``X_j`` is the j-th input feature of the layer over all calibration tokens. The blocks are
calibrated sequentially (``engine.Sequential``): each block sees the outputs of the already
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

from ..registry import register
from .base import PruneConfig
from .engine import Sequential, finish_unstructured, prepare_calibrated, prune_mask, zero_


class WandaConfig(PruneConfig):
    """Wanda: |w| x input-activation norm, per output row; N:M; OWL; structured by activations."""

    supports_pattern = True
    supports_calibration_dtype = True
    supports_structured = True
    method: Literal["wanda"] = "wanda"
    owl: bool = Field(False, description="OWL outlier-weighted layer-wise sparsity")
    owl_lambda: float = Field(0.08, ge=0.0, lt=0.5)
    owl_m: float = Field(5.0, gt=0.0)


def _norm_sq(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=0, dtype=torch.float32).pow_(2)


@register(WandaConfig)
@torch.no_grad()
def apply_wanda(bundle, cfg: WandaConfig, ctx):
    if cfg.structured:
        from .structured import apply_structured

        return apply_structured(bundle, cfg, ctx, importance="activations")
    run = prepare_calibrated(bundle, cfg, ctx)
    model, info, linears, nm, ids, extra = run.model, run.info, run.linears, run.nm, run.ids, run.extra
    acc: dict[str, torch.Tensor] = {}

    def on_chunk(names, x):
        key = names[0]
        v = _norm_sq(x)
        acc[key] = acc[key] + v if key in acc else v

    def on_group(names, x):
        sq = _norm_sq(x) if x is not None else acc.pop(names[0])
        norm = sq.sqrt_()
        for name in names:
            lin = linears[name]
            s = run.sparsity(name, cfg.overrides)
            score = lin.weight.detach().abs().float() * norm
            zero_(lin.weight, prune_mask(score, s, nm, per="row"))

    Sequential(model, info, linears, on_group, on_chunk, cfg.batch_size, progress=ctx.progress,
               compute_dtype=cfg.compute_dtype(), in_order=not cfg.low_memory).run(ids)
    extra.update({"calibration_samples": int(ids.shape[0]), "seq_len": int(ids.shape[1])})
    return finish_unstructured(bundle, cfg, linears, extra)
