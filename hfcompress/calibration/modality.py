"""Calibration inputs from the model's own modality: pixel values for image models, log-mel
features (and the transcripts as decoder inputs) for speech models.

The model's ``main_input_name`` decides (:func:`modality_of`): ``input_ids`` -> text windows
(:mod:`.data`), ``pixel_values`` -> images, ``input_features`` / ``input_values`` -> audio.
:func:`media_inputs` draws ``samples`` rows of the calibration dataset at seeded random indices
and runs them through the model's own processor (the bundle's tokenizer slot holds it for vision
and speech models): ``{"pixel_values": [n, C, H, W]}`` (with ``labels`` when the dataset has an
integer label column: the Taylor loss reads them, the calibration forward never reaches the head);
``{"input_features": [n, mels, frames], "decoder_input_ids": [n, T], "decoder_attention_mask":
[n, T]}`` for an encoder–decoder speech model, the transcripts tokenized by the processor's
tokenizer, starting with the decoder start token, right-padded. Audio is decoded from the
dataset's stored bytes (WAV through the standard library; other formats through ``datasets``'
own decoder where installed) and resampled to the feature extractor's sampling rate.

Columns are found by feature type (``Image`` / ``Audio``), then by name; ``image_column`` /
``audio_column`` of the calibration config name them. Mistakes (a text dataset for an image
model, no processor saved with the model, too few rows) are one-line errors before any work.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from ..audio import decode_audio as _decode_audio
from ..config import CalibrationConfig
from ..data import load_split
from ..errors import UnsupportedError, UsageError

IMAGE_NAMES = ("image", "img", "images", "picture", "pixel_values")
AUDIO_NAMES = ("audio", "speech", "sound", "wav")
LABEL_NAMES = ("label", "labels", "class", "target")

_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def modality_of(model: Any) -> str:
    """``"text"``, ``"image"`` or ``"audio"``, from the model's ``main_input_name``."""
    main = getattr(model, "main_input_name", "input_ids")
    if main in ("input_ids", "inputs_embeds"):
        return "text"
    if main == "pixel_values":
        return "image"
    if main in ("input_features", "input_values"):
        return "audio"
    raise UnsupportedError(f"calibration inputs for `{main}` ({type(model).__name__}) cannot be built: "
                           "calibrated methods take text, image or audio models; use a data-free method (magnitude)")


def _feature_columns(ds: Any, kind: str) -> list[str]:
    import datasets

    cls = datasets.Image if kind == "image" else datasets.Audio
    return [c for c, f in (ds.features or {}).items() if isinstance(f, cls)]


def find_column(ds: Any, kind: str, given: str | None, dataset: str, split: str, model: Any,
                dataset_flag: str = "--calibration") -> str:
    """The image / audio column of ``ds``: ``given``, else the first of that feature type, else by name
    (``dataset_flag``: the flag that names the dataset, for the error)."""
    cols = list(ds.column_names)
    flag = f"--{kind}-column"
    if given:
        if given not in cols:
            raise UsageError(f"dataset {dataset} ({split}) has no column {given!r}: available columns "
                             f"are {', '.join(cols)}; fix {flag}")
        return given
    typed = _feature_columns(ds, kind)
    if typed:
        return typed[0]
    named = [c for c in cols if c.lower() in (IMAGE_NAMES if kind == "image" else AUDIO_NAMES)]
    if named:
        return named[0]
    main = getattr(model, "main_input_name", "?")
    name = type(model).__name__ if model is not None else "the model"
    text = [c for c, f in (ds.features or {}).items() if getattr(f, "dtype", None) in ("string", "large_string")]
    what = f"a text dataset (column {text[0]!r})" if text else f"columns {', '.join(cols)}"
    raise UsageError(f"dataset {dataset} ({split}) has no {kind} column ({what}), and "
                     f"{name} reads `{main}`: pass an {kind} dataset with {dataset_flag} DATASET, "
                     f"or name its {kind} column with {flag}")


