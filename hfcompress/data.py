"""Text datasets from the Hub (or a local dataset folder) and calibration windows.

``load_texts("fixtures/enwiki-sample")`` goes through ``datasets.load_dataset``, so a
repo id is fetched from ``HF_ENDPOINT`` exactly as online; a local folder laid out as
a Hub dataset repo works too. ``calibration_ids(tokenizer, CalibrationConfig(...))``
returns a ``[samples, seq_len]`` LongTensor of windows drawn at seeded random offsets,
each starting with the tokenizer's BOS token where the tokenizer adds one itself
(:func:`bos_to_add`).
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


def bos_to_add(tokenizer: Any, add_bos: bool | None = None) -> int | None:
    """The BOS id to put first in every window, or None.

    ``add_bos=None`` (the default everywhere): BOS when the tokenizer defines one AND adds it
    itself (``add_special_tokens=True`` puts it first) — what the model saw in training.
    ``True``: the tokenizer's BOS (UsageError when it has none); ``False``: never.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_bos is False:
        return None
    if add_bos:
        if bos is None:
            raise UsageError("add_bos is set but the tokenizer has no BOS token: drop --add-bos")
        return int(bos)
    if bos is None:
        return None
    try:
        first = tokenizer("a", add_special_tokens=True).input_ids[:1]
    except Exception:  # noqa: BLE001 - a tokenizer that cannot encode a probe adds nothing we can see
        return None
    return int(bos) if first == [bos] else None


def calibration_ids(tokenizer: Any, cfg: CalibrationConfig, texts: list[str] | None = None) -> Any:
    """``[cfg.samples, cfg.seq_len]`` token windows from the calibration dataset.

    The texts are joined with blank lines and tokenized once; windows start at seeded
    random offsets (reproducible for a given ``seed``). Where the tokenizer adds BOS
    itself (``cfg.add_bos`` unset; see :func:`bos_to_add`), each window is BOS followed
    by ``seq_len - 1`` text tokens. Raises when the corpus has fewer than
    ``seq_len + 1`` tokens.
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
    bos = bos_to_add(tokenizer, getattr(cfg, "add_bos", None))
    width = cfg.seq_len - (bos is not None)
    gen = torch.Generator().manual_seed(cfg.seed)
    starts = torch.randint(0, ids.numel() - cfg.seq_len, (cfg.samples,), generator=gen)
    windows = torch.stack([ids[s: s + width] for s in starts.tolist()])
    if bos is not None:
        windows = torch.cat([torch.full((cfg.samples, 1), bos, dtype=windows.dtype), windows], 1)
    return windows


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
