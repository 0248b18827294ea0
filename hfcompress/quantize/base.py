"""Base of the quantize family: the config base class, ``quantize()``, and shared helpers.

Every quantization method is a config class (``kind`` says whether its grid is
``uniform`` — affine / absmax integers — or ``non-uniform`` — a codebook such as NF4)
plus an ``apply(bundle, config, ctx: StageContext)`` registered with ``@register(Config)``::

    from hfcompress.quantize import quantize, BnbNF4Config
    model = quantize(model, BnbNF4Config(double_quant=True))
    model.save_pretrained("out")      # reload: AutoModelFor...from_pretrained("out")

Helpers here are shared by the backends: refusing already-quantized models, picking
the Linear modules to convert (and the ones kept in full precision), scratch folders,
size accounting (bytes on disk / in memory, bits per weight) and sparsity counting on
dequantized weights.
"""

from __future__ import annotations

import contextlib
import fnmatch
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from ..config import StageConfig
from ..errors import UnsupportedError, UsageError
from ..loading import ModelBundle
from ..sizes import logical_parameters, memory_bytes, safetensors_sizes
from ..stage import StageContext, as_bundle, run_stage, save_bundle

# Re-exported: size accounting lives in hfcompress.sizes.
__all__ = ["DTYPES", "QuantizeConfig", "logical_parameters", "measure", "memory_bytes", "quantize",
           "safetensors_sizes", "size_summary"]

#: dtype names accepted for ``compute_dtype``.
DTYPES = ("float32", "float16", "bfloat16")


class QuantizeConfig(StageConfig):
    """Base of every quantization method config.

    ``kind`` is ``"uniform"`` (affine / absmax integer grid) or ``"non-uniform"``
    (a codebook: NF4's normal quantiles, FP4's float grid). ``skip_modules`` lists
    module names (or fnmatch patterns, e.g. ``"*.mlp.down_proj"``) kept in full
    precision, on top of each backend's defaults (tied output embeddings / heads).
    """

    family: ClassVar[str] = "quantize"
    kind: ClassVar[str] = "uniform"

    skip_modules: list[str] = Field(default_factory=list, description="modules (names or patterns like "
                                    "'*.down_proj') kept in full precision")


def quantize(model: Any, config: QuantizeConfig, *, tokenizer: Any = None) -> Any:
    """Quantize ``model`` (PreTrainedModel, :class:`ModelBundle` or repo id); returns the quantized model.

    A bare model gives back a (new) quantized model; a bundle or repo id gives back the bundle.
    Calibrated methods need the tokenizer (pass ``tokenizer=`` with a bare model).
    """
    bundle = as_bundle(model, tokenizer)
    run_stage(bundle, config)
    return bundle if isinstance(model, ModelBundle) or isinstance(model, str) else bundle.model


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def quantization_state(model: Any) -> str | None:
    """A short name of how ``model`` is already quantized, or None for a full-precision model."""
    qc = getattr(model.config, "quantization_config", None)
    if getattr(model, "hf_quantizer", None) is not None or qc is not None:
        method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
        method = getattr(method, "value", method)
        # A GGUF-dequantized or sparse-format model is full precision in memory.
        if method not in (None, "gguf") and not str(method).startswith("hfcompress-sparse"):
            return str(method)
    for module in model.modules():
        name = type(module).__name__
        if name in ("Linear4bit", "Linear8bitLt", "QLinear", "QuantLinear") or hasattr(module, "weight_qtype"):
            return name
    return None


def check_not_quantized(model: Any) -> None:
    state = quantization_state(model)
    if state is not None:
        raise UsageError(f"the model is already quantized ({state}): quantize the full-precision model "
                         "instead (quantizing twice compounds the error and is not supported)")


def model_dtype(model: Any) -> Any:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def torch_dtype(name: str | None) -> Any:
    return None if name is None else getattr(torch, name)


# ---------------------------------------------------------------------------------------------
# Module selection
# ---------------------------------------------------------------------------------------------