def processor_part(processor: Any, kind: str, model: Any) -> Any:
    """The image processor / feature extractor inside ``processor`` (or ``processor`` itself)."""
    attr = "image_processor" if kind == "image" else "feature_extractor"
    part = getattr(processor, attr, None) if processor is not None else None
    if part is None and processor is not None:
        from transformers.feature_extraction_utils import FeatureExtractionMixin
        from transformers.image_processing_base import ImageProcessingMixin

        base = ImageProcessingMixin if kind == "image" else FeatureExtractionMixin
        part = processor if isinstance(processor, base) else None
    if part is None:
        what = "image processor (preprocessor_config.json)" if kind == "image" else \
            "feature extractor (preprocessor_config.json)"
        name = type(model).__name__ if model is not None else "this model"
        raise UsageError(f"{name} needs its {what} for image / audio inputs, and none was loaded with the model: "
                         "save the base model's processor next to the weights (AutoProcessor.from_pretrained(base)"
                         ".save_pretrained(folder))")
    return part


def _pick(n_rows: int, cal: CalibrationConfig, dataset: str, split: str) -> list[int]:
    if n_rows < cal.samples:
        raise UsageError(f"calibration dataset {dataset} ({split}) has only {n_rows} rows, fewer than "
                         f"--samples {cal.samples}: lower --samples or use a larger dataset")
    gen = torch.Generator().manual_seed(cal.seed)
    return sorted(torch.randperm(n_rows, generator=gen)[: cal.samples].tolist())


def _labels(ds: Any, rows: list[int], model: Any) -> torch.Tensor | None:
    """Integer class labels of ``rows`` when the dataset has a label column the model's head can score."""
    import datasets

    cols = [c for c, f in (ds.features or {}).items() if isinstance(f, datasets.ClassLabel)]
    cols += [c for c in ds.column_names if c.lower() in LABEL_NAMES and c not in cols]
    n_labels = getattr(getattr(model, "config", None), "num_labels", None)
    for col in cols:
        values = ds.select(rows)[col]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and \
                (n_labels is None or all(0 <= v < n_labels for v in values)):
            return torch.tensor(values, dtype=torch.long)
    return None


def to_image(value: Any, col: str, model: Any) -> Any:
    """A PIL image in the model's channel mode from a dataset cell (decoded, or ``{"bytes", "path"}``)."""
    from PIL import Image

    if isinstance(value, dict) and value.get("bytes") is not None:
        value = Image.open(io.BytesIO(value["bytes"]))
    elif isinstance(value, dict) and value.get("path"):
        value = Image.open(value["path"])
    if not isinstance(value, Image.Image):
        raise UsageError(f"column {col!r} holds {type(value).__name__}, not images: name the image column with "
                         "--image-column")
    channels = getattr(getattr(model, "config", None), "num_channels", 3)
    return value.convert("RGB" if channels == 3 else "L")


def _image_inputs(ds: Any, col: str, rows: list[int], processor: Any, model: Any) -> dict[str, torch.Tensor]:
    part = processor_part(processor, "image", model)
    images = [to_image(v, col, model) for v in ds.select(rows)[col]]
    out = part(images=images, return_tensors="pt")
    pixels = out.get("pixel_values")
    if pixels is None:
        raise UnsupportedError(f"the image processor of {type(model).__name__} returned no pixel_values")
    return {"pixel_values": pixels}


def decode_audio(value: Any, rate: int) -> Any:
    """A mono float32 waveform at ``rate`` Hz from a stored audio cell (:func:`hfcompress.audio.decode_audio`)."""
    return _decode_audio(value, rate, where="an audio cell")


def _audio_inputs(ds: Any, col: str, rows: list[int], processor: Any, model: Any, cal: CalibrationConfig,
                  dataset: str) -> dict[str, torch.Tensor]:
    import datasets

    part = processor_part(processor, "audio", model)
    rate = int(getattr(part, "sampling_rate", 16000))
    sub = ds.select(rows)
    if isinstance(sub.features.get(col), datasets.Audio):
        sub = sub.cast_column(col, datasets.Audio(decode=False))
    waves = [decode_audio(v, rate) for v in sub[col]]
    main = getattr(model, "main_input_name", "input_features")
    kwargs: dict[str, Any] = {"sampling_rate": rate, "return_tensors": "pt"}
    if main == "input_values":
        kwargs["padding"] = True
    feats = part(waves, **kwargs)
    if main not in feats:
        raise UnsupportedError(f"the feature extractor of {type(model).__name__} returned {', '.join(feats)}, "
                               f"not `{main}`")
    out = {main: feats[main]}
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        out.update(_decoder_inputs(sub, processor, model, cal, dataset))
    return out


