"""What the unstructured pruning methods share, on top of the calibration layer.

* :func:`arch_info` / :func:`target_linears`: the model's block stacks
  (:func:`hfcompress.calibration.find_block_stacks`, found from the model — no list of model
  types) and the weight matrices to prune in them: every ``nn.Linear``, transformers ``Conv1D``
  (by its real ``[in, out]`` orientation) and each expert of fused 3-D expert tensors; router
  layers never (:func:`hfcompress.calibration.targets.find_targets`).
* :func:`prepare_calibrated`: targets, N:M check, calibration windows and OWL's block
  sparsities for the calibrated methods (Wanda, SparseGPT), which then hook
  :class:`hfcompress.calibration.Sequential`.
* :func:`finish_unstructured`: the summary (exact sparsity over the targets).

The scheduler, input capture and calibration data live in :mod:`hfcompress.calibration`, the
mask math in :mod:`hfcompress.prune.masks`; both are re-exported here for existing imports.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..calibration import (
    AUTO_CHUNK_TOKENS,
    BlockStack,
    DenseInputs,
    Sequential,
    calibration_windows,
    find_block_stacks,
    find_targets,
    release_free_memory,
)
from ..calibration import block_index as _stack_block_index
from ..errors import UsageError
from ..loading.offload import iter_onloaded
from .masks import global_threshold, lowest_k_mask, prune_mask, zero_
from .owl import owl_block_sparsities

__all__ = ["AUTO_CHUNK_TOKENS", "ArchInfo", "CalibratedRun", "Sequential", "arch_info", "block_index",
           "DenseInputs", "calibration_ids", "check_widths", "finish_unstructured", "global_threshold", "lowest_k_mask",
           "prepare_calibrated", "prune_mask", "release_free_memory", "sparsity_for", "sparsity_summary",
           "target_linears", "zero_"]


@dataclass
class ArchInfo:
    """The model's block stacks; ``layers`` / ``layers_name`` / ``kind`` describe the main one
    (the only one for decoder-only and encoder-only models; the decoder of encoder–decoders)."""

    kind: str  # role of the main stack: "decoder" | "encoder"
    model_type: str
    layers: nn.ModuleList
    layers_name: str  # e.g. "model.layers"
    base: nn.Module  # the model
    stacks: list[BlockStack] = field(default_factory=list)

    def layer_name(self, i: int) -> str:
        return f"{self.layers_name}.{i}" if self.layers_name else str(i)

    @property
    def n_blocks(self) -> int:
        """Blocks over all stacks."""
        return sum(len(s) for s in self.stacks)


def arch_info(model: nn.Module) -> ArchInfo:
    """The model's block stacks, or a one-line UnsupportedError naming the missing capability."""
    stacks = find_block_stacks(model)
    main = stacks[-1]
    model_type = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
    return ArchInfo(main.role, model_type, main.blocks, main.name, model, stacks)


def target_linears(model: nn.Module, info: ArchInfo, targets: list[str] | None,
                   exclude: list[str] | None = None) -> dict[str, Any]:
    """``{full name: target}`` to prune: inside the blocks by default, else matching ``targets``.

    A target is an ``nn.Linear``, or an adapter with the same ``weight`` ([out, in] view),
    ``in_features`` and ``out_features`` for ``Conv1D`` and fused experts.
    """
    return find_targets(model, info.stacks or find_block_stacks(model), targets, exclude)


def sparsity_for(name: str, default: float, overrides: dict[str, float]) -> float:
    for pat, s in overrides.items():
        if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, f"*{pat}"):
            return float(s)
    return default


def block_index(name: str, info: ArchInfo) -> int | None:
    """Block number of a target over all stacks in execution order (None outside the blocks)."""
    where = _stack_block_index(name, info.stacks)
    if where is None:
        return None
    si, bi = where
    return sum(len(s) for s in info.stacks[:si]) + bi


def check_widths(linears: dict[str, Any], nm: tuple[int, int] | None) -> None:
    if nm is None:
        return
    for name, lin in linears.items():
        if lin.in_features % nm[1]:
            raise UsageError(f"pattern {nm[0]}:{nm[1]}: M={nm[1]} does not divide the input width "
                             f"{lin.in_features} of {name}: choose another M or exclude that module")


