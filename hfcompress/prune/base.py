"""Base of the prune family: the options every pruning method shares.

A pruning method is one file in this package with a config class (a subclass of
:class:`PruneConfig`) and an ``apply(bundle, config, ctx: StageContext)`` decorated with
``@register(Config)`` (its flags appear in ``hfcompress prune --help`` by themselves)::

    from hfcompress.prune import WandaConfig, prune
    prune(model, WandaConfig(sparsity=0.5, pattern="2:4"), tokenizer=tok)

Shared options (all validated when the config is built, before any work):

* ``sparsity``: fraction of weights set to zero in each targeted matrix, in [0, 1). With
  ``structured`` it is the fraction of FFN channels / attention heads (KV groups) / layers removed.
* ``pattern``: semi-structured ``"N:M"`` (N non-zeros kept in every M consecutive inputs,
  e.g. ``"2:4"``); the sparsity is then (M - N) / M.
* ``targets`` / ``exclude``: glob patterns over module names (default: every ``nn.Linear``
  inside the transformer blocks; embeddings and the LM head are never targeted by default).
* ``overrides``: ``{glob: sparsity}``, per-layer sparsity (first matching glob wins).
* ``calibration_dtype``: run the calibration forwards under ``torch.autocast`` in this dtype
  (``"bfloat16"`` roughly halves the time of Wanda / SparseGPT on CPUs with AVX512-BF16 or AMX;
  its effect on quality is measured in ``benchmarks/results/prune_unstructured.md``).
* ``format``: ``dense`` (default) or ``hfcompress-sparse`` (the compressed bitmask format, see
  ``docs/FORMATS.md``); ``sparse_format: true`` is a deprecated alias of the latter.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from ..config import CalibrationConfig, StageConfig
from ..formats import SPARSE_CT_REMOVED
from ..loading import ModelBundle
from ..stage import as_bundle, run_stage

_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> (2, 4): N non-zeros kept in every group of M. Raises ValueError with the fix."""
    m = _PATTERN.match(pattern)
    if not m:
        raise ValueError(f"pattern {pattern!r} is not N:M: write it like 2:4 or 4:8")
    n, mm = int(m.group(1)), int(m.group(2))
    if mm < 2 or n < 1:
        raise ValueError(f"pattern {pattern}: need M >= 2 and N >= 1, e.g. 2:4")
    if n >= mm:
        raise ValueError(f"pattern {pattern}: N must be smaller than M (N non-zeros kept out of M), e.g. 2:4")
    return n, mm


