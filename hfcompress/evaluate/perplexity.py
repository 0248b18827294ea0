"""Perplexity of a causal LM on a text corpus (fixed-length windows with a stride).

Methodology (the one in the transformers docs, "Perplexity of fixed-length models"):
the texts are joined with ``"\\n\\n"`` and tokenized once, without special tokens;
the first ``max_tokens`` tokens are kept; windows of ``seq_len`` tokens start every
``stride`` tokens, and each window scores only the tokens not already scored by the
previous one (all of them when ``stride == seq_len``). BOS is prepended to every
window as context (never scored) by default where the tokenizer adds it itself
(``add_bos`` unset; ``true`` / ``false`` force it). Perplexity = exp(total NLL / scored tokens)::

    ppl = perplexity_of_ids(model, ids, seq_len=512)
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from ..data import bos_to_add, load_texts
from ..errors import UnsupportedError, UsageError
from ..registry import register
from ..sizes import memory_bytes
from .base import DatasetEvalConfig, make_result
from .core import MethodSpec, apply_stage


def tokenize_corpus(tokenizer: Any, texts: list[str], max_tokens: int | None = None,
                    separator: str = "\n\n") -> torch.Tensor:
    """1-D LongTensor of the joined texts' tokens (no special tokens), cut to ``max_tokens``."""
    ids = tokenizer(separator.join(texts), return_tensors="pt", add_special_tokens=False).input_ids[0]
    return ids[:max_tokens] if max_tokens else ids


