"""A saveable, reloadable format for optimum-quanto models (``quant_method: hfcompress-quanto``).

transformers refuses to ``save_pretrained`` a quanto model. ``import hfcompress``
registers this module's quantization config and :class:`HfcQuantoQuantizer` with
transformers, so a folder written from a quanto-quantized model reloads with a plain::

    import hfcompress  # registers the format
    model = AutoModelForCausalLM.from_pretrained("out/smol-quanto-int4")

Layout (safetensors, next to the usual unquantized tensors), per quantized Linear ``m``:

* ``m.weight_qdata``  — quanto's kernel-agnostic data: uint8 packed (int4: 2/byte,
  int2: 4/byte; grouped shape), int8, or float8_e4m3fn;
* ``m.weight_qscale`` — scales (float16 by default: rounded in memory before saving, so
  the reloaded model computes exactly what the saved one did);
* ``m.weight_qshift`` — affine shift (int2 / int4 only);
* ``m.input_scale`` / ``m.output_scale`` — quanto's (unused, =1) activation scales.

transformers ``Conv1D`` layers (GPT-2, weight ``[in, out]``) are quantized as the ``nn.Linear`` of the
transposed weight, and stored so: loading turns the model's own Conv1D into that QLinear.

``config.json`` holds ``quantization_config = {"quant_method": "hfcompress-quanto",
"modules": {name: {"weights": "qint4", "group_size": 64}}, ...}``. Loading builds quanto
``QLinear`` modules on the meta device for exactly those names and turns the three
tensors back into quanto weight tensors (a transformers ``WeightConverter`` with a
deserialize op), so no weight is ever re-quantized.

Saving writes a guarded ``config.json`` (:func:`hfcompress.formats.guard_config`): loading
it without ``import hfcompress`` raises a ValueError that says ``pip install hfcompress``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.core_model_loading import ConversionOps
from transformers.quantizers import register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..formats import SAVED_KEY, guard_config, unguard

QUANT_METHOD = "hfcompress-quanto"
FORMAT_VERSION = 1
_SUFFIXES = ("weight_qdata", "weight_qscale", "weight_qshift")


class HfcQuantoConfig(QuantizationConfigMixin):
    """Quantization config stored in ``config.json`` for the hfcompress quanto format."""

    def __init__(self, weights: str = "qint4", group_size: int | None = None,
                 modules: dict[str, dict[str, Any]] | None = None, scale_dtype: str = "float16",
                 format_version: int = FORMAT_VERSION, saved_attn_implementation: str | None = None,
                 **kwargs: Any):
        self.quant_method = QUANT_METHOD
        self.weights = weights
        self.group_size = group_size
        self.modules = dict(modules or {})
        self.scale_dtype = scale_dtype
        self.format_version = format_version
        self.backend = "optimum-quanto"
        self.saved_attn_implementation = saved_attn_implementation

    def to_dict(self) -> dict[str, Any]:
        out = {"quant_method": QUANT_METHOD, "format_version": self.format_version, "backend": "optimum-quanto",
               "weights": self.weights, "group_size": self.group_size, "scale_dtype": self.scale_dtype,
               "modules": self.modules}
        if self.saved_attn_implementation is not None:
            out[SAVED_KEY] = self.saved_attn_implementation
        return out

    def get_loading_attributes(self) -> dict[str, Any]:
        return {}


def _qtype(name: str) -> Any:
    from optimum.quanto import qtypes

    return qtypes[name]


class QuantoDeserialize(ConversionOps):
    """``weight_qdata`` + ``weight_qscale`` (+ ``weight_qshift``) -> a quanto weight QTensor."""

    def __init__(self, hf_quantizer: HfQuantizer):
        self.hf_quantizer = hf_quantizer

    def convert(self, input_dict: dict[str, Any], model: Any = None, full_layer_name: str | None = None,
                **kwargs: Any) -> dict[str, Any]:
        parts = {}
        for key, value in input_dict.items():
            value = value[0] if isinstance(value, list) else value
            for suffix in _SUFFIXES:
                if key.endswith(suffix):
                    parts[suffix] = value
        module_name = full_layer_name.rpartition(".")[0]
        module = model.get_submodule(module_name)
        qweight = build_qweight(module, parts)
        module._is_hf_initialized = True
        return {"weight": torch.nn.Parameter(qweight, requires_grad=False)}


def build_qweight(module: Any, parts: dict[str, torch.Tensor]) -> Any:
    from optimum.quanto.tensor.weights import WeightQBitsTensor, WeightQBytesTensor

    qtype = module.weight_qtype
    dtype = module.weight.dtype
    size, stride = module.weight.size(), module.weight.stride()
    state = {"_scale": parts["weight_qscale"].to(dtype)}
    missing: list[str] = []
    if qtype.bits == 8:
        state["_data"] = parts["weight_qdata"]
        q = WeightQBytesTensor.load_from_state_dict(state, "", qtype=qtype, axis=0, size=size, stride=stride,
                                                    activation_qtype=None, missing_keys=missing)
    else:
        state["_data._data"] = parts["weight_qdata"]
        state["_shift"] = parts["weight_qshift"].to(dtype)
        q = WeightQBitsTensor.load_from_state_dict(state, "", qtype=qtype, axis=0,
                                                   group_size=module.weight_group_size, size=size,
                                                   stride=stride, missing_keys=missing)
    if q is None:
        raise ValueError(f"incomplete quanto weight (missing {missing})")
    return q.optimize()


def conv1d_as_linear(model: Any, names: list[str]) -> None:
    """Replace the named transformers ``Conv1D`` layers (weight ``[in, out]``) by ``nn.Linear`` with the
    transposed weight and the same bias: the same function, in the layout quanto quantizes (and
    the one this format stores, so a reload turns the model's own Conv1D into the same QLinear)."""
    from optimum.quanto.quantize import set_module_by_name
    from transformers.pytorch_utils import Conv1D

    for name in names:
        conv = model.get_submodule(name)
        if not isinstance(conv, Conv1D):
            continue
        w = conv.weight
        linear = torch.nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            if w.device.type != "meta":
                linear.weight.copy_(w.t())
                if conv.bias is not None:
                    linear.bias.copy_(conv.bias)
        linear.requires_grad_(w.requires_grad)
        set_module_by_name(model, name, linear)


def replace_modules(model: Any, modules: dict[str, dict[str, Any]]) -> None:
    """Turn the named Linear (or Conv1D) modules into quanto QLinear modules (weights untouched)."""
    from optimum.quanto.nn import quantize_module
    from optimum.quanto.quantize import set_module_by_name

    conv1d_as_linear(model, list(modules))
    for name, spec in modules.items():
        module = model.get_submodule(name)
        qmodule = quantize_module(module, weights=_qtype(spec["weights"]))
        if qmodule is None:
            raise ValueError(f"quanto cannot quantize module {name} ({type(module).__name__})")
        if spec.get("group_size") is not None or qmodule.weight_qtype.bits < 8:
            qmodule.weight_group_size = spec.get("group_size")
        qmodule.name = name
        set_module_by_name(model, name, qmodule)


class HfcQuantoQuantizer(HfQuantizer):
    """Loads (and saves) the hfcompress quanto format; never quantizes on the fly."""

    requires_calibration = True  # only pre-quantized checkpoints
    serialized_names = {"weight": list(_SUFFIXES)}

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        try:
            import optimum.quanto  # noqa: F401
        except ImportError:
            raise ImportError("this checkpoint was quantized with optimum-quanto: pip install optimum-quanto") \
                from None

    def update_attn_implementation(self, config: Any) -> Any:
        return unguard(config, self.quantization_config)

    def _process_model_before_weight_loading(self, model: Any, **kwargs: Any) -> Any:
        replace_modules(model, self.quantization_config.modules)
        return model

    def _process_model_after_weight_loading(self, model: Any, **kwargs: Any) -> Any:
        # Our deserialize step has no reverse op; saving goes through get_state_dict_and_metadata,
        # so drop it from the conversions that save_pretrained would try to revert.
        for sub in model.modules():
            convs = getattr(sub, "_weight_conversions", None)
            if convs:
                sub._weight_conversions = [
                    c for c in convs
                    if not any(isinstance(op, QuantoDeserialize) for op in getattr(c, "operations", ()))
                ] or None
        guard_saves(model)
        return model

    def get_load_operations(self) -> dict:
        return {"deserialize": QuantoDeserialize}

    def get_state_dict_and_metadata(self, model: Any) -> tuple[dict[str, torch.Tensor], dict]:
        return flat_state_dict(model, self.quantization_config), {}

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


def flat_state_dict(model: Any, config: HfcQuantoConfig) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with each quanto weight flattened into the format's three tensors."""
    from optimum.quanto import QModuleMixin

    scale_dtype = getattr(torch, config.scale_dtype)
    sd: dict[str, torch.Tensor] = {}
    qnames = {n: m for n, m in model.named_modules() if isinstance(m, QModuleMixin) and m.frozen}
    for key, value in model.state_dict().items():
        sd[key] = value
    for name, module in qnames.items():
        prefix = f"{name}.weight."
        for key in [k for k in sd if k.startswith(prefix)]:
            sd.pop(key)
        inner: dict[str, torch.Tensor] = {}
        module.weight.save_to_state_dict(inner, "", keep_vars=False)
        if module.weight_qtype.bits == 8:
            sd[f"{name}.weight_qdata"] = inner["_data"].contiguous()
        else:
            sd[f"{name}.weight_qdata"] = inner["_data._data"].contiguous()
            sd[f"{name}.weight_qshift"] = inner["_shift"].to(scale_dtype).contiguous()
        sd[f"{name}.weight_qscale"] = inner["_scale"].to(scale_dtype).contiguous()
    return sd


def attach(model: Any, config: HfcQuantoConfig) -> None:
    """Mark a freshly quanto-quantized model so that ``save_pretrained`` writes this format."""
    model.hf_quantizer = HfcQuantoQuantizer(config, pre_quantized=True)
    model.config.quantization_config = config
    model.is_quantized = True
    model.quantization_method = QUANT_METHOD
    guard_saves(model)


def guard_saves(model: Any) -> None:
    """Make this model's ``save_pretrained`` write a guarded config.json (:func:`hfcompress.formats.guard_config`),
    so the folder fails loudly without ``import hfcompress``."""
    import json
    from pathlib import Path

    if getattr(model.save_pretrained, "_hfcompress_guarded", False):
        return
    plain = model.save_pretrained

    def save_pretrained(save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        out = plain(save_directory, *args, **kwargs)
        path = Path(save_directory) / "config.json"
        cfg = json.loads(path.read_text())
        if isinstance(cfg.get("quantization_config"), dict) and \
                cfg["quantization_config"].get("quant_method") == QUANT_METHOD:
            path.write_text(json.dumps(guard_config(cfg, QUANT_METHOD), indent=2, sort_keys=True) + "\n")
        return out

    save_pretrained._hfcompress_guarded = True  # type: ignore[attr-defined]
    model.save_pretrained = save_pretrained


def _register() -> None:
    if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(QUANT_METHOD)(HfcQuantoConfig)
    else:
        AUTO_QUANTIZATION_CONFIG_MAPPING[QUANT_METHOD] = HfcQuantoConfig
    if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(QUANT_METHOD)(HfcQuantoQuantizer)
    else:
        AUTO_QUANTIZER_MAPPING[QUANT_METHOD] = HfcQuantoQuantizer


_register()