def default_skip_modules(model: Any) -> list[str]:
    """Modules transformers keeps in full precision by default: tied / output embeddings, the last layer."""
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        keys = get_keys_to_not_convert(model)
    except Exception:  # noqa: BLE001 - models without the helper's attributes
        keys = []
    out = set()
    for k in keys:
        for suffix in (".weight", ".bias"):
            k = k.removesuffix(suffix)
        out.add(k)
    return sorted(out)


def _matches(name: str, patterns: list[str]) -> bool:
    for p in patterns:
        if name == p or fnmatch.fnmatchcase(name, p) or name.endswith("." + p) or name.startswith(p + "."):
            return True
    return False


def is_conv1d(module: Any) -> bool:
    """transformers' ``Conv1D`` (GPT-2 and kin): a linear layer whose weight is stored ``[in, out]``."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(module, Conv1D)


def in_features(module: Any) -> int:
    """Input width of a Linear or a ``Conv1D``."""
    return int(module.weight.shape[0]) if is_conv1d(module) else int(module.in_features)


def linear_modules(model: Any, conv1d: bool = False) -> dict[str, Any]:
    """``nn.Linear`` modules by name (and transformers ``Conv1D`` with ``conv1d=True``)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) or (conv1d and is_conv1d(m))}


def select_linears(model: Any, skip: list[str], *, use_defaults: bool = True,
                   conv1d: bool = False) -> tuple[dict[str, Any], list[str]]:
    """(Linear modules to quantize by name, names of the Linear modules kept in full precision).

    ``conv1d=True``: transformers ``Conv1D`` layers count as Linear (the backend handles their
    ``[in, out]`` orientation).
    """
    patterns = list(skip) + (default_skip_modules(model) if use_defaults else [])
    chosen, kept = {}, []
    for name, module in linear_modules(model, conv1d).items():
        (kept.append(name) if _matches(name, patterns) else chosen.__setitem__(name, module))
    unknown = [p for p in skip if not any(_matches(n, [p]) for n, _ in model.named_modules())]
    if unknown:
        raise UsageError(f"--skip-modules names no module of this model: {', '.join(unknown)} "
                         "(give module names such as lm_head or patterns such as '*.down_proj')")
    if not chosen:
        if not conv1d and any(is_conv1d(m) for m in model.modules()):
            raise UnsupportedError("this method converts nn.Linear layers, and this model's projections are "
                                   "transformers Conv1D layers (weight [in, out]): use bnb-int8, bnb-nf4, "
                                   "quanto-int8, quanto-int4 or calibrated-nf4")
        raise UsageError("no Linear module left to quantize: check --skip-modules")
    return chosen, kept


# ---------------------------------------------------------------------------------------------
# Scratch space
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def scratch_dir(ctx: StageContext | None, name: str) -> Iterator[Path]:
    """A scratch folder under ``ctx.work_dir`` (or a temporary folder), removed afterwards."""
    base = ctx.work_dir if ctx is not None else None
    if base is None:
        with tempfile.TemporaryDirectory(prefix=f"hfcompress-{name}-") as tmp:
            yield Path(tmp)
        return
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_plain(model: Any, folder: Path) -> None:
    """``save_pretrained`` of a full-precision (possibly pruned) model, for a reload with a quantizer."""
    hf_quantizer = getattr(model, "hf_quantizer", None)
    qc = getattr(model.config, "quantization_config", None)
    if hf_quantizer is not None or qc is not None:  # e.g. GGUF-dequantized: full precision in memory
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    try:
        model.save_pretrained(folder)
    finally:
        if hf_quantizer is not None:
            model.hf_quantizer = hf_quantizer
        if qc is not None:
            model.config.quantization_config = qc


# ---------------------------------------------------------------------------------------------
# Size accounting
# ---------------------------------------------------------------------------------------------

