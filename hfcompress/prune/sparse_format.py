"""Compressed checkpoint format for unstructured / N:M sparse models ("hfcompress-sparse").

Saving (``bundle.saver = save_sparse``, opt-in with ``sparse_format: true`` / ``--sparse-format``)
writes ``model.safetensors`` where every 2-D floating tensor with at least
:data:`MIN_SPARSITY` zeros is replaced by three tensors::

    <name>_sparse_bitmask  uint8 [ceil(numel / 8)]  bit i (little-endian within each byte) of the
                                                     row-major flattened tensor = 1 where non-zero
    <name>_sparse_values   uint8 [stream]            the non-zeros in row-major order, encoded
                                                     by the ``values_codec`` (below)
    <name>_sparse_shape    int64 [ndim]              the dense shape

All other tensors are stored as usual (dense). ``config.json`` gets
``quantization_config = {"quant_method": "hfcompress-sparse", "format": "bitmask", "version": 2,
"values_codec": "byteplane-zlib", ...}``.

``values_codec = "byteplane-zlib"`` (version 2): the values' bytes are split into planes; the
high byte (sign + exponent: few distinct values among the weights a pruner keeps) is Huffman
coded with zlib, the mantissa bytes are stored raw (they are close to uniform). A 24-byte
header ``<4s B B 2x Q Q``: magic ``HFCV``, dtype code, itemsize, count, compressed length. On
SmolLM2 this takes the high byte of fp16 values to ~half its size (about 4 bits saved per
non-zero). Lossless: the reloaded tensors are bit-identical. Version 1 checkpoints
(``values_codec = "raw"``: ``_sparse_values`` in the tensor's own dtype) still load.
Written by hand because no maintained library stores entropy-coded tensors inside safetensors
(compressed-tensors' bitmask format keeps the values raw); it uses only ``zlib`` from the
standard library.

Without ``import hfcompress`` plain ``from_pretrained`` raises ``ValueError: Specified
`attn_implementation="this checkpoint is in the hfcompress-sparse format: run `pip install
hfcompress` and `import hfcompress` before from_pretrained"` is not supported`` (see
:func:`hfcompress.formats.guard_config`) instead of loading a model with random weights.

Loading: ``import hfcompress`` registers a transformers quantizer for ``hfcompress-sparse`` whose
weight converter rebuilds each dense tensor (bit-exact: the values keep their dtype) while
``from_pretrained`` reads the checkpoint; the loaded model is a plain dense model (the
quantization config is dropped after loading, so ``save_pretrained`` writes a dense checkpoint).
``from_pretrained(..., dtype=torch.float16)`` converts after densifying, like any checkpoint.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import torch

from ..formats import guard_config, unguard

QUANT_METHOD = "hfcompress-sparse"
FORMAT_VERSION = 2
VALUES_CODEC = "byteplane-zlib"
_MAGIC = b"HFCV"
_HEADER = struct.Struct("<4sBB2xQQ")
_DTYPES = {1: torch.float16, 2: torch.bfloat16, 3: torch.float32, 4: torch.float64}
_CODES = {v: k for k, v in _DTYPES.items()}
#: tensors with fewer zeros than this stay dense (the bitmask costs 1 bit per element)
MIN_SPARSITY = 0.1
SUFFIXES = ("_sparse_bitmask", "_sparse_values", "_sparse_shape")
_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bitmask(mask: torch.Tensor) -> torch.Tensor:
    """bool tensor -> uint8 [ceil(numel/8)], bit i of byte j = element 8j + i (little-endian)."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _BITS).sum(1, dtype=torch.uint8)


def unpack_bitmask(packed: torch.Tensor, numel: int) -> torch.Tensor:
    bits = packed.reshape(-1, 1).bitwise_and(_BITS.to(packed.device)).ne(0)
    return bits.reshape(-1)[:numel]


def encode_values(v: torch.Tensor) -> torch.Tensor:
    """1-D float tensor -> uint8 stream: header, zlib(high-byte plane), raw low-byte planes."""
    if v.dtype not in _CODES or sys.byteorder != "little":
        raise ValueError(f"byteplane-zlib encodes float16/bfloat16/float32/float64 on little-endian hosts, "
                         f"not {v.dtype}")
    size = v.element_size()
    planes = v.contiguous().view(torch.uint8).view(-1, size)
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    hi = z.compress(planes[:, -1].contiguous().numpy().tobytes()) + z.flush()
    head = _HEADER.pack(_MAGIC, _CODES[v.dtype], size, v.numel(), len(hi))
    lo = planes[:, :-1].contiguous().reshape(-1)
    return torch.cat([torch.frombuffer(bytearray(head + hi), dtype=torch.uint8), lo])


