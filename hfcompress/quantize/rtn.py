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
from pydantic import Field, field_validator

from ..formats import compressed_tensors as ct
from ..registry import register
from .base import QuantizeConfig, check_not_quantized, input_sparsity, select_linears
from .bnb import measure


class IntWeightConfig(QuantizeConfig):
    """Options shared by the int weight-only methods that write compressed-tensors ``pack-quantized``."""

    kind: ClassVar[str] = "uniform"
    bits: int = Field(4, description="weight bits (4 or 8)")  # type: ignore[assignment]
    group_size: int = Field(128, ge=-1, le=65536,
                            description="inputs per scale group; -1 or 0: one scale per output channel")
    symmetric: bool = Field(True, description="symmetric grid (scale only); false adds a zero point per group")
    quantize_embeddings: bool = Field(False, description="also quantize the input embeddings and an untied output "
                                                         "head (round-to-nearest, same bits and groups)")

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in (4, 8):
            raise ValueError(f"rtn / gptq store 4 or 8 bits (compressed-tensors pack-quantized), not {v}: "
                             "pass --bits 4 or --bits 8")
        return v

    def uniform_scheme(self) -> bool:
        """One group size for all modules: the checkpoint is dequantized at load (asymmetric / embeddings)."""
        return not self.symmetric or self.quantize_embeddings

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
    extra = embedding_modules(model, kept) if config.quantize_embeddings else {}
    plan = ct.group_plan({**chosen, **extra}, config.group(), uniform=config.uniform_scheme())
    return chosen, kept, plan, input_sparsity(model, list(chosen))


def embedding_modules(model: Any, kept: list[str]) -> dict[str, Any]:
    """The input embeddings and an untied output head (name -> module), for ``quantize_embeddings``."""
    out: dict[str, Any] = {}
    names = {id(m): n for n, m in model.named_modules()}
    emb = model.get_input_embeddings()
    if isinstance(emb, torch.nn.Embedding):
        out[names[id(emb)]] = emb
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, torch.nn.Linear) and id(head) in names and (
            emb is None or head.weight.data_ptr() != emb.weight.data_ptr()):
        out[names[id(head)]] = head
    return out


@torch.no_grad()
def quantize_embeddings(bundle: Any, config: IntWeightConfig, kept: list[str], plan: dict[str, int | None],
                        grids: dict[str, Any]) -> dict[str, Any]:
    """Round the embeddings / untied head onto the Linears' grid (``plan`` already holds their groups)."""
    modules = embedding_modules(bundle.model, kept)
    for name, module in modules.items():
        Q, grids[name] = ct.rtn_quantize(module.weight.data, ct.weight_args(config.bits, plan[name],
                                                                            config.symmetric))
        module.weight.data = Q
        if name in kept:
            kept.remove(name)
    return modules


def finish(bundle: Any, ctx: Any, config: IntWeightConfig, chosen: dict[str, Any], kept: list[str],
           plan: dict[str, int | None], grids: dict[str, Any], sparsity_before: float,
           bits_of: dict[str, int] | None = None) -> dict[str, Any]:
    """Install the compressed-tensors saver and build the stage summary (sizes from a scratch save).
    ``bits_of``: per-module bit widths (mixed precision; default ``config.bits`` everywhere)."""

    embeddings = quantize_embeddings(bundle, config, kept, plan, grids) if config.quantize_embeddings else {}
    params = {name: grids[name].params() for name in [*chosen, *embeddings]}
    bits_of = {**dict.fromkeys([*chosen, *embeddings], config.bits), **(bits_of or {})}
    ct.attach(bundle, bits_of=bits_of, symmetric=config.symmetric, plan=plan, params=params, kept=kept,
              embeddings=list(embeddings))
    summary = ct.scheme_summary(config.bits, config.symmetric, {n: plan[n] for n in chosen}, config.group())
    if len({bits_of[n] for n in chosen}) > 1:
        counts: dict[str, int] = {}
        for n in chosen:
            counts[str(bits_of[n])] = counts.get(str(bits_of[n]), 0) + 1
        summary["weight_bits"] = summary["bits"] = "mixed"  # (the card's tags read "bits")
        summary["modules_per_bits"] = dict(sorted(counts.items()))
    if embeddings:
        summary["quantized_embeddings"] = {"modules": sorted(embeddings), "bits": config.bits}
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
