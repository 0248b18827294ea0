"""Magnitude pruning: zero the weights of smallest |w|.

``scope="layer"`` (default): exactly round(numel * sparsity) zeros per matrix; ``"row"``:
per output row; ``"global"``: one threshold over all targeted matrices (layers end up with
different sparsities). With ``pattern="N:M"`` the M - N smallest of every M consecutive inputs.
With ``structured`` the importance of an FFN channel / head group is the L2 norm of its weights.
No calibration data is needed (except ``structured="layers"``, which ranks layers by the
angular distance between their input and output hidden states).
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
from .engine import (
    arch_info,
    check_widths,
    finish_unstructured,
    global_threshold,
    prune_mask,
    sparsity_for,
    target_linears,
    zero_,
)
from .structured import apply_structured


# Like every method's config (e.g. TaylorConfig), this class shares its shape with the others by
# design: the registry, the CLI flags and the docs table are read from it.
class MagnitudeConfig(PruneConfig):
    """Magnitude pruning (per layer, per row or global; N:M; structured by weight norms)."""

    supports_pattern = True
    supports_structured = True
    supports_offload = True
    method: Literal["magnitude"] = "magnitude"
    scope: Literal["layer", "row", "global"] = Field(
        "layer", description="where the count of zeros is exact: per matrix, per output row, or one global "
                             "threshold")

    @classmethod
    def uses_calibration(cls, params: dict[str, Any]) -> bool:
        return params.get("structured") == "layers"  # layers are ranked on calibration activations


@register(MagnitudeConfig)
@torch.no_grad()
def apply_magnitude(bundle: ModelBundle, cfg: MagnitudeConfig, ctx: StageContext) -> dict[str, Any]:
    if cfg.structured:
        return apply_structured(bundle, cfg, ctx, importance="magnitude")
    model = bundle.model
    info = arch_info(model)
    linears = target_linears(model, info, cfg.targets, cfg.exclude)
    nm = cfg.nm()
    check_widths(linears, nm)
    s = cfg.effective_sparsity()
    if cfg.scope == "global" and nm is None:
        if cfg.overrides:
            raise UsageError("overrides do not apply to scope=global: use scope=layer")
        if is_offloaded(model):
            raise UsageError("scope=global needs every weight in memory at once, and this model is offloaded "
                             "(--max-memory): use --scope layer or row")
        t = global_threshold([lin.weight.detach().abs() for lin in linears.values()], s)
        for lin in linears.values():
            zero_(lin.weight, lin.weight.abs() < t)
        return finish_unstructured(bundle, cfg, linears, {"scope": "global", "threshold": t})
    for name, lin in iter_onloaded(model, linears):  # offloaded: one module in memory at a time
        sp = sparsity_for(name, s, cfg.overrides)
        mask = prune_mask(lin.weight.detach().abs().float(), sp, nm, per=cfg.scope)
        zero_(lin.weight, mask)
    return finish_unstructured(bundle, cfg, linears, {"scope": cfg.scope})
