"""Size accounting, one way for every caller: parameter counts, bytes, bits per weight, sparsity.

The pipeline's ``hfcompress.json`` (``size.before`` / ``size.after``), the quantize stage
summaries and the ``efficiency`` evaluation all count with these functions::

    from hfcompress.sizes import count_parameters, size_figures
    count_parameters(model)   # {"parameters": 134515008, "nonzero_parameters": 67..}
    size_figures(model)["linear_sparsity"]

Rules (also in ``docs/EVALUATION.md``):

* every tensor once (tied weights are one tensor);
* ``parameters`` are *logical* weights: packed storage (bitsandbytes 4-bit, two weights per
  byte) counts the weights it represents, never its bytes;
* ``nonzero_parameters`` counts zeros in the dequantized values (NF4 / FP4 / int8 keep an
  exact zero); storage whose packing is unknown counts as non-zero;
* bytes are what the storage occupies (packed data + scales / quantization state);
* ``linear_sparsity`` is over the Linear weights of the network body: the output embedding
  (``lm_head``, usually tied to the input embedding and never pruned) is left out, so a model
  whose blocks are 50% pruned reports 0.5.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import torch

from .loading.offload import is_offloaded, named_tensors


def flat_tensors(t: Any) -> list[torch.Tensor]:
    """The plain tensors that hold ``t``'s storage (tensor subclasses flattened, bnb state added)."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        try:
            names, _ = t.__tensor_flatten__()
            out: list[torch.Tensor] = []
            for n in names:
                out.extend(flat_tensors(getattr(t, n)))
            return out
        except Exception:  # noqa: BLE001 - fall back to the outer tensor
            pass
    out = [t]
    scb = getattr(t, "SCB", None)  # bitsandbytes int8 row scales
    if isinstance(scb, torch.Tensor):
        out.append(scb)
    qs = getattr(t, "quant_state", None)  # bitsandbytes 4-bit
    if qs is not None:
        for attr in ("absmax", "code", "offset"):
            v = getattr(qs, attr, None)
            if isinstance(v, torch.Tensor):
                out.append(v)
        state2 = getattr(qs, "state2", None)
        if state2 is not None:
            for attr in ("absmax", "code"):
                v = getattr(state2, attr, None)
                if isinstance(v, torch.Tensor):
                    out.append(v)
    return out


def tensor_bytes(t: Any) -> int:
    """Bytes ``t`` occupies as stored (packed data + scales / quantization state)."""
    return sum(x.numel() * x.element_size() for x in flat_tensors(t))


def logical_numel(t: Any) -> int:
    """Number of weights ``t`` represents (unpacks bitsandbytes 4-bit storage)."""
    shape = getattr(getattr(t, "quant_state", None), "shape", None)
    return int(math.prod(shape)) if shape is not None else int(t.numel())


def dense_values(t: Any) -> torch.Tensor | None:
    """A float (or int8) view of ``t``'s values to count zeros in, or None when its packing is unknown."""
    qs = getattr(t, "quant_state", None)
    if qs is not None:  # bitsandbytes 4-bit: NF4 / FP4 both have an exact zero code
        try:
            import bitsandbytes.functional as bnbf  # heavy, optional: only for bnb models

            return bnbf.dequantize_4bit(t.data, qs)
        except Exception:  # noqa: BLE001 - unknown packing: do not guess
            return None
    # Tensor subclasses with their own dequantize (quanto QTensor...); torch.Tensor.dequantize
    # itself is for torch's quantized dtypes and would read packed storage as values.
    if type(t).dequantize is not torch.Tensor.dequantize:
        try:
            return t.dequantize()
        except Exception:  # noqa: BLE001
            return None
    if t.dtype == torch.int8:  # bitsandbytes LLM.int8 rows: zero stays zero after scaling
        return t
    return t if t.is_floating_point() else None


def unique_parameters(model: Any) -> list[torch.Tensor]:
    """The model's parameters, each tensor once (tied weights once)."""
    seen: set[int] = set()
    out = []
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def memory_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers in memory (tied tensors once, packed sizes)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


def logical_parameters(model: Any) -> int:
    """Number of weights as the full-precision model had them (bnb packs two 4-bit weights per byte)."""
    return sum(logical_numel(p) for p in unique_parameters(model))


def count_parameters(model: Any) -> dict[str, int]:
    """``{"parameters", "nonzero_parameters"}``: logical weights and those not exactly zero."""
    total = nonzero = 0
    # offloaded weights (--max-memory) are read back one tensor at a time
    params = (t for _, t in named_tensors(model)) if is_offloaded(model) else unique_parameters(model)
    for p in params:
        n = logical_numel(p)
        total += n
        dense = dense_values(p)
        nonzero += int(torch.count_nonzero(dense)) if dense is not None else n
    return {"parameters": total, "nonzero_parameters": nonzero}


def _output_embedding_ids(model: Any) -> set[int]:
    """ids of the output-embedding (LM head) weights: left out of ``linear_sparsity``."""
    get = getattr(model, "get_output_embeddings", None)
    try:
        head = get() if callable(get) else None
    except (AttributeError, NotImplementedError):
        head = None
    w = getattr(head, "weight", None)
    return {id(w)} if w is not None else set()


def linear_sparsity(model: Any) -> tuple[float | None, dict[str, float]]:
    """(fraction of zeros over the body's Linear weights, per-module fractions)."""
    skip = _output_embedding_ids(model)
    seen: set[int] = set()
    layers: dict[str, float] = {}
    total = zeros = 0
    for name, module in model.named_modules():
        cls = type(module).__name__
        if not ("Linear" in cls or cls == "Conv1D"):
            continue
        w = getattr(module, "weight", None)
        if not isinstance(w, torch.Tensor) or id(w) in skip or id(w) in seen:
            continue
        seen.add(id(w))
        dense = dense_values(w)
        if dense is None:
            continue
        z = int(dense.numel() - torch.count_nonzero(dense))
        layers[name] = z / max(dense.numel(), 1)
        total += dense.numel()
        zeros += z
    return (zeros / total if total else None), layers


def size_figures(model: Any) -> dict[str, Any]:
    """Parameter counts, bytes in memory, bits per weight and per-Linear sparsity."""
    param_bytes = sum(tensor_bytes(p) for p in unique_parameters(model))
    buffer_bytes = memory_bytes(model) - param_bytes
    counts = count_parameters(model)
    total = counts["parameters"]
    sparsity, layers = linear_sparsity(model)
    return {
        **counts,
        "parameter_bytes": param_bytes,
        "buffer_bytes": buffer_bytes,
        "memory_bytes": param_bytes + buffer_bytes,
        "bits_per_weight": 8 * param_bytes / total if total else None,
        "linear_sparsity": sparsity,
        "layers": layers,
    }


def safetensors_sizes(folder: str | Path) -> dict[str, int]:
    """name -> bytes of every tensor in the folder's ``*.safetensors`` files (read from the headers)."""
    out: dict[str, int] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                a, b = v["data_offsets"]
                out[k] = b - a
    return out
