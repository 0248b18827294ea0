"""A test-only stage method, registered so the recipe / pipeline plumbing can be tested
independently of the real methods."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from hfcompress.config import CalibrationConfig
from hfcompress.prune.base import PruneConfig
from hfcompress.registry import register_method


class ZeroRowsConfig(PruneConfig):
    """Test method: zero the first ``rows`` output rows of every Linear in the blocks."""

    method: Literal["test-zero-rows"] = "test-zero-rows"
    rows: int = Field(1, ge=0)
    scale: float = 1.0
    modules: list[str] = Field(default_factory=list)
    calibration: CalibrationConfig | None = None


def apply_zero_rows(bundle, config, ctx):
    zeroed = 0
    with torch.no_grad():
        for name, module in bundle.model.named_modules():
            if isinstance(module, torch.nn.Linear) and "layers" in name:
                module.weight[: config.rows] = 0
                module.weight.mul_(config.scale)
                zeroed += config.rows * module.weight.shape[1]
    return {"zeroed": zeroed}


register_method("prune", "test-zero-rows", ZeroRowsConfig, apply_zero_rows)
