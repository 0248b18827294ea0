"""optimum-quanto weight quantization: ``quanto-int8``, ``quanto-int4``, ``quanto-int2``, ``quanto-float8``.

* int8: symmetric absmax per output row (uniform).
* int4 / int2: affine (scale + shift) per group of ``group_size`` input weights (uniform).
* float8: e4m3 per-row scaled floats (non-uniform grid), where torch supports float8 on this CPU.

The result is written in the hfcompress quanto format (:mod:`hfcompress.quantize.quanto_format`),
which ``import hfcompress`` registers with transformers so that ``from_pretrained`` reloads it.
transformers ``Conv1D`` layers (GPT-2) are quantized as the ``nn.Linear`` of their transposed weight.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..errors import UnsupportedError, UsageError
from ..loading import ModelBundle
from ..registry import register
from ..stage import StageContext
from .base import (
    QuantizeConfig,
    check_not_quantized,
    in_features,
    input_sparsity,
    is_conv1d,
    measure,
    select_linears,
)
from .quanto_format import HfcQuantoConfig, attach, conv1d_as_linear


class _QuantoConfig(QuantizeConfig):
    qtype: ClassVar[str] = "qint8"
    group_size: int | None = Field(None, ge=8, le=65536,
                                   description="weights per scale group along the input (int4/int2; "
                                               "default: quanto's choice, 128 when it divides in_features)")
    scale_dtype: Literal["float16", "float32"] = Field("float16",
                                                       description="dtype the scales / shifts are stored in")


# One config class per method, alike in shape by design: the registry, the CLI flags and the
# docs table are read from each class (family, name, fields, one-line docstring).
class QuantoInt8Config(_QuantoConfig):
    """optimum-quanto int8 weights: symmetric absmax per output row."""

    kind: ClassVar[str] = "uniform"
    bits: ClassVar[float] = 8
    qtype: ClassVar[str] = "qint8"
    method: Literal["quanto-int8"] = "quanto-int8"


class QuantoInt4Config(_QuantoConfig):
    """optimum-quanto int4 weights: affine (scale + shift) per group."""

    kind: ClassVar[str] = "uniform"
    bits: ClassVar[float] = 4
    qtype: ClassVar[str] = "qint4"
    method: Literal["quanto-int4"] = "quanto-int4"


class QuantoInt2Config(_QuantoConfig):
    """optimum-quanto int2 weights: affine (scale + shift) per group."""

    kind: ClassVar[str] = "uniform"
    bits: ClassVar[float] = 2
    qtype: ClassVar[str] = "qint2"
    method: Literal["quanto-int2"] = "quanto-int2"


class QuantoFloat8Config(_QuantoConfig):
    """optimum-quanto float8 (e4m3) weights, scaled per output row."""

    kind: ClassVar[str] = "non-uniform"
    bits: ClassVar[float] = 8
    qtype: ClassVar[str] = "qfloat8"
    method: Literal["quanto-float8"] = "quanto-float8"


def _check_env(config: _QuantoConfig) -> None:
    try:
        import optimum.quanto  # noqa: F401
    except ImportError:
        raise UnsupportedError("optimum-quanto is not installed: pip install 'optimum-quanto>=0.2.7'") from None
    if config.qtype == "qfloat8":
        try:
            x = torch.ones(2, 2).to(torch.float8_e4m3fn)
            (x.to(torch.float32) @ torch.ones(2, 2)).sum()
        except (AttributeError, RuntimeError, TypeError):
            raise UnsupportedError("this torch build has no float8 on CPU: use quanto-int8 instead") from None


def quanto_quantize(model: Any, modules: dict[str, Any], qtype: str, group_size: int | None,
                    scale_dtype: str) -> dict[str, dict[str, Any]]:
    """Quantize (and freeze) the named Linear modules in place; returns the format's module map."""
    from optimum.quanto import freeze, qtypes
    from optimum.quanto import quantize as qquantize

    qt = qtypes[qtype]
    qquantize(model, weights=qt, include=list(modules))
    spec: dict[str, dict[str, Any]] = {}
    for name in modules:
        m = model.get_submodule(name)
        if qt.bits < 8 and group_size is not None:
            m.weight_group_size = group_size
        spec[name] = {"weights": qtype, "group_size": m.weight_group_size if qt.bits < 8 else None}
    freeze(model)
    # Round the scales / shifts to the dtype they are stored in, so a reload is exact.
    sdt = getattr(torch, scale_dtype)
    for name in modules:
        w = model.get_submodule(name).weight
        for attr in ("_scale", "_shift"):
            t = getattr(w, attr, None)
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                t.copy_(t.to(sdt).to(t.dtype))
    return spec


@register(QuantoInt8Config)
@register(QuantoInt4Config)
@register(QuantoInt2Config)
@register(QuantoFloat8Config)
def apply_quanto(bundle: ModelBundle, config: _QuantoConfig, ctx: StageContext) -> dict[str, Any]:
    _check_env(config)
    model = bundle.model
    check_not_quantized(model)
    chosen, kept = select_linears(model, config.skip_modules, conv1d=True)
    group_size = config.group_size
    if group_size is not None:
        if config.bits >= 8:
            raise UsageError(f"--group-size applies to quanto-int4 / quanto-int2; {config.method} scales "
                             "each output row: drop --group-size")
        bad = sorted({in_features(m) for m in chosen.values() if in_features(m) % group_size})
        if bad:
            raise UsageError(f"group size {group_size} does not divide in_features {bad} of this model: "
                             "pick a divisor (e.g. 32 or 64) or skip those modules")
    sparsity_before = input_sparsity(model, list(chosen))
    conv1d_as_linear(model, [n for n, m in chosen.items() if is_conv1d(m)])  # quanto quantizes nn.Linear
    chosen = {n: model.get_submodule(n) for n in chosen}
    spec = quanto_quantize(model, chosen, config.qtype, group_size, config.scale_dtype)
    qconf = HfcQuantoConfig(weights=config.qtype, group_size=group_size, modules=spec,
                            scale_dtype=config.scale_dtype)
    attach(model, qconf)
    bundle.saver = None
    groups = sorted({s["group_size"] for s in spec.values() if s["group_size"] is not None})
    summary: dict[str, Any] = {
        "backend": "optimum-quanto",
        "kind": config.kind,
        "format": "hfcompress-quanto (reload with from_pretrained after `import hfcompress`)",
        "weight_bits": config.bits,
        "scheme": ("symmetric absmax per output row" if config.bits == 8
                   else f"affine scale+shift per group of {groups or 'per-row'} inputs"),
        "group_sizes": groups,
        "scale_dtype": config.scale_dtype,
    }
    summary.update(measure(bundle, ctx, list(chosen), kept, sparsity_before=sparsity_before))
    return summary
