"""GPTQ through ``optimum.gptq`` / transformers ``GPTQConfig`` (``gptq``).

Needs the ``gptqmodel`` package (``pip install 'hfcompress[gptq]'``), which requires
torch >= 2.14.1; without it the method fails before any work with a one-line error.
The output is a standard GPTQ checkpoint (reload with plain ``from_pretrained`` where
gptqmodel is installed). gptqmodel's CPU kernel needs every quantized layer's
in_features divisible by ``group_size`` (SmolLM2: 576 = 9 x 64, so 64 works, 128 fails).
For a calibrated 4-bit path that needs no extra package, see ``calibrated-nf4``.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ..config import CalibrationConfig
from ..errors import UnsupportedError, UsageError
from ..registry import register
from .base import QuantizeConfig, check_not_quantized, model_dtype, scratch_dir, select_linears

GPTQ_MISSING = ("GPTQ needs the gptqmodel package: pip install 'hfcompress[gptq]' (requires torch>=2.14.1)")


class GPTQConfig(QuantizeConfig):
    """GPTQ (Frantar et al. 2022) via optimum.gptq: uniform int weights, calibrated error correction."""

    kind: ClassVar[str] = "uniform"
    method: Literal["gptq"] = "gptq"
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


@register(GPTQConfig)
def apply_gptq(bundle: Any, config: GPTQConfig, ctx: Any) -> dict[str, Any]:
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
