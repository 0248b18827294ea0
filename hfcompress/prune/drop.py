"""Drop listed transformer blocks (``method: drop-blocks``): the model is rebuilt shallower.

``structured: layers`` chooses the blocks itself (smallest angular distance); this method takes
the choice as data, e.g. the set ``hfcompress search --method drop`` found::

    - prune: {method: drop-blocks, blocks: [3, 7, 21]}

Block numbers count the model's (single) block stack from 0. Depth fields and per-layer config
lists are kept consistent (:func:`hfcompress.layouts.surgery.keep_layers_in_config`), so a plain
``from_pretrained`` loads the result.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from ..errors import UnsupportedError, UsageError
from ..layouts.surgery import keep_layers_in_config, rebuild, renumber_blocks
from ..registry import register
from .base import PruneConfig
from .structured import _blocks


class DropBlocksConfig(PruneConfig):
    """Drop the listed blocks (a searched or hand-picked set) and rebuild the model shallower."""

    method: Literal["drop-blocks"] = "drop-blocks"
    sparsity: float | None = Field(None, ge=0.0, lt=1.0, description="unused by drop-blocks (give blocks)")
    blocks: list[int] = Field(default_factory=list, description="block numbers to drop (from 0)")
    calibration: None = None

    @classmethod
    def uses_calibration(cls, params: dict[str, Any]) -> bool:
        return False

    @field_validator("blocks")
    @classmethod
    def _blocks_ok(cls, v: list[int]) -> list[int]:
        if any(i < 0 for i in v) or len(set(v)) != len(v):
            raise ValueError(f"blocks {v}: distinct block numbers >= 0")
        return sorted(v)

    @model_validator(mode="after")
    def _blocks_given(self) -> DropBlocksConfig:
        # after the fields (not a field validator): an omitted `blocks` is refused too, not only `blocks: []`
        if not self.blocks:
            raise ValueError("give the blocks to drop, e.g. blocks: [3, 7]")
        return self


@register(DropBlocksConfig)
@torch.no_grad()
def apply_drop_blocks(bundle: Any, cfg: DropBlocksConfig, ctx: Any) -> dict[str, Any]:
    model = bundle.model
    if cfg.targets or cfg.exclude or cfg.overrides or cfg.pattern or cfg.structured:
        raise UsageError("drop-blocks takes only `blocks`: remove targets / exclude / overrides / pattern / "
                         "structured")
    blocks = _blocks(model)
    stacks = {b.stack.name for b in blocks}
    if len(stacks) != 1:
        raise UnsupportedError(f"drop-blocks handles models with one block stack; this one has {len(stacks)}")
    total = len(blocks)
    if max(cfg.blocks) >= total or len(cfg.blocks) >= total:
        raise UsageError(f"blocks {cfg.blocks}: the model has blocks 0..{total - 1} and must keep at least one")
    kept = [i for i in range(total) if i not in cfg.blocks]
    before = sum(p.numel() for p in model.parameters())
    name = blocks[0].stack.name
    state = renumber_blocks(dict(model.state_dict()), name, kept)
    new_config = copy.deepcopy(model.config)
    keep_layers_in_config(new_config, blocks[0].layout.fields.layers, kept, total)
    bundle.model = rebuild(model, new_config, state)
    return {"removed_layers": cfg.blocks, "num_hidden_layers": [total, len(kept)],
            "parameters": [before, sum(p.numel() for p in bundle.model.parameters())]}
