"""GPTQ: calibrated int4 / int8 weights stored as compressed-tensors ``pack-quantized`` (``gptq``).

``hfcompress quantize MODEL --method gptq --bits 4 --group-size 128 [--asymmetric] -o out`` runs our
pure-torch GPTQ (Frantar et al. 2022; the OBS error correction of
:func:`hfcompress.quantize.calibrated.gptq_quantize`, block by block on calibration text)
onto compressed-tensors' int grid, and saves a checkpoint that plain ``from_pretrained``
loads where ``compressed-tensors`` is installed (and vLLM serves). Linear layers outside the
transformer blocks (other than the skipped ones) are rounded to nearest on the same grid.

``gptq-optimum`` keeps the old path through ``optimum.gptq`` / transformers ``GPTQConfig``:
it needs the ``gptqmodel`` package (``pip install 'hfcompress[gptq]'``, torch >= 2.14.1) and
fails before any work without it; its output is a GPTQ checkpoint (gptqmodel loads it).
"""

from __future__ import annotations

import fnmatch
import importlib.util
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from ..calibration import calibration_windows, describe_batch, modality_of
from ..config import CalibrationConfig, StrictModel
from ..errors import UnsupportedError, UsageError
from ..formats import compressed_tensors as ct
from ..registry import register
from .base import QuantizeConfig, check_not_quantized, model_dtype, scratch_dir, select_linears
from .rtn import IntWeightConfig, finish, prepare

GPTQ_MISSING = ("GPTQ needs the gptqmodel package: pip install 'hfcompress[gptq]' (requires torch>=2.14.1)")


class ModuleWidth(StrictModel):
    """One module's override: its bit width and (optionally) its own group size, e.g. ``{bits: 3, group_size: 32}``."""

    bits: int = Field(ge=2, le=8, description="bit width (2-8, compressed-tensors pack-quantized)")
    group_size: int | None = Field(None, ge=-1, le=65536,
                                   description="inputs per scale group for this module (-1: per output channel; "
                                               "None: the stage's group size), with the same 64 / 32 fallback")

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int | None) -> int | None:
        if v == 0:
            raise ValueError("group_size is a positive number of inputs or -1 (per output channel), not 0")
        return v


class GPTQConfig(IntWeightConfig):
    """GPTQ-style calibrated int4 / int8 weights (our engine), stored as compressed-tensors pack-quantized."""

    method: Literal["gptq"] = "gptq"
    calibration: CalibrationConfig = Field(default_factory=lambda: CalibrationConfig(samples=32, seq_len=512))
    damp: float = Field(0.01, gt=0.0, lt=1.0, description="Hessian dampening, fraction of its mean diagonal")
    block_size: int = Field(128, ge=8, le=4096, description="columns per lazy OBS update batch")
    batch_size: int = Field(4, ge=1, le=512, description="calibration windows per forward pass")
    act_order: bool = Field(True, description="process columns by decreasing Hessian diagonal (static groups: "
                                              "the stored layout is unchanged)")
    clip_search: bool = Field(True, description="per row and group, shrink the min/max range (0.75-1.0) where "
                                                 "that lowers the Hessian-weighted rounding error")
    overrides: dict[str, int | ModuleWidth] = Field(
        default_factory=dict,
        description="per-module bit widths (2-8), by module name or glob, e.g. {'model.layers.0.mlp.down_proj': 8}, "
                    "or a width and group size, e.g. {'*.down_proj': {bits: 3, group_size: 32}} (mixed-precision "
                    "checkpoint: one config group per bit width and group size)")
    dense_inputs: bool = Field(False, description="calibrate every layer on the dense model's inputs (each "
                                                  "block's outputs from its unquantized weights), as the level "
                                                  "database of `hfcompress search --method gptq` does")

    @field_validator("overrides")
    @classmethod
    def _override_bits(cls, v: dict[str, int | ModuleWidth]) -> dict[str, int | ModuleWidth]:
        bad = {k: b for k, b in v.items() if isinstance(b, int) and not 2 <= b <= 8}
        if bad:
            raise ValueError(f"override bit widths must be 2..8 (compressed-tensors pack-quantized), not {bad}")
        # a width without its own group size is just the width
        return {k: b.bits if isinstance(b, ModuleWidth) and b.group_size is None else b for k, b in v.items()}

    @model_validator(mode="after")
    def _mixed_needs_one_scheme_per_module(self) -> GPTQConfig:
        if self.overrides and self.uniform_scheme() and (
                {self._override(p)[0] for p in self.overrides} != {self.bits}
                or any(isinstance(b, ModuleWidth) for b in self.overrides.values())):
            raise ValueError("per-module bit / group-size overrides need symmetric weights without quantized "
                             "embeddings (an asymmetric / embedding checkpoint is dequantized at load with one "
                             "scheme): drop --asymmetric / quantize_embeddings or the overrides")
        return self

    def _override(self, pattern: str) -> tuple[int, int | None]:
        o = self.overrides[pattern]
        return (o.bits, o.group_size) if isinstance(o, ModuleWidth) else (o, None)

    @staticmethod
    def _matches(name: str, pat: str) -> bool:
        return name == pat or fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, f"*{pat}")

    def _override_for(self, name: str) -> tuple[int, int | None] | None:
        """The module's own override, else the first matching pattern's; None without one."""
        if name in self.overrides:
            return self._override(name)
        return next((self._override(p) for p in self.overrides if self._matches(name, p)), None)

    def bits_for(self, name: str) -> int:
        """The module's bit width: its own override, else the first matching pattern, else ``bits``."""
        o = self._override_for(name)
        return self.bits if o is None else o[0]

    def group_for(self, name: str) -> int | None:
        """The module's own group size request (-1: per channel), or None for the stage's ``group_size``."""
        o = self._override_for(name)
        return None if o is None else o[1]

    def module_plan(self, chosen: dict[str, Any], plan: dict[str, int | None]) -> dict[str, int | None]:
        """``plan`` with each module's own group size (the stage's 64 / 32 fallback applied to it)."""
        own = {n: g for n in chosen if (g := self.group_for(n)) is not None}
        out = dict(plan)
        for n, g in own.items():
            out[n] = ct.fit_group(chosen[n].in_features, g, n)
        return out

    def check_overrides(self, names: list[str]) -> None:
        """One-line error for an override that names none of the quantized modules."""
        unknown = [p for p in self.overrides if not any(self._matches(n, p) for n in names)]
        if unknown:
            raise UsageError(f"gptq overrides name no quantized module: {', '.join(unknown[:3])}"
                             f"{' ...' if len(unknown) > 3 else ''} (give module names such as "
                             "model.layers.0.mlp.down_proj or patterns such as '*.down_proj')")


