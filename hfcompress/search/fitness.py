"""Fitness: KL divergence of a candidate's next-token distribution to the dense model's.

The dense model's log-probabilities on the fitness windows are computed once (kept in float16);
a candidate is scored on the first ``tokens`` of them (whole windows): the mean over positions
of ``KL(p_dense || p_candidate)``. Lower is better. Block dropping runs the model with the
chosen blocks passed through (their input returned as their output).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn

from ..calibration.capture import hidden_of, slice_call

#: windows per forward of the fitness evaluation
FITNESS_BATCH = 2
#: at most this many bytes of saved block inputs (all kept profiles together); beyond it every
#: candidate runs whole
PREFIX_LIMIT_BYTES = 2 << 30


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
        return self._kl(self.windows_for(tokens), lambda a, b: _logits(model, self.windows[a:b]))

    @torch.no_grad()
    def from_block(self, tokens: int, blocks: list[nn.Module], start: int, inputs: list[torch.Tensor] | None,
                   capture: bool) -> tuple[float, list[torch.Tensor] | None]:
        """The current model's KL, its blocks before ``start`` not run: block ``start`` takes
        ``inputs[start]`` (block inputs saved from a model whose blocks before ``start`` are the
        same). With ``capture``, also every block's input on these windows."""
        n = self.windows_for(tokens)
        parts: list[list[torch.Tensor]] = [[] for _ in blocks]
        hooks = []

        window = [slice(0, 0)]  # the windows of the forward running now

        def replace(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            # one sample-slice of size 1 is no slicing: slice_call only swaps the hidden states in
            return slice_call(args, kwargs, 1, 0, 1, hidden=inputs[start][window[0]])

        def keep(module: nn.Module, args: tuple, kwargs: dict, _i: int = 0) -> None:
            parts[_i].append(hidden_of(args, kwargs).detach())

        try:
            if start:
                hooks.append(blocks[start].register_forward_pre_hook(replace, with_kwargs=True))
            if capture:
                hooks += [blocks[i].register_forward_pre_hook(partial(keep, _i=i), with_kwargs=True)
                          for i in range(start, len(blocks))]

            def run(a: int, b: int) -> torch.Tensor:
                window[0] = slice(a, b)
                with skipped_blocks(blocks[:start]):
                    return _logits(self.model, self.windows[a:b])

            kl = self._kl(n, run)
        finally:
            for h in hooks:
                h.remove()
        if not capture:
            return kl, None
        saved = [inputs[i][:n] for i in range(start)] if start else []
        return kl, saved + [torch.cat(p) for p in parts[start:]]

    def _kl(self, n: int, logits_of: Callable[[int, int], torch.Tensor]) -> float:
        total, count = 0.0, 0
        for a in range(0, n, FITNESS_BATCH):
            b = min(a + FITNESS_BATCH, n)
            logq = torch.log_softmax(logits_of(a, b), -1)
            logp = self.reference[a:b].float()
            kl = (logp.exp() * (logp - logq)).sum(-1)
            total += float(kl.sum())
            count += kl.numel()
        self.tokens_scored += count
        return total / max(count, 1)


class PrefixScorer:
    """Scores profiles from their first changed block: the block inputs of the last few profiles
    scored on the most tokens are kept, and a candidate whose blocks before ``k`` are those of a kept
    profile runs from block ``k`` (a mutation changes a few layers, so on average a good part of the
    blocks is not run again). The KL is a full forward's: bit for bit on the capture tokens (the kept
    inputs come from forwards of the same windows, ``FITNESS_BATCH`` per call, with the same weights),
    to float rounding on fewer windows (a forward of one window rounds a little differently).

    ::

        scorer = PrefixScorer(fitness, blocks, unit_block=[0, 0, 1, 1], install=install, capture_tokens=2048)
        kl = scorer(profile, 512)      # installs the profile, runs from its first block that differs
    """

    def __init__(self, fitness: Fitness, blocks: list[nn.Module], unit_block: list[int],
                 install: Callable[[tuple[int, ...]], None], capture_tokens: int, keep: int = 3,
                 limit_bytes: int = PREFIX_LIMIT_BYTES):
        self.fitness, self.blocks, self.unit_block, self.install = fitness, blocks, unit_block, install
        self.capture_tokens, self.keep, self.limit_bytes = capture_tokens, keep, limit_bytes
        self.saved: OrderedDict[tuple[int, ...], list[torch.Tensor]] = OrderedDict()
        self.enabled = True
        self.blocks_run = 0
        self.blocks_total = 0

    def _base(self, profile: tuple[int, ...]) -> tuple[tuple[int, ...] | None, int]:
        """The kept profile sharing the most leading blocks with ``profile``, and that many blocks."""
        best, best_start = None, 0
        for other in self.saved:
            start = min((b for b, x, y in zip(self.unit_block, profile, other, strict=True) if x != y),
                        default=len(self.blocks))
            if start > best_start:
                best, best_start = other, start
        return best, min(best_start, len(self.blocks) - 1)

    def __call__(self, profile: tuple[int, ...], tokens: int) -> float:
        self.install(profile)
        capture = self.enabled and tokens == self.capture_tokens
        base, start = self._base(profile) if self.enabled else (None, 0)
        inputs = None
        if base is not None and start:
            self.saved.move_to_end(base)
            inputs = self.saved[base]
        else:
            start = 0
        kl, captured = self.fitness.from_block(tokens, self.blocks, start, inputs, capture)
        self.blocks_run += len(self.blocks) - start
        self.blocks_total += len(self.blocks)
        if captured is not None:
            if sum(t.numel() * t.element_size() for t in captured) * self.keep > self.limit_bytes:
                self.enabled = False  # too large to keep: every candidate runs whole
                self.saved.clear()
            else:
                self.saved[profile] = captured
                while len(self.saved) > self.keep:
                    self.saved.popitem(last=False)
        return kl

    def prime(self, profile: tuple[int, ...]) -> None:
        """Make sure ``profile`` (the parent of the next generation) is kept (after a resume it is not)."""
        if profile in self.saved:
            self.saved.move_to_end(profile)
        elif self.enabled:
            self(profile, self.capture_tokens)


#: the output form of each block met by ``skipped_blocks`` ("tensor" or ("tuple", length)), learned once
_OUTPUT_FORM: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


@contextmanager
def skipped_blocks(blocks: list[nn.Module]) -> Iterator[None]:
    """Run the model with ``blocks`` passed through: each returns its input hidden states (in the
    form the block returns its output: a tensor, or a tuple whose first item is the states; learned
    from the block's first real call, once per block)."""
    saved = []
    for block in blocks:
        original = block.forward

        def passthrough(*args: Any, _original=original, _block=block, **kwargs: Any) -> Any:
            hs = hidden_of(args, kwargs)
            kind = _OUTPUT_FORM.get(_block)
            if kind is None:
                out = _original(*args, **kwargs)
                kind = _OUTPUT_FORM[_block] = "tensor" if isinstance(out, torch.Tensor) else ("tuple", len(out))
            return hs if kind == "tensor" else (hs,) + (None,) * (kind[1] - 1)

        block.forward = passthrough
        saved.append((block, original))
    try:
        yield
    finally:
        for block, original in saved:
            block.forward = original
