"""First-order Taylor pruning: importance |w * dL/dw| accumulated over calibration batches
(:mod:`hfcompress.prune.gradients`). Pruning is per output row (or N:M). With ``structured``,
a channel / head group scores the sum of its weights' Taylor scores (:mod:`.structured`).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..calibration import describe_batch
from ..calibration.modality import taylor_loss_kind
from ..registry import register
from .base import PruneConfig
from .engine import (
    arch_info,
    calibration_ids,
    check_widths,
    finish_unstructured,
    prune_mask,
    sparsity_for,
    target_linears,
    zero_,
)
from .gradients import check_taylor_task, target_scores, taylor_scores
from .structured import apply_structured

__all__ = ["TaylorConfig", "apply_taylor", "check_taylor_task", "target_scores", "taylor_scores"]


class TaylorConfig(PruneConfig):
    """First-order Taylor |w x grad| (accumulated over calibration batches); N:M; structured."""

    supports_pattern = True
    supports_structured = True
    method: Literal["taylor"] = "taylor"
    scope: Literal["row", "layer"] = "row"


@register(TaylorConfig)
def apply_taylor(bundle, cfg: TaylorConfig, ctx):
    if cfg.structured:
        return apply_structured(bundle, cfg, ctx, importance="taylor")
    model = bundle.model
    info = arch_info(model)
    check_taylor_task(bundle)
    linears = target_linears(model, info, cfg.targets, cfg.exclude)
    nm = cfg.nm()
    check_widths(linears, nm)
    ids = calibration_ids(bundle, cfg.calibration_or_default())
    scores = target_scores(bundle, linears, ids, cfg.batch_size, progress=ctx.progress)
    s = cfg.effective_sparsity()
    with torch.no_grad():
        for name, lin in linears.items():
            sp = sparsity_for(name, s, cfg.overrides)
            zero_(lin.weight, prune_mask(scores.pop(name), sp, nm, per=cfg.scope))
    extra = describe_batch(ids, "calibration_samples")
    if isinstance(ids, dict):
        extra["taylor_loss"] = taylor_loss_kind(ids)
    return finish_unstructured(bundle, cfg, linears, extra)
