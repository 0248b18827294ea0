"""Base of the quantize family."""

from __future__ import annotations

from typing import Any, ClassVar

from ..config import StageConfig


class QuantizeConfig(StageConfig):
    """Base of every quantization method config."""

    family: ClassVar[str] = "quantize"


def quantize(model: Any, config: QuantizeConfig, *, tokenizer: Any = None) -> Any:
    """Quantize ``model`` (PreTrainedModel, :class:`ModelBundle` or repo id); returns the quantized model."""
    from ..loading import ModelBundle
    from ..pipeline import as_bundle, run_stage

    bundle = as_bundle(model, tokenizer)
    run_stage(bundle, config)
    return bundle if isinstance(model, ModelBundle) or isinstance(model, str) else bundle.model