@torch.no_grad()
def perplexity_of_ids(
    model: Any,
    ids: torch.Tensor,
    *,
    seq_len: int = 512,
    stride: int | None = None,
    batch_size: int = 4,
    bos_token_id: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Perplexity of ``model`` over the 1-D token tensor ``ids``.

    Returns ``{"perplexity", "nll", "tokens", "windows"}``.
    """
    stride = stride or seq_len
    if stride > seq_len:
        raise ValueError(f"stride ({stride}) must be <= seq_len ({seq_len})")
    device = next(model.parameters()).device
    n = ids.numel()
    windows: list[tuple[int, int, int]] = []  # (begin, end, number of tokens to score)
    prev_end = 0
    for begin in range(0, n - 1, stride):
        end = min(begin + seq_len, n)
        trg = end - max(prev_end, begin + 1) if begin else end - 1
        windows.append((begin, end, trg))
        prev_end = end
        if end == n:
            break
    total_nll = 0.0
    total_tokens = 0
    iterator = range(0, len(windows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="perplexity", unit="batch")
    model_was_training = model.training
    model.eval()
    for i in iterator:
        group = windows[i: i + batch_size]
        width = max(e - b for b, e, _ in group)
        extra = 1 if bos_token_id is not None else 0
        input_ids = torch.full((len(group), width + extra), 0, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)
        for row, (b, e, trg) in enumerate(group):
            seg = ids[b:e]
            if extra:
                input_ids[row, 0] = bos_token_id
            input_ids[row, extra: extra + seg.numel()] = seg
            attention[row, : extra + seg.numel()] = 1
            labels[row, extra + seg.numel() - trg: extra + seg.numel()] = seg[seg.numel() - trg:]
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
        shift_logits = logits[:, :-1]
        shift_labels = labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
            ignore_index=-100, reduction="sum",
        )
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())
    if model_was_training:
        model.train()
    return {
        "perplexity": math.exp(total_nll / total_tokens),
        "nll": total_nll / total_tokens,
        "tokens": total_tokens,
        "windows": len(windows),
    }


# ---------------------------------------------------------------- evaluate method
WIKITEXT = "Salesforce/wikitext"


class PerplexityConfig(DatasetEvalConfig):
    """Perplexity of a causal LM on a text dataset (fixed windows, stride, token budget).

    ``config`` defaults to ``wikitext-2-raw-v1`` for ``Salesforce/wikitext``. BOS is prepended
    by default where the tokenizer adds it itself (``hfcompress.data.bos_to_add``); SmolLM2's
    adds none, so its reference figure (28.13 on the first 16,384 wikitext-2 test tokens,
    512-token windows) has no BOS.
    """

    method: Literal["perplexity"] = "perplexity"
    dataset: str = WIKITEXT
    split: str = "test"
    text_column: str = "text"
    max_tokens: int | None = Field(16384, ge=2, description="score the first N tokens (null: all)")
    seq_len: int = Field(512, ge=2, le=131_072)
    stride: int | None = Field(None, ge=1, description="window start spacing (default: seq_len)")
    batch_size: int = Field(4, ge=1, le=4096)
    add_bos: bool | None = Field(None, description="prepend the tokenizer's BOS to every window (context only); "
                                                   "default: when the tokenizer adds BOS itself")

    @model_validator(mode="after")
    def _check(self) -> PerplexityConfig:
        if self.stride is not None and self.stride > self.seq_len:
            raise ValueError(f"stride ({self.stride}) must be <= seq_len ({self.seq_len}): lower --stride")
        return self

    def resolved_config(self) -> str | None:
        if self.config is None and self.dataset.rstrip("/").endswith(WIKITEXT):
            return "wikitext-2-raw-v1"
        return self.config


def prepare_perplexity(cfg: PerplexityConfig) -> list[str]:
    """The split's texts (column and emptiness checked); no model needed."""

    return load_texts(cfg.dataset, cfg.resolved_config(), cfg.split, cfg.text_column, cfg.revision)


def check_perplexity_model(cfg: PerplexityConfig, task: str) -> None:

    if task != "causal-lm":
        raise UnsupportedError(f"perplexity needs a causal LM; this model is {task!r}: use --metric accuracy "
                               "(classifiers) or --metric efficiency")


def tokenize_prefix(tokenizer: Any, texts: list[str], max_tokens: int | None) -> torch.Tensor:
    """Same tokens as ``tokenize_corpus(tokenizer, texts, max_tokens)``, tokenizing only as many
    texts as needed (the prefix grows until it has a margin of tokens beyond ``max_tokens``)."""
    if not max_tokens:
        return tokenize_corpus(tokenizer, texts)
    chars = max(4 * max_tokens, 4096)
    while True:
        used, total = [], 0
        for t in texts:
            used.append(t)
            total += len(t) + 2
            if total >= chars:
                break
        ids = tokenize_corpus(tokenizer, used)
        if len(used) == len(texts) or ids.numel() >= max_tokens + 64:
            return ids[:max_tokens]
        chars *= 2


def measure_perplexity(bundle: Any, cfg: PerplexityConfig, texts: list[str], *, model_label: str,
                       progress: bool = False) -> list[dict[str, Any]]:

    check_perplexity_model(cfg, bundle.task)
    tok = bundle.tokenizer
    if tok is None:
        raise UsageError("perplexity needs the model's tokenizer, and this model has none")
    start = time.perf_counter()
    ids = tokenize_prefix(tok, texts, cfg.max_tokens)
    if ids.numel() < 2:
        raise UsageError(f"dataset {cfg.dataset} ({cfg.split}) has fewer than 2 tokens: choose another split")
    bos = bos_to_add(tok, cfg.add_bos)
    res = perplexity_of_ids(bundle.model, ids, seq_len=cfg.seq_len, stride=cfg.stride,
                            batch_size=cfg.batch_size, bos_token_id=bos, progress=progress)
    settings = {"text_column": cfg.text_column, "max_tokens": cfg.max_tokens, "corpus_tokens": int(ids.numel()),
                "seq_len": cfg.seq_len, "stride": cfg.stride or cfg.seq_len, "add_bos": bos is not None,
                "batch_size": cfg.batch_size, "join": "\\n\\n", "special_tokens": False}

    details = {"nll": res["nll"], "scored_tokens": res["tokens"], "windows": res["windows"],
               "model_bytes": memory_bytes(bundle.model)}
    return [make_result("perplexity", "perplexity", res["perplexity"], model=model_label, higher_is_better=False,
                        dataset=cfg.dataset, config=cfg.resolved_config(), split=cfg.split, settings=settings,
                        details=details, seconds=time.perf_counter() - start)]


def _check(cfg: PerplexityConfig, prepared: Any, model_config: Any, task: str) -> None:
    check_perplexity_model(cfg, task)


def _measure(bundle: Any, cfg: PerplexityConfig, texts: list[str], *, model_label: str, folder: Any = None,
             work_dir: Any = None, progress: bool = False) -> list[dict[str, Any]]:
    return measure_perplexity(bundle, cfg, texts, model_label=model_label, progress=progress)


register(PerplexityConfig, spec=MethodSpec(prepare_perplexity, _check, _measure))(apply_stage)
