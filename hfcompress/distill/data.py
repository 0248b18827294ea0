"""Training data for distillation / recovery fine-tuning.

* causal LMs: the texts are joined with blank lines, tokenized once and cut into
  consecutive ``seq_len``-token blocks (``packing=True``), or one truncated, padded row
  per text (``packing=False``; padding gets label ``-100``);
* classifiers: one row per text with its label column, padded per batch.

``max_samples`` keeps the first N blocks / texts of a causal-LM corpus, and a seeded random
subset (``shuffle(seed=0)``) of a labelled split (those are often sorted by label).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..config import DEFAULT_CALIBRATION_DATASET, StrictModel
from ..data import load_split, load_texts
from ..errors import UsageError


class TrainDataConfig(StrictModel):
    """Training text: a Hub dataset id or a local dataset folder."""

    dataset: str = DEFAULT_CALIBRATION_DATASET
    config: str | None = None
    split: str = "train"
    text_column: str = "text"
    label_column: str = "label"
    seq_len: int = Field(512, ge=8, le=131_072)
    max_samples: int | None = Field(None, ge=1)
    packing: bool = True
    revision: str | None = None


def build_dataset(tokenizer: Any, cfg: TrainDataConfig, *, task: str) -> tuple[Any, Any]:
    """``(datasets.Dataset, data_collator)`` for ``task`` (``causal-lm`` or a classifier)."""
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, default_data_collator


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