@register(GPTQConfig)
@torch.no_grad()
def apply_gptq(bundle: Any, config: GPTQConfig, ctx: Any) -> dict[str, Any]:
    from .calibrated import calibrate_blocks

    chosen, kept, plan, sparsity_before = prepare(bundle, config)
    config.check_overrides(list(chosen))
    plan = config.module_plan(chosen, plan)
    ids = _calibration_ids(bundle, config.calibration)
    model = bundle.model

    bits_of = {n: config.bits_for(n) for n in chosen}

    def make_grid(module: Any) -> ct.CTIntGrid:
        name = names[id(module)]
        return ct.CTIntGrid(ct.weight_args(bits_of[name], plan[name], config.symmetric), module.in_features,
                            module.weight.dtype, clip_search=config.clip_search)

    names = {id(m): n for n, m in chosen.items()}
    info = calibrate_blocks(model, ids, chosen, make_grid, config, progress=getattr(ctx, "progress", False))
    grids = dict(info["grids"])
    for name, module in chosen.items():
        if name not in grids:  # outside the block stack: round to nearest on the same grid
            Q, grids[name] = ct.rtn_quantize(module.weight.data,
                                             ct.weight_args(bits_of[name], plan[name], config.symmetric))
            module.weight.data = Q
    summary: dict[str, Any] = {
        "backend": "hfcompress GPTQ (OBS error correction) -> compressed-tensors", "kind": config.kind,
        "calibrated_modules": len(info["calibrated"]),
        "rounded_modules": sorted(set(chosen) - set(info["calibrated"])),
        "calibration": {**describe_batch(ids), "dataset": config.calibration.dataset},
    }
    if config.dense_inputs:
        summary["dense_inputs"] = True
    summary.update(finish(bundle, ctx, config, chosen, kept, plan, grids, sparsity_before, bits_of=bits_of))
    return summary


def _calibration_ids(bundle: Any, calibration: CalibrationConfig) -> torch.Tensor | dict[str, torch.Tensor]:
    from ..data import calibration_ids

    if modality_of(bundle.model) != "text":  # image / speech: inputs from the model's own processor
        return calibration_windows(bundle.tokenizer, bundle.model, calibration)
    if bundle.tokenizer is None:
        raise UsageError("GPTQ calibration needs a tokenizer, and this model has none: save one with the model")
    limit = getattr(bundle.model.config, "max_position_embeddings", None)
    if limit and calibration.seq_len > limit:
        raise UsageError(f"calibration seq_len {calibration.seq_len} exceeds the model's {limit} positions: "
                         f"pass --seq-len {limit}")
    ids = calibration_ids(bundle.tokenizer, calibration)
    return frame_for_encoder(bundle, ids)


