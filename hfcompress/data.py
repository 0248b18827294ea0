"""Text datasets from the Hub (or a local dataset folder) and calibration windows.

``load_texts("fixtures/enwiki-sample")`` goes through ``datasets.load_dataset``, so a
repo id is fetched from ``HF_ENDPOINT`` exactly as online; a local folder laid out as
a Hub dataset repo works too. ``calibration_ids(tokenizer, CalibrationConfig(...))``
returns a ``[samples, seq_len]`` LongTensor of windows drawn at seeded random offsets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import CalibrationConfig
from .errors import UsageError


def load_split(dataset: str, config: str | None = None, split: str = "train",
               revision: str | None = None) -> Any:
    """A ``datasets.Dataset`` split, with one-line errors for the usual mistakes."""
    import datasets
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return datasets.load_dataset(dataset, config, split=split, revision=revision)
    except FileNotFoundError:
        raise UsageError(f"dataset {dataset} not found (neither a Hub dataset repo nor a local folder)") from None
    except ValueError as exc:
        msg = " ".join(str(exc).split())
        if "corresponds to no data" in msg:  # the split exists but has no rows
            raise UsageError(f"dataset {dataset} split {split!r} is empty: choose another split") from None
        if "split" in msg.lower():
            raise UsageError(f"dataset {dataset} has no split {split!r}: {msg[:200]}") from None
        if "config" in msg.lower():
            raise UsageError(f"dataset {dataset}: config {config!r} problem: {msg[:200]}") from None
        raise UsageError(f"cannot load dataset {dataset}: {msg[:200]}") from None
    except (HfHubHTTPError, ConnectionError, OSError) as exc:
        raise UsageError(f"cannot load dataset {dataset}: {' '.join(str(exc).split())[:200]}") from None


def load_texts(dataset: str, config: str | None = None, split: str = "train", column: str = "text",
               revision: str | None = None) -> list[str]:
    """The non-empty strings of ``column`` in a dataset split."""
    ds = load_split(dataset, config, split, revision)
    if column not in ds.column_names:
        raise UsageError(f"dataset {dataset} ({split}) has no column {column!r}: "
                         f"available columns are {', '.join(ds.column_names)}")
    texts = [t for t in ds[column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise UsageError(f"dataset {dataset} ({split}) has no text in column {column!r}")
    return texts


def calibration_ids(tokenizer: Any, cfg: CalibrationConfig, texts: list[str] | None = None) -> Any:
    """``[cfg.samples, cfg.seq_len]`` token windows from the calibration dataset.

    The texts are joined with blank lines and tokenized once; windows start at seeded
    random offsets (reproducible for a given ``seed``). Raises when the corpus has
    fewer than ``seq_len + 1`` tokens.
    """
    import torch

    if tokenizer is None:
        raise UsageError("calibration needs a tokenizer, and this model has none: save one with the model")
    if texts is None:
        texts = load_texts(cfg.dataset, cfg.config, cfg.split, cfg.text_column, cfg.revision)
    # Text by text (joined by the separator's tokens): one call on the whole corpus keeps
    # ~300 MB of tokenizer state alive for SmolLM2 on enwiki-sample.
    sep = tokenizer("\n\n", add_special_tokens=False).input_ids
    pieces: list[int] = []
    for i, text in enumerate(texts):
        if i:
            pieces += sep
        pieces += tokenizer(text, add_special_tokens=False).input_ids
    ids = torch.tensor(pieces, dtype=torch.long)
    if ids.numel() < cfg.seq_len + 1:
        raise UsageError(f"calibration dataset {cfg.dataset} has only {ids.numel()} tokens, fewer than "
                         f"seq_len={cfg.seq_len}: lower --seq-len or use a larger dataset")
    gen = torch.Generator().manual_seed(cfg.seed)
    starts = torch.randint(0, ids.numel() - cfg.seq_len, (cfg.samples,), generator=gen)
    return torch.stack([ids[s: s + cfg.seq_len] for s in starts.tolist()])


def local_datasets_dir() -> Path:
    """Real datasets laid out as Hub repos: ``$HFCOMPRESS_DATASETS`` or ``<project>/../shared/hub/datasets``."""
    from pathlib import Path

    env = os.environ.get("HFCOMPRESS_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "hub" / "datasets"


def default_calibration_dataset() -> str:
    from .config import DEFAULT_CALIBRATION_DATASET

    return os.environ.get("HFCOMPRESS_CALIBRATION", DEFAULT_CALIBRATION_DATASET)
