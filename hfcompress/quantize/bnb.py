"""bitsandbytes: LLM.int8 (``bnb-int8``) and 4-bit NF4 / FP4 (``bnb-nf4``, ``bnb-fp4``).

The in-memory (possibly pruned) model is saved to a scratch folder and reloaded with
``from_pretrained(..., quantization_config=BitsAndBytesConfig(...))``: the exact path a
user takes, so the result saves with ``save_pretrained`` and reloads with a plain
``from_pretrained`` (the quantization config travels in ``config.json``). Runs on CPU
with bitsandbytes >= 0.49.

* ``bnb-int8``: LLM.int8 — row-wise absmax int8 weights (uniform grid); activation columns
  above ``threshold`` go through an fp16 outlier path.
* ``bnb-nf4``: 4-bit NormalFloat codebook (quantiles of N(0,1), exact 0), absmax per block of 64.
* ``bnb-fp4``: 4-bit float codebook (1 sign, 2 exponent, 1 mantissa bit), absmax per block of 64.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from ..errors import UnsupportedError, UsageError
from ..loading import ModelBundle
from ..registry import register
from ..stage import StageContext
from .base import (
    DTYPES,
    QuantizeConfig,
    check_not_quantized,
    default_skip_modules,
    input_sparsity,
    is_conv1d,
    measure,
    model_dtype,
    save_plain,
    scratch_dir,
    select_linears,
    torch_dtype,
)

# ``measure`` is re-exported here (it lived in this module; the calibrated quantizers import it).
__all__ = ["BnbFP4Config", "BnbInt8Config", "BnbNF4Config", "apply_bnb", "bnb_config", "bnb_converts", "harden_bnb4",
           "measure", "reload_quantized", "select_bnb"]


class BnbInt8Config(QuantizeConfig):
    """bitsandbytes LLM.int8: int8 absmax weights per output row, fp16 outlier decomposition."""

    kind: ClassVar[str] = "uniform"
    bits: ClassVar[float] = 8
    method: Literal["bnb-int8"] = "bnb-int8"
    threshold: float = Field(6.0, ge=0.0, le=1e4,
                             description="outlier threshold on activation magnitude (LLM.int8 default 6.0)")
    compute_dtype: None = Field(None, description="not applicable: LLM.int8 computes in int8 + fp16 outliers")

    @field_validator("compute_dtype", mode="before")
    @classmethod
    def _no_compute_dtype(cls, v: Any) -> None:
        if v is not None:
            raise ValueError(f"compute_dtype={v!r} does not apply to bnb-int8 (LLM.int8 multiplies in int8 and "
                             "handles outliers in fp16): drop --compute-dtype, or use bnb-nf4 / bnb-fp4")
        return None


class _Bnb4bitConfig(QuantizeConfig):
    kind: ClassVar[str] = "non-uniform"
    bits: ClassVar[float] = 4
    quant_type: ClassVar[str] = "nf4"
    double_quant: bool = Field(False, description="also quantize the per-block absmax scales (saves ~0.4 bit/weight)")
    compute_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="dtype of the dequantized matmul (default: the model's dtype)")


class BnbNF4Config(_Bnb4bitConfig):
    """bitsandbytes 4-bit NormalFloat (NF4): a normal-quantile codebook with absmax per 64 weights."""

    quant_type: ClassVar[str] = "nf4"
    method: Literal["bnb-nf4"] = "bnb-nf4"


class BnbFP4Config(_Bnb4bitConfig):
    """bitsandbytes 4-bit float (FP4, e2m1): a float codebook with absmax per 64 weights."""

    quant_type: ClassVar[str] = "fp4"
    method: Literal["bnb-fp4"] = "bnb-fp4"


def _check_env() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UnsupportedError("bitsandbytes is not installed: pip install 'bitsandbytes>=0.49'") from None


def bnb_config(config: QuantizeConfig, skip: list[str], dtype: Any) -> Any:
    from transformers import BitsAndBytesConfig

    if isinstance(config, BnbInt8Config):
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=config.threshold,
                                  llm_int8_skip_modules=skip or None)
    assert isinstance(config, _Bnb4bitConfig)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.quant_type,
        bnb_4bit_use_double_quant=config.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(config.compute_dtype) or dtype,
        bnb_4bit_quant_storage="uint8",
        llm_int8_skip_modules=skip or None,
    )


def reload_quantized(bundle: ModelBundle, ctx: StageContext, qconfig: Any, name: str) -> Any:
    """Save ``bundle.model`` to scratch, reload it through ``from_pretrained`` with ``qconfig``."""
    model = bundle.model
    dtype = model_dtype(model)
    with scratch_dir(ctx, name) as folder:
        save_plain(model, folder / "fp")
        new = type(model).from_pretrained(folder / "fp", quantization_config=qconfig, dtype=dtype,
                                          device_map="cpu")
    new.eval()
    return new


def harden_bnb4(model: Any) -> None:
    """Make a bnb 4-bit model's save exact on CPU.

    bitsandbytes 0.50, on CPUs with AVX512-bf16, repacks a Linear4bit on its first forward
    (absmax cast to bfloat16 and transposed to [blocks, out]) and, on ``save_pretrained``,
    undoes the repacking only partly: the absmax stays transposed, so a model saved after
    a forward pass reloads with scrambled scales when in_features > 64. We (1) round the
    absmax to bfloat16 now — what that CPU path computes with anyway — and (2) turn the
    repacking off for the in-memory model, so it computes exactly what a reload computes
    and can be saved at any time.
    """
    for module in model.modules():
        if type(module).__name__ not in ("Linear4bit", "LinearNF4", "LinearFP4"):
            continue
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
        qs = getattr(module.weight, "quant_state", None)
        if qs is not None and not getattr(qs, "nested", False) and not getattr(qs, "packing_format_for_cpu", False):
            qs.absmax = qs.absmax.to(torch.bfloat16).to(qs.absmax.dtype)


def bnb_converts(module: Any) -> bool:
    """Whether transformers' bitsandbytes integration replaces ``module`` when it loads a model:
    exact ``nn.Linear`` and ``Conv1D`` (transposed by transformers), never a subclass of nn.Linear
    (a plain ``from_pretrained`` of the saved folder would leave it unquantized)."""
    return type(module) is torch.nn.Linear or is_conv1d(module)


def select_bnb(model: Any, skip: list[str]) -> tuple[dict[str, Any], list[str]]:
    """:func:`select_linears` for bitsandbytes: Linear subclasses it cannot convert are kept (one-line
    error, before any work, when nothing is left)."""
    chosen, kept = select_linears(model, skip, conv1d=True)
    other = {n: m for n, m in chosen.items() if not bnb_converts(m)}
    if len(other) == len(chosen):
        cls = sorted({type(m).__name__ for m in other.values()})
        raise UnsupportedError(f"bitsandbytes (through transformers) converts exact nn.Linear and Conv1D layers "
                               f"only, and this model's projections are {', '.join(cls)} (subclasses of nn.Linear "
                               "that a plain from_pretrained would not reload quantized): use quanto-int8, "
                               "quanto-int4 or calibrated-int4")
    return {n: m for n, m in chosen.items() if n not in other}, sorted([*kept, *other])


@register(BnbInt8Config)
@register(BnbNF4Config)
@register(BnbFP4Config)
def apply_bnb(bundle: ModelBundle, config: QuantizeConfig, ctx: StageContext) -> dict[str, Any]:
    _check_env()
    model = bundle.model
    check_not_quantized(model)
    chosen, kept = select_bnb(model, config.skip_modules)
    skip = sorted(set(default_skip_modules(model)) | set(config.skip_modules) | set(kept))
    sparsity_before = input_sparsity(model, list(chosen))
    qconfig = bnb_config(config, skip, model_dtype(model))
    try:
        new = reload_quantized(bundle, ctx, qconfig, "bnb")
    except (ValueError, RuntimeError) as exc:
        raise UnsupportedError(f"bitsandbytes could not quantize this model: {' '.join(str(exc).split())[:200]}") \
            from None
    harden_bnb4(new)
    bundle.model = new
    bundle.saver = None  # a plain save_pretrained writes the bnb format
    names = [n for n, m in new.named_modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    if not names:
        raise UnsupportedError("bitsandbytes quantized no module of this model (no nn.Linear layers?)")
    summary: dict[str, Any] = {
        "backend": "bitsandbytes",
        "kind": config.kind,
        "format": "bitsandbytes (transformers BitsAndBytesConfig; reload with plain from_pretrained)",
        "weight_bits": config.bits,
    }
    if isinstance(config, BnbInt8Config):
        summary.update({"scheme": "LLM.int8: int8 absmax per output row + fp16 outliers",
                        "threshold": config.threshold})
    else:
        summary.update({"scheme": f"{config.quant_type.upper()} codebook, absmax per block of 64",
                        "double_quant": config.double_quant,
                        "compute_dtype": str(qconfig.bnb_4bit_compute_dtype).replace("torch.", "")})
    summary.update(measure(bundle, ctx, names, [n for n in kept if n in dict(new.named_modules())],
                           sparsity_before=sparsity_before))
    return summary


def check_compute_dtype(name: str | None) -> None:
    if name is not None and name not in DTYPES:
        raise UsageError(f"unknown compute dtype {name!r}: use one of {', '.join(DTYPES)}")
