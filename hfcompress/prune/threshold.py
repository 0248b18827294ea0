"""Threshold pruning: zero every targeted weight with |w| below a threshold.

Give the threshold directly (``threshold: 0.01``) or let it be found from ``sparsity``: the
single global magnitude threshold over all targeted matrices that zeros that fraction of
their weights (global magnitude pruning).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ..errors import UsageError
from ..loading import ModelBundle
from ..loading.offload import is_offloaded, iter_onloaded
from ..registry import register
from ..stage import StageContext
from .base import PruneConfig
from .engine import arch_info, finish_unstructured, global_threshold, target_linears, zero_


class ThresholdConfig(PruneConfig):
    """Zero weights with |w| < threshold (given, or found globally from `sparsity`)."""

    supports_offload = True
    method: Literal["threshold"] = "threshold"
    threshold: float | None = Field(None, ge=0.0, description="absolute |w| threshold; overrides sparsity")

    @classmethod
    def uses_calibration(cls, params: dict[str, Any]) -> bool:
        return False


@register(ThresholdConfig)
@torch.no_grad()
def apply_threshold(bundle: ModelBundle, cfg: ThresholdConfig, ctx: StageContext) -> dict[str, Any]:
    model = bundle.model
    info = arch_info(model)
    linears = target_linears(model, info, cfg.targets, cfg.exclude)
    t = cfg.threshold
    if t is None and is_offloaded(model):
        raise UsageError("a threshold found from --sparsity needs every weight in memory at once, and this model "
                         "is offloaded (--max-memory): give --threshold, or use magnitude --scope layer")
    if t is None:
        t = global_threshold([lin.weight.detach().abs() for lin in linears.values()], cfg.effective_sparsity())
    for _, lin in iter_onloaded(model, linears):  # offloaded: one module in memory at a time
        zero_(lin.weight, lin.weight.abs() < t)
    return finish_unstructured(bundle, cfg, linears, {"threshold": t})
