"""Perplexity of a causal LM on a text corpus (fixed-length windows with a stride).

Methodology (the one in the transformers docs, "Perplexity of fixed-length models"):
the texts are joined with ``"\\n\\n"`` and tokenized once, without special tokens;
the first ``max_tokens`` tokens are kept; windows of ``seq_len`` tokens start every
``stride`` tokens, and each window scores only the tokens not already scored by the
previous one (all of them when ``stride == seq_len``). When the tokenizer has a BOS
token and ``add_bos`` is true, BOS is prepended to every window as context (it is
never scored). Perplexity = exp(total NLL / scored tokens)::

    ppl = perplexity_of_ids(model, ids, seq_len=512)
"""

from __future__ import annotations

import math
from typing import Any

import torch


def tokenize_corpus(tokenizer: Any, texts: list[str], max_tokens: int | None = None) -> torch.Tensor:
    """1-D LongTensor of the joined texts' tokens (no special tokens), cut to ``max_tokens``."""
    ids = tokenizer("\n\n".join(texts), return_tensors="pt", add_special_tokens=False).input_ids[0]
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
