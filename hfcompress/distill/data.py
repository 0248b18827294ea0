"""Training data for distillation / recovery fine-tuning.

* causal LMs: the texts are joined with blank lines, tokenized once and cut into
  consecutive ``seq_len``-token blocks (``packing=True``), or one truncated, padded row
  per text (``packing=False``; padding gets label ``-100``);
* classifiers: one row per text with its label column, padded per batch;
* image classifiers (``image-classification``): one row per image (``image_column``, else the
  column of Image type) through the model's image processor, with its ``label_column``;
* speech encoder–decoders (``speech-seq2seq``, Whisper): one row per clip (``audio_column``,
  else the column of Audio type) as log-mel features at the feature extractor's sampling rate,
  the transcript (``text_column``) tokenized by the processor's tokenizer as labels, the decoder
  inputs the labels shifted right by the decoder start token;
* text encoder–decoders (``seq2seq-lm``, T5 / BART): ``text_column`` in, ``target_column`` out.

Image and audio rows are processed when a batch is drawn (no copy of the whole split as tensors).

``max_samples`` keeps the first N blocks / texts of a causal-LM corpus, and a seeded random
subset (``shuffle(seed=0)``) of a labelled split (those are often sorted by label).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..calibration.modality import decode_audio, find_column, processor_part, to_image
from ..config import DEFAULT_CALIBRATION_DATASET, StrictModel
from ..data import load_split, load_texts
from ..errors import UnsupportedError, UsageError


class TrainDataConfig(StrictModel):
    """Training text: a Hub dataset id or a local dataset folder."""

    dataset: str = DEFAULT_CALIBRATION_DATASET
    config: str | None = None
    split: str = "train"
    text_column: str = "text"
    label_column: str = "label"
    image_column: str | None = Field(None, description="image column (image classifiers; default: found by type)")
    audio_column: str | None = Field(None, description="audio column (speech models; default: found by type)")
    target_column: str | None = Field(None, description="output text column of a text seq2seq model (T5, BART)")
    seq_len: int = Field(512, ge=8, le=131_072)
    max_samples: int | None = Field(None, ge=1)
    packing: bool = True
    revision: str | None = None


def build_dataset(tokenizer: Any, cfg: TrainDataConfig, *, task: str, model: Any = None) -> tuple[Any, Any]:
    """``(dataset, data_collator)`` for ``task`` (``causal-lm``, a classifier, ``image-classification``,
    ``speech-seq2seq`` or ``seq2seq-lm``); ``tokenizer`` is the processor of image / speech models,
    ``model`` (the teacher) names the model in errors and gives the decoder start token."""
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, default_data_collator

    if task == "image-classification":
        return _image_rows(tokenizer, cfg, model), default_data_collator
    if task == "speech-seq2seq":
        rows = _speech_rows(tokenizer, cfg, model)
        return rows, _Seq2SeqPadCollator(rows.pad_id)
    if tokenizer is None:
        raise UsageError("training needs a tokenizer and the model has none: save one with the model")
    if task == "causal-lm":
        texts = load_texts(cfg.dataset, cfg.config, cfg.split, cfg.text_column, cfg.revision)
        if cfg.packing:
            ids = tokenizer("\n\n".join(texts), return_tensors="pt", add_special_tokens=False).input_ids[0]
            n = ids.numel() // cfg.seq_len
            if n == 0:
                raise UsageError(f"dataset {cfg.dataset} has only {ids.numel()} tokens, fewer than "
                                 f"seq_len={cfg.seq_len}: lower --seq-len or use a larger dataset")
            if cfg.max_samples:
                n = min(n, cfg.max_samples)
            blocks = ids[: n * cfg.seq_len].view(n, cfg.seq_len)
            ds = datasets.Dataset.from_dict({"input_ids": blocks.tolist(),
                                             "attention_mask": torch.ones_like(blocks).tolist(),
                                             "labels": blocks.tolist()})
            return ds.with_format("torch"), default_data_collator
        if cfg.max_samples:
            texts = texts[: cfg.max_samples]
        enc = tokenizer(texts, truncation=True, max_length=cfg.seq_len)
        ds = datasets.Dataset.from_dict(dict(enc))
        return ds, _CausalPadCollator(tokenizer)

    split = load_split(cfg.dataset, cfg.config, cfg.split, cfg.revision)
    if task == "seq2seq-lm":
        return _text_seq2seq(tokenizer, cfg, split, model)
    for col in (cfg.text_column, cfg.label_column):
        if col not in split.column_names:
            raise UsageError(f"dataset {cfg.dataset} ({cfg.split}) has no column {col!r}: available columns "
                             f"are {', '.join(split.column_names)} (set text_column / label_column)")
    if cfg.max_samples and cfg.max_samples < len(split):
        # a seeded random subset: labelled splits are often sorted by label
        split = split.shuffle(seed=0).select(range(cfg.max_samples))
    enc = tokenizer(list(split[cfg.text_column]), truncation=True, max_length=cfg.seq_len)
    ds = datasets.Dataset.from_dict({**dict(enc), "labels": list(split[cfg.label_column])})
    return ds, DataCollatorWithPadding(tokenizer)


class _CausalPadCollator:
    """Pad rows to the batch's longest; labels = input ids with padding set to -100."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            row = torch.as_tensor(f["input_ids"], dtype=torch.long)
            ids[i, : row.numel()] = row
            mask[i, : row.numel()] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _subset(split: Any, cfg: TrainDataConfig) -> Any:
    if cfg.max_samples and cfg.max_samples < len(split):
        return split.shuffle(seed=0).select(range(cfg.max_samples))
    return split


