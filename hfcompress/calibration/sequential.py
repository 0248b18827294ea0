"""The sequential (block-by-block) calibration engine every calibrated method hooks into.

:class:`Sequential` runs the model's own forward once over the calibration windows with every
block intercepted (:mod:`.capture`). For each block, the targets inside it are grouped by
shared input (q/k/v read the same tensor; a cross-attention's k/v read the encoder states —
found by a one-sample probe of the block, not from names), and the method's hooks see each
group's input once it is computed:

* ``on_group(names, x)`` — all samples in one forward (``batch_size >= samples``): ``x`` is
  ``[tokens, in_features]``; the method updates the weights there, so the rest of the block
  (and every later block) sees the already-calibrated layers (execution order).
* lock-step chunks (default: chunks of :data:`AUTO_CHUNK_TOKENS` tokens): each chunk's forward
  is a greenlet paused at every group; ``on_chunk(names, x)`` accumulates statistics, and once
  every chunk that reaches the group is there, ``on_group(names, None)`` updates the weights and
  the chunks go on. Same semantics as one batch; the transient activations of one chunk at a time.
* ``in_order=False`` (low-memory / GPTQ-style two passes): statistics of every group from the
  block's unchanged weights (pass 1, chunk by chunk), then every group updated, then the outputs
  (pass 2); only one chunk's activations are alive.

A group that no token reached (an expert no token was routed to, a layer the forward skipped)
gets ``on_group(names, None)`` with nothing accumulated: the method decides its fallback.
``after_block(i, hs_in, hs_out)`` sees each block's input and output hidden states (``i``
counts blocks over all stacks in execution order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError
from ..loading.offload import embeddings_from_disk, onloaded
from .blocks import BlockStack, block_index, find_block_stacks
from .capture import first_tensor, hidden_of, merge_outputs, model_inputs, run_through_blocks, slice_call
from .data import bound_heap, frozen_gc, release_free_memory
from .targets import Target, add_input_hook

#: default chunk of the lock-step calibration forward (``batch_size=None``), in tokens: large
#: enough for efficient matmuls, small enough that a chunk's transient activations stay small
AUTO_CHUNK_TOKENS = 2048

Group = list[str]
_DONE = object()


def _no_autocast(x: torch.Tensor):
    return torch.autocast(x.device.type, enabled=False)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _storages(value: Any, out: set[int]) -> None:
    if isinstance(value, torch.Tensor):
        out.add(value.untyped_storage().data_ptr())
    elif isinstance(value, (tuple, list)):
        for v in value:
            _storages(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _storages(v, out)


@dataclass
class Sequential:
    """Block-by-block calibration of ``linears`` (targets by name) in ONE forward of the model.

    ``info`` is accepted for compatibility and ignored: the blocks come from
    :func:`~hfcompress.calibration.blocks.find_block_stacks` (or ``stacks``).
    """

    model: nn.Module
    info: Any = None
    linears: dict[str, Target] = field(default_factory=dict)
    on_group: Callable[[Group, torch.Tensor | None], None] = lambda names, x: None
    on_chunk: Callable[[Group, torch.Tensor], None] | None = None
    batch_size: int | None = None
    after_block: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
    progress: bool = False
    #: autocast dtype of the block forwards (None: the model's dtype)
    compute_dtype: torch.dtype | None = None
    #: False: two passes per block (statistics from the block's unchanged weights, then the outputs)
    in_order: bool = True
    stacks: list[BlockStack] | None = None
    #: filled by run(): group lists per block, names of the targets no token reached
    stats: dict[str, Any] = field(default_factory=dict)

    def _autocast(self, hs: torch.Tensor):
        on = self.compute_dtype is not None and self.compute_dtype != hs.dtype
        return torch.autocast(hs.device.type, dtype=self.compute_dtype, enabled=on)

    @torch.no_grad()
    def run(self, batch: torch.Tensor | dict[str, torch.Tensor]) -> None:
        """Calibrate on ``batch``: token ids ``[samples, seq_len]`` or a dict of batched model inputs
        (pixel values, audio features + decoder ids: :mod:`hfcompress.calibration.modality`)."""
        bound_heap()
        release_free_memory()
        stacks = self.stacks or find_block_stacks(self.model)
        self._stacks = stacks
        self._by_block: dict[tuple[int, int], list[str]] = {}
        for name in self.linears:
            where = block_index(name, stacks)
            if where is not None:
                self._by_block.setdefault(where, []).append(name)
        self._probed: dict[tuple, list[list[str]]] = {}
        self.stats.setdefault("no_tokens", [])
        inputs = model_inputs(self.model, batch)
        self._bar = None
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=sum(len(s) for s in stacks), desc="calibrating blocks", unit="block")
        try:
            # offloaded embeddings: only the rows the windows use; per-block collections skip old objects
            with embeddings_from_disk(self.model), frozen_gc():
                run_through_blocks(self.model, stacks, inputs, self._block)
        finally:
            if self._bar is not None:
                self._bar.close()
        outside = [n for n in self.linears if block_index(n, stacks) is None]
        if outside:  # targets outside the blocks (e.g. an LM head matched by a glob): no inputs seen
            for name in outside:
                self._finish_group([name])

    # -- one block ---------------------------------------------------------------------------
    def _block(self, g: int, stack: BlockStack, i: int, block: nn.Module, fwd: Callable[..., Any],
               args: tuple, kwargs: dict) -> Any:
        # An offloaded block (--max-memory) is in memory only while it is calibrated; the weights
        # changed in it go to the model's offload store, which the save reads (loading/offload.py).
        with onloaded(block, root=self.model):
            return self._calibrate_block(g, stack, i, block, fwd, args, kwargs)

    def _calibrate_block(self, g: int, stack: BlockStack, i: int, block: nn.Module, fwd: Callable[..., Any],
                         args: tuple, kwargs: dict) -> Any:
        hs = hidden_of(args, kwargs)
        si = next(k for k, s in enumerate(self._stacks) if s is stack)
        names = self._by_block.get((si, i), [])
        groups = self._groups(si, stack, i, block, fwd, args, kwargs, names) if names else []
        self.stats.setdefault("groups", {})[stack.block_name(i)] = groups
        n = hs.shape[0]
        # default chunk: AUTO_CHUNK_TOKENS of this block's positions (patches, audio frames, tokens)
        auto = max(1, AUTO_CHUNK_TOKENS // max(1, hs.shape[1] if hs.dim() > 2 else 1))
        bs = min(self.batch_size or auto, n)
        chunks = [(a, min(a + bs, n)) for a in range(0, n, bs)]
        others: set[int] = set()
        _storages(args[1:] if args and args[0] is hs else args, others)
        _storages({k: v for k, v in kwargs.items() if v is not hs}, others)
        inplace = self.after_block is None and hs.untyped_storage().data_ptr() not in others
        sink = _Sink(hs, n, inplace)
        if not groups:
            self._plain(fwd, args, kwargs, chunks, n, sink, hs)
        elif not self.in_order:
            self._two_pass(fwd, args, kwargs, chunks, n, sink, groups, hs)
        elif len(chunks) == 1:
            self._one_pass(fwd, args, kwargs, sink, groups, hs)
        else:
            self._lockstep(fwd, args, kwargs, chunks, n, sink, groups, hs)
        out = sink.result()
        if self.after_block is not None:
            self.after_block(g, hs, first_tensor(out))
        if self._bar is not None:
            self._bar.update(1)
        release_free_memory()
        return out

    def _groups(self, si: int, stack: BlockStack, i: int, block: nn.Module, fwd: Callable[..., Any],
                args: tuple, kwargs: dict, names: list[str]) -> list[Group]:
        """Targets of one block grouped by shared input, in execution order (probed on one sample)."""
        prefix = stack.block_name(i) + "."
        rel = tuple(n[len(prefix):] for n in names)
        key = (si, type(block), rel)
        if key not in self._probed:
            seen: list[tuple[str, torch.Tensor]] = []
            handles = [add_input_hook(self.linears[n], lambda x, r=r: seen.append((r, x))) for n, r in zip(names, rel, strict=True)]
            hs = hidden_of(args, kwargs)
            try:
                a2, k2 = slice_call(args, kwargs, hs.shape[0], 0, 1)
                with self._autocast(hs):
                    fwd(*a2, **k2)
            finally:
                for h in handles:
                    h.remove()
            groups: list[list[str]] = []
            inputs: list[torch.Tensor] = []
            hit: set[str] = set()
            for r, x in seen:
                if r in hit:
                    raise UnsupportedError(f"{prefix}{r} runs more than once per block forward: calibration needs "
                                           "each targeted layer called once (exclude it)")
                hit.add(r)
                j = next((k for k, y in enumerate(inputs) if y is x), None)
                if j is None:
                    groups.append([r])
                    inputs.append(x)
                else:
                    groups[j].append(r)
            del seen, inputs
            # targets the probe did not reach: own groups, after the nearest earlier-defined one
            for pos, r in enumerate(rel):
                if r in hit:
                    continue
                before = [q for q in rel[:pos] if q in hit or any(q in gr for gr in groups)]
                at = 0
                if before:
                    at = next(k for k, gr in enumerate(groups) if before[-1] in gr) + 1
                groups.insert(at, [r])
            self._probed[key] = groups
        return [[prefix + r for r in gr] for gr in self._probed[key]]

    def _finish_group(self, group: Group) -> None:
        with torch.autocast("cpu", enabled=False):
            self.on_group(group, None)

    # -- schedules ---------------------------------------------------------------------------
    def _plain(self, fwd, args, kwargs, chunks, n, sink, hs) -> None:
        with self._autocast(hs):
            for a, b in chunks:
                a2, k2 = slice_call(args, kwargs, n, a, b)
                sink.put(a, b, fwd(*a2, **k2))

    def _one_pass(self, fwd, args, kwargs, sink, groups, hs) -> None:
        done: set[int] = set()
        fed: set[int] = set()
        handles = []
        for gi, group in enumerate(groups):
            def hook(x, gi=gi, group=group):
                if gi in done:
                    return
                done.add(gi)
                if x.numel() == 0:
                    return
                fed.add(gi)
                with _no_autocast(x):
                    self.on_group(group, _flat(x))
            handles.append(add_input_hook(self.linears[group[0]], hook))
        try:
            with self._autocast(hs):
                sink.put(0, hs.shape[0], fwd(*args, **kwargs))
        finally:
            for h in handles:
                h.remove()
        for gi, group in enumerate(groups):
            if gi not in fed:
                self._no_data(group)

    def _no_data(self, group: Group) -> None:
        self.stats["no_tokens"].extend(group)
        self._finish_group(group)

    def _group_hooks(self, groups: list[Group], tokens: list[int], after: Any = None) -> list[Any]:
        """Input hooks on each group's first layer: count tokens, feed ``on_chunk``, then ``after(gi)``."""
        handles = []
        for gi, group in enumerate(groups):
            def hook(x, gi=gi, group=group):
                x = _flat(x)
                tokens[gi] += x.shape[0]
                with _no_autocast(x):
                    self.on_chunk(group, x)
                if after is not None:
                    after(gi)
            handles.append(add_input_hook(self.linears[group[0]], hook))
        return handles

    def _two_pass(self, fwd, args, kwargs, chunks, n, sink, groups, hs) -> None:
        tokens = [0] * len(groups)
        handles = self._group_hooks(groups, tokens)
        try:
            with self._autocast(hs):
                for a, b in chunks:
                    a2, k2 = slice_call(args, kwargs, n, a, b)
                    fwd(*a2, **k2)
        finally:
            for h in handles:
                h.remove()
        for gi, group in enumerate(groups):
            if tokens[gi]:
                self._finish_group(group)
            else:
                self._no_data(group)
        self._plain(fwd, args, kwargs, chunks, n, sink, hs)

    def _lockstep(self, fwd, args, kwargs, chunks, n, sink, groups, hs) -> None:
        """Chunks as greenlets (one OS thread: one malloc arena, shared autocast / grad state);
        each pauses at every group it reaches; the lowest group any chunk waits at is updated
        once every chunk waiting there has contributed, then those chunks go on."""
        from greenlet import getcurrent, greenlet

        main = getcurrent()
        tokens = [0] * len(groups)
        handles = self._group_hooks(groups, tokens, after=main.switch)  # pause until the group is updated

        def work(a: int, b: int):
            a2, k2 = slice_call(args, kwargs, n, a, b)
            sink.put(a, b, fwd(*a2, **k2))
            return _DONE

        lets = [greenlet(lambda a=a, b=b: work(a, b)) for a, b in chunks]
        processed: set[int] = set()
        try:
            with self._autocast(hs):
                at = [g.switch() for g in lets]
                last = -1
                while True:
                    waiting = [x for x in at if x is not _DONE]
                    if not waiting:
                        break
                    gi = min(waiting)
                    if gi <= last:
                        raise UnsupportedError(f"the calibration forward reached {groups[gi][0]} out of order: "
                                               "calibration needs the block's layers called in one fixed order")
                    if tokens[gi]:
                        self._finish_group(groups[gi])
                    else:
                        self._no_data(groups[gi])
                    processed.add(gi)
                    last = gi
                    at = [lets[k].switch() if at[k] == gi else at[k] for k in range(len(lets))]
        finally:
            for h in handles:
                h.remove()
            for g in lets:
                if not g.dead:
                    g.throw()  # GreenletExit: unwind the paused forward
        for gi, group in enumerate(groups):
            if gi not in processed:
                self._no_data(group)