def frame_for_encoder(bundle: Any, ids: torch.Tensor) -> torch.Tensor:
    """Encoders always see ``[CLS] ... [SEP]``, whose hidden states carry the model's outlier features:
    calibration windows cut from running text get them at both ends, so the Hessians include them."""
    tok = bundle.tokenizer
    cls, sep = getattr(tok, "cls_token_id", None), getattr(tok, "sep_token_id", None)
    if getattr(bundle.model.config, "is_decoder", False) or hasattr(bundle.model, "generate") or \
            cls is None or sep is None or ids.shape[1] < 3:
        return ids
    ids = ids.clone()
    ids[:, 0], ids[:, -1] = cls, sep
    return ids


class GPTQOptimumConfig(QuantizeConfig):
    """GPTQ via optimum.gptq + gptqmodel (needs torch >= 2.14.1): a GPTQ checkpoint that gptqmodel loads."""

    kind: ClassVar[str] = "uniform"
    method: Literal["gptq-optimum"] = "gptq-optimum"
    bits: int = Field(4, description="weight bits: 2, 3, 4 or 8")  # type: ignore[assignment]
    group_size: int = Field(64, ge=-1, le=65536, description="inputs per scale group (-1: per row)")
    damp_percent: float = Field(0.1, gt=0.0, lt=1.0)
    desc_act: bool = False
    sym: bool = True
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in (2, 3, 4, 8):
            raise ValueError(f"GPTQ supports 2, 3, 4 or 8 bits, not {v}: pass e.g. --bits 4")
        return v


def gptq_available() -> bool:
    return importlib.util.find_spec("gptqmodel") is not None and importlib.util.find_spec("optimum") is not None


@register(GPTQOptimumConfig)
def apply_gptq_optimum(bundle: Any, config: GPTQOptimumConfig, ctx: Any) -> dict[str, Any]:
    if not gptq_available():
        raise UnsupportedError(GPTQ_MISSING)
    model = bundle.model
    check_not_quantized(model)
    if bundle.tokenizer is None:
        raise UsageError("GPTQ calibration needs a tokenizer, and this model has none: save one with the model")
    chosen, kept = select_linears(model, config.skip_modules)
    if config.group_size > 0:
        bad = sorted({m.in_features for m in chosen.values() if m.in_features % config.group_size})
        if bad:
            raise UsageError(f"group size {config.group_size} does not divide in_features {bad}: "
                             "pick a divisor (e.g. 64 or 32)")
    from transformers import GPTQConfig as HfGPTQConfig

    from ..data import calibration_ids
    from .base import save_plain
    from .bnb import measure

    ids = calibration_ids(bundle.tokenizer, config.calibration)
    texts = [bundle.tokenizer.decode(row) for row in ids]
    qconf = HfGPTQConfig(bits=config.bits, group_size=config.group_size, damp_percent=config.damp_percent,
                         desc_act=config.desc_act, sym=config.sym, dataset=texts, tokenizer=bundle.tokenizer,
                         model_seqlen=config.calibration.seq_len, modules_in_block_to_quantize=None)
    with scratch_dir(ctx, "gptq") as folder:
        save_plain(model, folder / "fp")
        try:
            new = type(model).from_pretrained(folder / "fp", quantization_config=qconf, dtype=model_dtype(model),
                                              device_map="cpu")
        except (ValueError, RuntimeError, ImportError) as exc:
            raise UnsupportedError(f"GPTQ failed: {' '.join(str(exc).split())[:200]}") from None
    new.eval()
    bundle.model = new
    bundle.saver = None
    names = [n for n, m in new.named_modules() if hasattr(m, "qweight")]
    summary: dict[str, Any] = {"backend": "optimum.gptq + gptqmodel", "kind": config.kind,
                               "format": "GPTQ (reload with plain from_pretrained; needs gptqmodel)",
                               "weight_bits": config.bits, "group_size": config.group_size}
    try:
        summary.update(measure(bundle, ctx, [], kept, sparsity_before=0.0))
        summary["quantized_modules"] = len(names)
    except Exception as exc:  # noqa: BLE001 - size accounting is best-effort for third-party layers
        summary["size_error"] = str(exc)[:200]
    return summary