def size_summary(model: Any, folder: Path | None, quantized: dict[str, tuple[int, int]],
                 kept: list[str], *, fp_bytes_per_param: int = 4) -> dict[str, Any]:
    """Size figures for the stage summary.

    ``quantized``: module name -> (number of weights, in_features) of each quantized Linear.
    With ``folder`` (a save of the quantized model) the on-disk bytes of each quantized
    weight (data + scales / absmax / codebook, everything under ``<module>.weight*``/``SCB``)
    give the quantized-Linear bits per weight; the whole-model figure is all weight bytes
    over all parameters.
    """
    n_params = logical_parameters(model)
    q_weights = sum(n for n, _ in quantized.values())
    summary: dict[str, Any] = {
        "memory_bytes": memory_bytes(model),
        "quantized_modules": len(quantized),
        "quantized_weights": q_weights,
        "unquantized_linear_modules": sorted(kept),
        "unquantized_other": "embeddings, norms and biases stay in full precision",
    }
    if folder is not None:
        sizes = safetensors_sizes(folder)
        disk = sum(sizes.values())
        q_bytes = 0
        for key, nbytes in sizes.items():
            parts = key.split(".")
            for i in range(len(parts) - 1, 0, -1):
                prefix = ".".join(parts[:i])
                if prefix in quantized:
                    leaf = ".".join(parts[i:])
                    if leaf.startswith("weight") or leaf == "SCB":
                        q_bytes += nbytes
                    break
        summary.update({
            "disk_bytes": disk,
            "quantized_linear_bytes": q_bytes,
            "quantized_linear_fp32_bytes": q_weights * 4,
            "quantized_linear_ratio_vs_fp32": round(q_bytes / max(1, q_weights * 4), 4),
            "bits_per_weight_quantized_linears": round(8 * q_bytes / max(1, q_weights), 3),
            "bits_per_weight_model": round(8 * disk / max(1, n_params), 3),
        })
    return summary


def measure(bundle: ModelBundle, ctx: StageContext, names: list[str], kept: list[str], *,
            sparsity_before: float) -> dict[str, Any]:
    """Size summary (bytes on disk from a save of the quantized model) + sparsity.

    In a pipeline the save is the stages' shared copy (``ctx.saved_copy``), which later
    stages and the output reuse; called alone, a scratch save removed afterwards.
    """
    model = bundle.model
    shapes = quantized_linear_shapes(model, names)
    if ctx is not None and ctx.work_dir is not None:
        summary = size_summary(model, ctx.saved_copy(bundle), shapes, kept)
    else:
        with scratch_dir(ctx, "measure") as folder:
            save_bundle(bundle, folder)
            summary = size_summary(model, folder, shapes, kept)
    if sparsity_before > 0.01:
        summary["sparsity_before"] = round(sparsity_before, 4)
        summary["sparsity_after_dequantization"] = round(sparsity_of(model, names), 4)
    return summary


def quantized_linear_shapes(model: Any, names: list[str]) -> dict[str, tuple[int, int]]:
    out = {}
    for n in names:
        m = model.get_submodule(n)
        out[n] = (int(m.out_features) * int(m.in_features), int(m.in_features))
    return out


# ---------------------------------------------------------------------------------------------
# Dequantization (for sparsity checks and tests)
# ---------------------------------------------------------------------------------------------

def dequantized_weight(module: Any) -> Any:
    """The float weight a quantized Linear computes with (bnb 4/8-bit, quanto, or plain)."""
    w = module.weight
    name = type(w).__name__
    if name == "Params4bit":
        import bitsandbytes.functional as F

        return F.dequantize_4bit(w.data, w.quant_state).float()
    if name == "Int8Params":
        scb = getattr(w, "SCB", None) if getattr(w, "SCB", None) is not None else getattr(module.state, "SCB", None)
        if w.dtype == torch.int8 and scb is not None:
            return w.data.float() * scb.float().unsqueeze(1) / 127.0
        return w.data.float()
    if hasattr(w, "dequantize") and type(w).__name__ not in ("Parameter", "Tensor"):
        return w.dequantize().float()
    data = getattr(w, "data", w)
    if hasattr(data, "dequantize") and type(data).__name__ != "Tensor":
        return data.dequantize().float()
    return w.detach().float()


def sparsity_of(model: Any, names: list[str]) -> float:
    """Fraction of exact zeros in the dequantized weights of the named Linear modules."""
    zeros = total = 0
    for n in names:
        w = dequantized_weight(model.get_submodule(n))
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(1, total)


def input_sparsity(model: Any, names: list[str]) -> float:
    zeros = total = 0
    for n in names:
        w = model.get_submodule(n).weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(1, total)