class _Sink:
    """Collects the chunks' outputs: hidden states into one buffer (the input's, when in place)."""

    def __init__(self, hs: torch.Tensor, n: int, inplace: bool):
        self.hs, self.n, self.inplace = hs, n, inplace
        self.buf: torch.Tensor | None = None
        self.parts: dict[int, Any] = {}
        self.sizes: dict[int, int] = {}

    def put(self, a: int, b: int, out: Any) -> None:
        o = first_tensor(out)
        if self.buf is None:
            same = o.shape[1:] == self.hs.shape[1:]
            if self.inplace and same:
                self.buf = self.hs
            else:
                self.buf = torch.empty((self.n, *o.shape[1:]), dtype=self.hs.dtype if same else o.dtype,
                                       device=o.device)
        self.buf[a:b] = o
        if isinstance(out, tuple | list):
            out = type(out)([None, *out[1:]]) if isinstance(out, list) else (None, *out[1:])
        else:
            out = None
        self.parts[a] = out
        self.sizes[a] = b - a

    def result(self) -> Any:
        keys = sorted(self.parts)
        parts = [self.parts[k] for k in keys]
        if parts[0] is None:
            return self.buf
        return merge_outputs(parts, [self.sizes[k] for k in keys], self.buf)


class DenseInputs:
    """``dense_inputs``: each group's new weights are held back until its block's outputs are computed,
    so every layer (and every later block) is calibrated on the dense model's inputs.

    Wraps a method's ``on_group``; pass :meth:`after_block` to :class:`Sequential` and call
    :meth:`flush` after the run (targets outside the blocks).
    """

    def __init__(self, linears: dict[str, Any], on_group: Any):
        self.linears, self.inner, self.pending = linears, on_group, {}

    @torch.no_grad()
    def on_group(self, names: list[str], x: torch.Tensor | None) -> None:
        dense = {n: self.linears[n].weight.detach().clone() for n in names}
        self.inner(names, x)
        for n in names:
            w = self.linears[n].weight
            self.pending[n] = w.detach().clone()
            w.copy_(dense[n])

    @torch.no_grad()
    def flush(self, *_: Any) -> None:
        for n, w in self.pending.items():
            self.linears[n].weight.copy_(w)
        self.pending.clear()

    after_block = flush