def decode_values(stream: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_values` (bit-exact)."""
    raw = stream.contiguous().numpy()
    magic, code, size, count, n_hi = _HEADER.unpack_from(raw.tobytes()[:_HEADER.size])
    if magic != _MAGIC or code not in _DTYPES:
        raise ValueError("hfcompress-sparse: corrupt values stream (bad header): re-download the checkpoint")
    start = _HEADER.size
    hi = zlib.decompress(raw[start:start + n_hi].tobytes())
    planes = torch.empty(count, size, dtype=torch.uint8)
    if count:
        planes[:, -1] = torch.frombuffer(bytearray(hi), dtype=torch.uint8)
    planes[:, :-1] = stream[start + n_hi:start + n_hi + count * (size - 1)].view(count, size - 1)
    return planes.view(-1).view(_DTYPES[code])


def compress_tensor(t: torch.Tensor) -> dict[str, torch.Tensor]:
    mask = t != 0
    return {"bitmask": pack_bitmask(mask), "values": encode_values(t[mask]),
            "shape": torch.tensor(list(t.shape), dtype=torch.int64)}


def decompress_tensor(bitmask: torch.Tensor, values: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Dense tensor from its parts; ``values`` is a uint8 byteplane-zlib stream (v2) or raw (v1)."""
    if values.dtype == torch.uint8:
        values = decode_values(values)
    dims = [int(x) for x in shape.tolist()]
    numel = 1
    for d in dims:
        numel *= d
    mask = unpack_bitmask(bitmask, numel)
    out = torch.zeros(numel, dtype=values.dtype, device=values.device)
    out[mask] = values
    return out.reshape(dims)


def sparse_state_dict(model: Any, min_sparsity: float = MIN_SPARSITY) -> tuple[dict[str, torch.Tensor], int]:
    """The checkpoint tensors (tied duplicates dropped) and how many tensors were compressed."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple]] = set()
    n = 0
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape))
        if t.numel() and key in seen:
            continue  # tied weight (e.g. lm_head = embeddings): saved once, as save_pretrained does
        seen.add(key)
        t = t.detach().cpu()
        if t.is_floating_point() and t.dim() == 2 and t.numel() >= 64 and name.endswith("weight"):
            zeros = int((t == 0).sum())
            if zeros >= min_sparsity * t.numel():
                for suffix, v in zip(SUFFIXES, compress_tensor(t).values(), strict=True):
                    out[name + suffix] = v
                n += 1
                continue
        out[name] = t.contiguous()
    return out, n


def save_sparse(bundle: Any, folder: Path) -> None:
    """``bundle.saver``: write config + generation config + compressed ``model.safetensors``."""
    from safetensors.torch import save_file

    model = bundle.model
    folder = Path(folder)
    state, n = sparse_state_dict(model)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    cfg["quantization_config"] = {"quant_method": QUANT_METHOD, "format": "bitmask", "version": FORMAT_VERSION,
                                  "values_codec": VALUES_CODEC, "bit_order": "little", "min_sparsity": MIN_SPARSITY,
                                  "compressed_tensors": n}
    guard_config(cfg, QUANT_METHOD)  # plain transformers raises instead of loading random weights
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(folder)


# -- transformers integration (registered on `import hfcompress`) ---------------------------

def _register() -> None:
    from transformers.core_model_loading import ConversionOps, WeightConverter
    from transformers.quantizers.auto import (
        AUTO_QUANTIZATION_CONFIG_MAPPING,
        AUTO_QUANTIZER_MAPPING,
        register_quantization_config,
        register_quantizer,
    )
    from transformers.quantizers.base import HfQuantizer
    from transformers.utils.quantization_config import QuantizationConfigMixin

    if QUANT_METHOD in AUTO_QUANTIZER_MAPPING:
        return

    class HFCompressSparseConfig(QuantizationConfigMixin):
        """config.json ``quantization_config`` of an hfcompress-sparse checkpoint."""

        def __init__(self, format: str = "bitmask", version: int = FORMAT_VERSION, **kwargs):
            self.quant_method = QUANT_METHOD
            self.format = format
            self.version = version
            for k, v in kwargs.items():
                setattr(self, k, v)
            if format != "bitmask" or int(version) > FORMAT_VERSION:
                raise ValueError(f"hfcompress-sparse format {format!r} v{version} is newer than this hfcompress "
                                 "understands: upgrade hfcompress")

    class Densify(ConversionOps):
        """bitmask + values + shape -> dense weight."""

        def convert(self, input_dict, source_patterns=None, target_patterns=None, **kwargs):
            parts = {}
            for key, tensors in input_dict.items():
                t = tensors[0] if isinstance(tensors, list) else tensors
                for suffix in SUFFIXES:
                    if key.endswith(suffix[1:]):
                        parts[suffix] = t
            dense = decompress_tensor(parts["_sparse_bitmask"], parts["_sparse_values"], parts["_sparse_shape"])
            return {target_patterns[0]: dense}

    class HFCompressSparseQuantizer(HfQuantizer):
        requires_calibration = False

        def __init__(self, quantization_config, **kwargs):
            super().__init__(quantization_config, **kwargs)

        def _process_model_before_weight_loading(self, model, **kwargs):
            return model

        def update_attn_implementation(self, config):
            return unguard(config, self.quantization_config)

        def get_weight_conversions(self):
            return [WeightConverter([f"weight{s}" for s in SUFFIXES], "weight", [Densify()])]

        def postprocess_model(self, model, **kwargs):
            # the tensors are dense now: the model is a plain model from here on
            self.remove_quantization_config(model)
            return model

        def is_serializable(self):
            return True

        @property
        def is_trainable(self):
            return True

    register_quantization_config(QUANT_METHOD)(HFCompressSparseConfig) \
        if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING else None
    register_quantizer(QUANT_METHOD)(HFCompressSparseQuantizer)


_register()