def _decoder_inputs(sub: Any, processor: Any, model: Any, cal: CalibrationConfig, dataset: str
                    ) -> dict[str, torch.Tensor]:
    """Transcripts as decoder inputs: start token, then the tokenized text (truncated, right-padded)."""
    config = model.config
    tok = getattr(processor, "tokenizer", None)
    if tok is None:
        raise UsageError(f"calibrating the decoder of {type(model).__name__} needs the processor's tokenizer for the "
                         "transcripts, and the model has none: save the base model's processor with it")
    col = cal.text_column
    if col not in sub.column_names:
        raise UsageError(f"calibrating the decoder of {type(model).__name__} needs transcripts, and calibration "
                         f"dataset {dataset} has no column {col!r} (columns: {', '.join(sub.column_names)}): name "
                         "the transcript column with --text-column")
    start = config.decoder_start_token_id
    if not isinstance(start, int):
        raise UnsupportedError(f"{type(config).__name__} has no decoder_start_token_id: calibration cannot start "
                               "the decoder inputs")
    limit = min(int(cal.seq_len), int(getattr(config, "max_target_positions", 0) or cal.seq_len))
    rows = []
    for text in sub[col]:
        ids = list(tok(str(text or "")).input_ids)
        ids = ids if ids[:1] == [start] else [start, *ids]
        rows.append(ids[:limit])
    pad = next((v for v in (config.pad_token_id, config.eos_token_id, tok.pad_token_id) if isinstance(v, int)), 0)
    width = max(len(r) for r in rows)
    dec = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(dec)
    for i, r in enumerate(rows):
        dec[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"decoder_input_ids": dec, "decoder_attention_mask": mask}


def media_inputs(processor: Any, model: Any, cal: CalibrationConfig) -> dict[str, torch.Tensor]:
    """``samples`` calibration inputs for an image or speech model (cached per process; see the module doc)."""
    kind = modality_of(model)
    if kind == "text":
        raise UsageError("media_inputs builds image / audio inputs: use calibration_windows for a text model")
    given = cal.image_column if kind == "image" else cal.audio_column
    key = (cal.model_dump_json(), kind, id(processor), type(model).__name__,
           getattr(model.config, "to_json_string", lambda: "")())
    if key in _CACHE:
        return _CACHE[key]
    if processor is None:
        processor_part(None, kind, model)
    ds = load_split(cal.dataset, cal.config, cal.split, cal.revision)
    col = find_column(ds, kind, given, cal.dataset, cal.split, model)
    rows = _pick(len(ds), cal, cal.dataset, cal.split)
    if kind == "image":
        out = _image_inputs(ds, col, rows, processor, model)
        labels = _labels(ds, rows, model)
        if labels is not None:
            out["labels"] = labels
    else:
        out = _audio_inputs(ds, col, rows, processor, model, cal, cal.dataset)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    out = {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}
    _CACHE.clear()
    _CACHE[key] = out
    return out


def taylor_loss_kind(batch: dict[str, Any]) -> str:
    """What :func:`taylor_loss` differentiates on ``batch`` (for the stage summary)."""
    if "decoder_input_ids" in batch:
        return "next-token cross-entropy on the transcripts"
    if "labels" in batch:
        return "cross-entropy on the dataset's labels"
    return "cross-entropy on the model's own predictions (the dataset has no label column)"


def taylor_loss(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """The loss of Taylor importance on media calibration inputs (:func:`taylor_loss_kind` names it).

    Image classification: cross-entropy on the dataset's labels (``labels`` in ``inputs``), or on
    the model's own argmax predictions when the dataset has none. Encoder–decoder speech models:
    next-token cross-entropy on the transcript tokens (``decoder_input_ids``), padding left out.
    """
    import torch.nn.functional as F

    inputs = dict(inputs)
    labels = inputs.pop("labels", None)
    logits = model(**inputs).logits
    if logits.dim() == 2:
        if labels is not None:
            return F.cross_entropy(logits.float(), labels.to(logits.device))
        return F.cross_entropy(logits.float(), logits.detach().argmax(-1))
    dec = inputs.get("decoder_input_ids")
    if dec is None or logits.dim() != 3:
        raise UnsupportedError(f"taylor importance of {type(model).__name__} needs a classification head or "
                               "decoder inputs (transcripts) to compute a loss")
    mask = inputs.get("decoder_attention_mask")
    target = dec[:, 1:]
    if mask is not None:
        target = target.masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), target.reshape(-1).to(logits.device),
                           ignore_index=-100)