def _require(split: Any, cfg: TrainDataConfig, col: str, what: str, flag: str) -> None:
    if col not in split.column_names:
        raise UsageError(f"dataset {cfg.dataset} ({cfg.split}) has no {what} column {col!r}: available columns are "
                         f"{', '.join(split.column_names)} (set {flag})")


class _Rows:
    """A map-style dataset whose rows are processed when drawn (``fn(row) -> dict``)."""

    def __init__(self, split: Any, fn: Any, pad_id: int = 0):
        self.split, self.fn, self.pad_id = split, fn, pad_id

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.fn(self.split[int(i)])


def _image_rows(processor: Any, cfg: TrainDataConfig, model: Any) -> _Rows:
    import torch

    part = processor_part(processor, "image", model)
    split = load_split(cfg.dataset, cfg.config, cfg.split, cfg.revision)
    col = find_column(split, "image", cfg.image_column, cfg.dataset, cfg.split, model, "--dataset")
    _require(split, cfg, cfg.label_column, "label", "--label-column")
    split = _subset(split.select_columns([col, cfg.label_column]), cfg)

    def row(r: dict[str, Any]) -> dict[str, Any]:
        pixels = part(images=[to_image(r[col], col, model)], return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "labels": torch.tensor(int(r[cfg.label_column]))}

    return _Rows(split, row)


def _speech_rows(processor: Any, cfg: TrainDataConfig, model: Any) -> _Rows:
    import datasets

    part = processor_part(processor, "audio", model)
    tok = getattr(processor, "tokenizer", None)
    config = getattr(model, "config", None)
    start = getattr(config, "decoder_start_token_id", None)
    if tok is None or not isinstance(start, int):
        raise UnsupportedError("distilling a speech model needs a processor with a tokenizer and a decoder start "
                               "token (an encoder–decoder such as Whisper)")
    split = load_split(cfg.dataset, cfg.config, cfg.split, cfg.revision)
    col = find_column(split, "audio", cfg.audio_column, cfg.dataset, cfg.split, model, "--dataset")
    _require(split, cfg, cfg.text_column, "transcript", "--text-column")
    split = _subset(split.select_columns([col, cfg.text_column]), cfg)
    if isinstance(split.features[col], datasets.Audio):
        split = split.cast_column(col, datasets.Audio(decode=False))
    rate = int(getattr(part, "sampling_rate", 16000))
    limit = min(cfg.seq_len, int(getattr(config, "max_target_positions", 0) or cfg.seq_len))
    eos = getattr(config, "eos_token_id", None)
    pad = next((v for v in (getattr(config, "pad_token_id", None), eos) if isinstance(v, int)), 0)

    def row(r: dict[str, Any]) -> dict[str, Any]:
        feats = part([decode_audio(r[col], rate)], sampling_rate=rate, return_tensors="pt")["input_features"][0]
        ids = list(tok(str(r[cfg.text_column] or "")).input_ids)
        seq = ids if ids[:1] == [start] else [start, *ids]
        if isinstance(eos, int) and seq[-1] != eos:
            seq.append(eos)
        seq = seq[: limit + 1]
        return {"input_features": feats, "decoder_input_ids": seq[:-1], "labels": seq[1:]}

    return _Rows(split, row, pad)


class _Seq2SeqPadCollator:
    """Stack the encoder inputs; right-pad ``decoder_input_ids`` (pad id, with a mask) and ``labels`` (-100)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["labels"]) for f in features)
        dec = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full_like(dec, -100)
        mask = torch.zeros_like(dec)
        for i, f in enumerate(features):
            n = len(f["labels"])
            dec[i, :n] = torch.as_tensor(f["decoder_input_ids"])
            labels[i, :n] = torch.as_tensor(f["labels"])
            mask[i, :n] = 1
        out = {k: torch.stack([torch.as_tensor(f[k]) for f in features]) for k in features[0]
               if k not in ("decoder_input_ids", "labels")}
        return {**out, "decoder_input_ids": dec, "decoder_attention_mask": mask, "labels": labels}


def _text_seq2seq(tokenizer: Any, cfg: TrainDataConfig, split: Any, model: Any) -> tuple[Any, Any]:
    """Source texts -> target texts (T5, BART): labels from ``target_column``, decoder inputs from them."""
    import datasets
    from transformers import DataCollatorForSeq2Seq

    if not cfg.target_column:
        raise UsageError("distilling a text seq2seq model needs target texts: set target_column (--target-column) to "
                         f"the output column of dataset {cfg.dataset} (inputs come from --text-column "
                         f"{cfg.text_column!r})")
    for col, what, flag in ((cfg.text_column, "input", "--text-column"), (cfg.target_column, "target",
                                                                         "--target-column")):
        _require(split, cfg, col, what, flag)
    split = _subset(split, cfg)
    enc = tokenizer(list(split[cfg.text_column]), truncation=True, max_length=cfg.seq_len)
    labels = tokenizer(text_target=list(split[cfg.target_column]), truncation=True, max_length=cfg.seq_len)
    ds = datasets.Dataset.from_dict({**dict(enc), "labels": labels["input_ids"]})
    return ds, DataCollatorForSeq2Seq(tokenizer, model=model)
