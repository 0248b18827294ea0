"""Round-to-nearest integer weights stored as compressed-tensors ``pack-quantized`` (``rtn``).

``hfcompress quantize MODEL --method rtn --bits 4 --group-size 128 [--asymmetric] -o out`` rounds
every Linear's weights onto compressed-tensors' int grid (scale, and a zero point when
asymmetric, per group of ``group_size`` inputs or per output channel) with no calibration.
The output reloads with plain ``from_pretrained`` where ``compressed-tensors`` is installed
(see docs/FORMATS.md). ``gptq`` writes the same format with calibrated error correction.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..formats import compressed_tensors as ct
from ..registry import register
from .base import QuantizeConfig, check_not_quantized, input_sparsity, select_linears


class IntWeightConfig(QuantizeConfig):
    """Options shared by the int weight-only methods that write compressed-tensors ``pack-quantized``."""

    kind: ClassVar[str] = "uniform"
    bits: Literal[4, 8] = Field(4, description="weight bits (4 or 8)")  # type: ignore[assignment]
    group_size: int = Field(128, ge=-1, le=65536,
                            description="inputs per scale group; -1 or 0: one scale per output channel")
    symmetric: bool = Field(True, description="symmetric grid (scale only); false adds a zero point per group")

    def group(self) -> int | None:
        return self.group_size if self.group_size > 0 else None


class RTNConfig(IntWeightConfig):
    """Round-to-nearest int4 / int8 weights (group-wise or per channel), stored as compressed-tensors pack-quantized."""

    method: Literal["rtn"] = "rtn"


def prepare(bundle: Any, config: IntWeightConfig) -> tuple[dict[str, Any], list[str], dict[str, int | None], float]:
    """Checks before any work: (Linear modules to quantize, kept names, group plan, sparsity before)."""
    model = bundle.model
    check_not_quantized(model)
    chosen, kept = select_linears(model, config.skip_modules)
    plan = ct.group_plan(chosen, config.group())
    return chosen, kept, plan, input_sparsity(model, list(chosen))


def finish(bundle: Any, ctx: Any, config: IntWeightConfig, chosen: dict[str, Any], kept: list[str],
           plan: dict[str, int | None], grids: dict[str, Any], sparsity_before: float) -> dict[str, Any]:
    """Install the compressed-tensors saver and build the stage summary (sizes from a scratch save)."""
    from .bnb import measure

    params = {name: grids[name].params() for name in chosen}
    ct.attach(bundle, bits=config.bits, symmetric=config.symmetric, plan=plan, params=params, kept=kept)
    summary = ct.scheme_summary(config.bits, config.symmetric, plan, config.group())
    summary.update(measure(bundle, ctx, list(chosen), kept, sparsity_before=sparsity_before))
    summary["loads_with"] = "compressed-tensors"
    return summary


@register(RTNConfig)
@torch.no_grad()
def apply_rtn(bundle: Any, config: RTNConfig, ctx: Any) -> dict[str, Any]:
    chosen, kept, plan, sparsity_before = prepare(bundle, config)
    grids = {}
    for name, module in chosen.items():
        args = ct.weight_args(config.bits, plan[name], config.symmetric)
        Q, grids[name] = ct.rtn_quantize(module.weight.data, args)
        module.weight.data = Q
    summary = {"backend": "hfcompress round-to-nearest -> compressed-tensors", "kind": config.kind}
    summary.update(finish(bundle, ctx, config, chosen, kept, plan, grids, sparsity_before))
    return summary