class PruneConfig(StageConfig):
    """Base of every pruning method config (the shared options)."""

    family: ClassVar[str] = "prune"
    #: methods that accept ``pattern`` / ``structured`` (set by subclasses)
    supports_pattern: ClassVar[bool] = False
    supports_structured: ClassVar[bool] = False
    supports_calibration_dtype: ClassVar[bool] = False
    #: methods that prune a model offloaded with --max-memory block by block (set by subclasses)
    supports_offload: ClassVar[bool] = False

    sparsity: float | None = Field(0.5, ge=0.0, lt=1.0,
                                   description="fraction of zeros (or of removed units with `structured`)")
    pattern: str | None = Field(None, description="semi-structured N:M, e.g. 2:4")
    structured: Literal["ffn", "heads", "layers"] | None = Field(
        None, description="remove whole FFN channels, attention heads (KV groups) or layers")
    targets: list[str] | None = Field(
        None, description="glob patterns of module names to prune (default: every Linear inside the blocks)")
    exclude: list[str] = Field(default_factory=list, description="glob patterns of module names never pruned")
    overrides: dict[str, float] = Field(default_factory=dict, description="glob -> sparsity")
    format: Literal["dense", "compressed-tensors", "hfcompress-sparse"] = Field(
        "dense", description="output format: dense (plain safetensors, loads everywhere), hfcompress-sparse "
                             "(bitmask + entropy-coded values, needs `import hfcompress`); compressed-tensors has "
                             "no sparse-only format since 0.15: add a quantize stage (rtn / gptq) for one")
    sparse_format: bool = Field(False, description="deprecated alias of format: hfcompress-sparse")
    calibration: CalibrationConfig | None = Field(
        None, description="calibration text (methods that need it use the defaults when omitted)")
    batch_size: int | None = Field(
        None, ge=1, description="samples per calibration chunk (default: 2,048 tokens per chunk; chunks run in "
                                "lock-step, one forward per block; >= samples: one batch)")
    low_memory: bool = Field(
        False, description="wanda / sparsegpt: two passes per block (statistics from the unpruned block, then "
                           "the outputs): only one chunk's activations alive, ~1.5-2x the time")
    dense_inputs: bool = Field(
        False, description="wanda / sparsegpt: calibrate every layer on the dense model's inputs (no error "
                           "propagation between layers; what `hfcompress search` level databases use)")
    calibration_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="autocast dtype of the calibration forwards (default: the model's dtype); "
                          "statistics accumulate in float32 and the weights keep the model's dtype")

    def compute_dtype(self) -> torch.dtype | None:
        return getattr(torch, self.calibration_dtype) if self.calibration_dtype else None

    @classmethod
    def uses_calibration(cls, params: dict[str, Any]) -> bool:
        """Whether this method reads calibration data with these params (calibration flags are
        refused for a method that would ignore them)."""
        return True

    def calibration_or_default(self) -> CalibrationConfig:
        return self.calibration or CalibrationConfig()

    @model_validator(mode="before")
    @classmethod
    def _format_alias(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if data.get("sparse_format") and data.get("format", "dense") == "dense":
                data = {**data, "format": "hfcompress-sparse"}
            if data.get("format") == "hfcompress-sparse":
                data = {**data, "sparse_format": True}
            if data.get("format") == "compressed-tensors":

                raise ValueError(SPARSE_CT_REMOVED)
        return data

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, v: str | None) -> str | None:
        if v is None:
            return v
        n, m = parse_pattern(v)
        return f"{n}:{m}"

    @field_validator("overrides")
    @classmethod
    def _check_overrides(cls, v: dict[str, float]) -> dict[str, float]:
        for key, s in v.items():
            if not (0.0 <= float(s) < 1.0):
                raise ValueError(f"overrides[{key!r}] = {s}: sparsity must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _check_combination(self) -> PruneConfig:
        if self.pattern is not None:
            if not self.supports_pattern:
                raise ValueError(f"method {self.method!r} does not support N:M patterns: "
                                 "use magnitude, wanda or sparsegpt")
            if self.structured is not None:
                raise ValueError("pattern and structured cannot be combined: choose one")
            if self.overrides:
                raise ValueError("overrides cannot be combined with an N:M pattern")
            n, m = parse_pattern(self.pattern)
            want = (m - n) / m
            if "sparsity" in self.model_fields_set and self.sparsity is not None \
                    and abs(self.sparsity - want) > 1e-6:
                raise ValueError(f"sparsity {self.sparsity} does not match pattern {self.pattern} "
                                 f"(which means sparsity {want:g}): drop the sparsity or make them agree")
        for opt in ("calibration_dtype", "low_memory", "dense_inputs"):
            if getattr(self, opt) and (not self.supports_calibration_dtype or self.structured):
                raise ValueError(f"{opt} applies to the calibrated unstructured / N:M methods "
                                 "(wanda, sparsegpt): drop it for this method")
        if self.structured is not None:
            if not self.supports_structured:
                raise ValueError(f"method {self.method!r} has no structured mode: use magnitude, wanda "
                                 "(activations) or taylor")
            if self.sparse_format:
                raise ValueError("sparse_format applies to unstructured / N:M sparsity; a structured prune "
                                 "already writes a smaller dense model")
        return self

    def runs_offloaded(self) -> bool:
        """Whether this stage runs on an offloaded model (unstructured / N:M, dense output)."""
        return self.supports_offload and self.structured is None and self.format == "dense"

    # -- helpers used by the methods ------------------------------------------------------
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern) if self.pattern else None

    def effective_sparsity(self) -> float:
        nm = self.nm()
        if nm is not None:
            return (nm[1] - nm[0]) / nm[1]
        return float(self.sparsity or 0.0)


def prune(model: Any, config: PruneConfig, *, tokenizer: Any = None) -> Any:
    """Prune ``model`` (a PreTrainedModel, a :class:`ModelBundle`, or a repo id) in place.

    Returns the same kind of object it was given (a rebuilt model for structured methods).
    """
    bundle = as_bundle(model, tokenizer)
    run_stage(bundle, config)
    return bundle if isinstance(model, ModelBundle) or isinstance(model, str) else bundle.model
