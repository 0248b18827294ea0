"""Quantization: ``quantize(model, <Method>Config(...))``. Backends register on import."""

from .base import QuantizeConfig, quantize

__all__ = ["QuantizeConfig", "quantize"]
