"""Fitness: KL divergence of a candidate's next-token distribution to the dense model's.

The dense model's log-probabilities on the fitness windows are computed once (kept in float16);
a candidate is scored on the first ``tokens`` of them (whole windows): the mean over positions
of ``KL(p_dense || p_candidate)``. Lower is better. Block dropping runs the model with the
chosen blocks passed through (their input returned as their output).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..calibration.capture import hidden_of

#: windows per forward of the fitness evaluation
FITNESS_BATCH = 2


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    return out.logits.float()


class Fitness:
    """KL to the dense model on ``windows`` ([n, seq_len] token ids)."""

    def __init__(self, model: nn.Module, windows: torch.Tensor):
        self.model, self.windows = model, windows
        self.seq_len = int(windows.shape[1])
        with torch.no_grad():
            self.reference = torch.cat([torch.log_softmax(_logits(model, windows[a:a + FITNESS_BATCH]), -1).half()
                                        for a in range(0, len(windows), FITNESS_BATCH)])
        self.tokens_scored = 0

    def windows_for(self, tokens: int) -> int:
        return min(len(self.windows), max(1, math.ceil(tokens / self.seq_len)))

    def tokens_for(self, tokens: int) -> int:
        return self.windows_for(tokens) * self.seq_len

    @torch.no_grad()
    def __call__(self, tokens: int, model: nn.Module | None = None) -> float:
        """Mean per-token KL(dense || ``model``, default the current model) on the first ``tokens``
        (whole windows)."""
        model = self.model if model is None else model
        n = self.windows_for(tokens)
        total, count = 0.0, 0
        for a in range(0, n, FITNESS_BATCH):
            b = min(a + FITNESS_BATCH, n)
            logq = torch.log_softmax(_logits(model, self.windows[a:b]), -1)
            logp = self.reference[a:b].float()
            kl = (logp.exp() * (logp - logq)).sum(-1)
            total += float(kl.sum())
            count += kl.numel()
        self.tokens_scored += count
        return total / max(count, 1)


@contextmanager
def skipped_blocks(blocks: list[nn.Module]) -> Iterator[None]:
    """Run the model with ``blocks`` passed through: each returns its input hidden states (in the
    form the block returns its output: a tensor, or a tuple whose first item is the states)."""
    saved = []
    for block in blocks:
        original = block.forward

        def passthrough(*args: Any, _original=original, **kwargs: Any) -> Any:
            hs = hidden_of(args, kwargs)
            kind = getattr(passthrough, "_kind", None)
            if kind is None:  # learn the block's output form once
                out = _original(*args, **kwargs)
                passthrough._kind = "tensor" if isinstance(out, torch.Tensor) else ("tuple", len(out))
                kind = passthrough._kind
                if kind == "tensor":
                    return hs
                return (hs, *out[1:])
            return hs if kind == "tensor" else (hs,) + (None,) * (kind[1] - 1)

        block.forward = passthrough
        saved.append((block, original))
    try:
        yield
    finally:
        for block, original in saved:
            block.forward = original