def calibration_ids(bundle: Any, cal: Any) -> torch.Tensor | dict[str, torch.Tensor]:
    """The calibration batch of ``bundle``'s model, cached per process: ``[samples, seq_len]`` token
    windows, or a dict of batched image / audio inputs (:func:`hfcompress.calibration.calibration_windows`)."""
    return calibration_windows(bundle.tokenizer, bundle.model, cal)


def finish_unstructured(bundle: Any, cfg: Any, linears: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Summary for the report; installs the sparse saver when asked."""
    summary = {**sparsity_summary(linears, bundle.model), **extra}
    if cfg.pattern:
        summary["pattern"] = cfg.pattern
    if getattr(cfg, "calibration_dtype", None):
        summary["calibration_dtype"] = cfg.calibration_dtype
    if getattr(cfg, "low_memory", False):
        summary["low_memory"] = True
    if getattr(cfg, "dense_inputs", False):
        summary["dense_inputs"] = True
    if cfg.sparse_format:
        from .sparse_format import save_sparse

        bundle.saver = save_sparse
        bundle.meta["sparse_format"] = True
        summary["save_format"] = "hfcompress-sparse"
    return summary


def sparsity_summary(linears: dict[str, Any], model: Any = None) -> dict[str, Any]:
    """Exact sparsity over the targets (an offloaded ``model``'s read back one module at a time)."""
    total = zeros = 0
    items = iter_onloaded(model, linears, writeback=False) if model is not None else linears.items()
    for _, lin in items:
        w = lin.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return {"target_sparsity_actual": round(zeros / max(total, 1), 5), "targeted_modules": len(linears),
            "targeted_parameters": total}


@dataclass
class CalibratedRun:
    """What a calibrated unstructured method (Wanda, SparseGPT) needs before its pass."""

    model: Any
    info: ArchInfo
    linears: dict[str, Any]
    nm: tuple[int, int] | None
    ids: torch.Tensor | dict[str, torch.Tensor]
    base: float
    block_sparsity: list[float] | None
    extra: dict[str, Any]

    def sparsity(self, name: str, overrides: dict[str, float]) -> float:
        """Target sparsity of one matrix: OWL's per-block value (if on), then the overrides."""
        b = block_index(name, self.info) if self.block_sparsity is not None else None
        s = self.base if b is None else self.block_sparsity[b]
        return sparsity_for(name, s, overrides)

    def no_tokens(self, names: list[str]) -> None:
        """Record targets no calibration token reached (pruned by magnitude instead)."""
        if names:
            self.extra["no_calibration_tokens"] = sorted(names)
            self.extra["no_calibration_tokens_fallback"] = "magnitude"

    def calibrate(self, cfg: Any, on_group: Any, on_chunk: Any, progress: bool) -> None:
        """The method's one :class:`Sequential` pass over the calibration windows. With
        ``cfg.dense_inputs`` (:class:`DenseInputs`) the weight updates wait for each block's dense outputs."""
        deferral = DenseInputs(self.linears, on_group) if getattr(cfg, "dense_inputs", False) else None
        seq = Sequential(self.model, self.info, self.linears, deferral.on_group if deferral else on_group, on_chunk,
                         cfg.batch_size, progress=progress, compute_dtype=cfg.compute_dtype(),
                         in_order=not cfg.low_memory, stacks=self.info.stacks,
                         after_block=deferral.after_block if deferral else None)
        seq.run(self.ids)
        if deferral is not None:
            deferral.flush()
        self.no_tokens(seq.stats["no_tokens"])


def prepare_calibrated(bundle: Any, cfg: Any, ctx: Any) -> CalibratedRun:
    """Targets, N:M check, calibration windows and (with ``cfg.owl``) OWL block sparsities."""
    model = bundle.model
    info = arch_info(model)
    linears = target_linears(model, info, cfg.targets, cfg.exclude)
    nm = cfg.nm()
    check_widths(linears, nm)
    ids = calibration_ids(bundle, cfg.calibration_or_default())
    base = cfg.effective_sparsity()
    block_sp = None
    extra: dict[str, Any] = {}
    if cfg.owl:
        block_sp = owl_block_sparsities(model, info, linears, ids, base, cfg.owl_lambda, cfg.owl_m,
                                        cfg.batch_size, progress=ctx.progress, compute_dtype=cfg.compute_dtype())
        extra["owl_block_sparsity"] = [round(x, 4) for x in block_sp]
    return CalibratedRun(model, info, linears, nm, ids, base, block_sp, extra)
