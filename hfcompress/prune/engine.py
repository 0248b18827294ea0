"""Shared machinery of the pruning methods.

* :func:`arch_info` finds the transformer blocks (Llama-family decoders, BERT-style encoders)
  and raises :class:`~hfcompress.errors.UnsupportedError` for anything else, before any work.
* :func:`target_linears` selects the ``nn.Linear`` modules to prune (globs, default: every
  Linear inside the blocks).
* :func:`capture_block_inputs` + :class:`Sequential` run calibration block by block: the
  inputs of block 0 are caught with a pre-hook (hidden states plus the attention mask /
  position embeddings keyword arguments), then for each block the method's hooks see the
  inputs of its Linear layers, prune them, and the block's outputs (computed by the pruned
  block) become the next block's inputs. Peak memory = model + one block's activations.
* mask helpers: per-row / per-layer exact top-k and N:M groups.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError, UsageError

#: Llama-family decoders: q/k/v/o_proj attention, gate/up/down_proj MLP, RMSNorm, RoPE.
DECODER_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
#: BERT-style encoders: encoder.layer[i].{attention.self.{query,key,value}, ...}.
ENCODER_TYPES = {"bert", "roberta"}

#: Sibling Linear modules that read the same input (pruned together, one set of statistics).
SHARED_INPUT = ({"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"}, {"query", "key", "value"})


@dataclass
class ArchInfo:
    kind: str  # "decoder" | "encoder"
    model_type: str
    layers: nn.ModuleList
    layers_name: str  # e.g. "model.layers"
    base: nn.Module  # the module whose forward runs embeddings + blocks

    def layer_name(self, i: int) -> str:
        return f"{self.layers_name}.{i}"


def arch_info(model: nn.Module) -> ArchInfo:
    """Where the blocks are, or a one-line UnsupportedError naming the architecture."""
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None) or type(model).__name__
    if model_type in DECODER_TYPES:
        kind = "decoder"
    elif model_type in ENCODER_TYPES:
        kind = "encoder"
    else:
        supported = ", ".join(sorted(DECODER_TYPES | ENCODER_TYPES))
        raise UnsupportedError(f"pruning is not supported for {model_type} (supported architectures: "
                               f"{supported})")
    n_layers = getattr(cfg, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and \
                (name.endswith("layers") or name.endswith("encoder.layer")):
            suffix = "encoder.layer" if kind == "encoder" else "layers"
            base_name = name[: -len(suffix)].rstrip(".")
            base = model.get_submodule(base_name) if base_name else model
            return ArchInfo(kind, model_type, module, name, base)
    raise UnsupportedError(f"pruning is not supported for this {model_type} model: its transformer blocks "
                           "were not found")


def target_linears(model: nn.Module, info: ArchInfo, targets: list[str] | None,
                   exclude: list[str] | None = None) -> dict[str, nn.Linear]:
    """``{full name: Linear}`` to prune: inside the blocks by default, else matching ``targets``."""
    out: dict[str, nn.Linear] = {}
    prefix = info.layers_name + "."
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if targets:
            if not any(fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, f"*{pat}") for pat in targets):
                continue
        elif not name.startswith(prefix):
            continue
        if exclude and any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, f"*{p}") for p in exclude):
            continue
        out[name] = module
    if not out:
        raise UsageError(f"no Linear module matches targets={targets} exclude={exclude}: "
                         f"module names look like {prefix}0.mlp.up_proj")
    return out


def sparsity_for(name: str, default: float, overrides: dict[str, float]) -> float:
    for pat, s in overrides.items():
        if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, f"*{pat}"):
            return float(s)
    return default


def block_index(name: str, info: ArchInfo) -> int | None:
    prefix = info.layers_name + "."
    if not name.startswith(prefix):
        return None
    return int(name[len(prefix):].split(".", 1)[0])


def check_widths(linears: dict[str, nn.Linear], nm: tuple[int, int] | None) -> None:
    if nm is None:
        return
    for name, lin in linears.items():
        if lin.in_features % nm[1]:
            raise UsageError(f"pattern {nm[0]}:{nm[1]}: M={nm[1]} does not divide the input width "
                             f"{lin.in_features} of {name}: choose another M or exclude that module")


# -- calibration data ---------------------------------------------------------------------

_TEXTS: dict[tuple, list[str]] = {}


def calibration_ids(bundle: Any, cal: Any) -> torch.Tensor:
    """``[samples, seq_len]`` windows; checks the model's position limit first.

    The dataset's texts are cached per process (keyed by dataset/config/split/column/revision).
    """
    from ..data import calibration_ids as _ids
    from ..data import load_texts

    if bundle.tokenizer is None:
        raise UsageError("calibration needs a tokenizer, and this model has none: save one with the model")
    limit = getattr(bundle.model.config, "max_position_embeddings", None)
    if limit and cal.seq_len > limit:
        raise UsageError(f"calibration seq_len {cal.seq_len} exceeds the model's max_position_embeddings "
                         f"{limit}: lower --seq-len")
    key = (cal.dataset, cal.config, cal.split, cal.text_column, cal.revision)
    if key not in _TEXTS:
        _TEXTS.clear()
        _TEXTS[key] = load_texts(cal.dataset, cal.config, cal.split, cal.text_column, cal.revision)
    return _ids(bundle.tokenizer, cal, texts=_TEXTS[key])


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Tokenizing the calibration text and each block's activations leave freed-but-kept memory
    in glibc's heaps (tens of MB, mostly the Rust tokenizer's buffers); trimming it keeps the
    peak RSS of a pruning run close to what is actually alive.
    """
    import gc

    gc.collect()
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            lib = ctypes.CDLL(name) if name else None
            if lib is not None and hasattr(lib, "malloc_trim"):
                _LIBC = lib
        except OSError:
            pass
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


class _Stop(Exception):
    pass


@torch.no_grad()
def capture_block_inputs(model: nn.Module, info: ArchInfo, ids: torch.Tensor
                         ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Hidden states entering block 0 for all samples, and the keyword arguments the blocks get."""
    store: dict[str, Any] = {}

    def hook(module, args, kwargs):
        hs = args[0] if args else kwargs.pop("hidden_states")
        store["hs"] = hs
        store["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = info.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
        if info.kind == "decoder":
            kwargs["use_cache"] = False
        info.base(**kwargs)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "hs" not in store:
        raise UnsupportedError(f"could not capture the inputs of the first block of this {info.model_type} model")
    kw = store["kwargs"]
    kw.pop("cache", None)
    kw.pop("past_key_values", None)
    if info.kind == "decoder":
        kw["use_cache"] = False
    return store["hs"], kw


def _slice_kwargs(kwargs: dict[str, Any], n: int, a: int, b: int) -> dict[str, Any]:
    def cut(v):
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n and n > 1:
            return v[a:b]
        if isinstance(v, tuple):
            return tuple(cut(x) for x in v)
        return v

    return {k: cut(v) for k, v in kwargs.items()}


def input_groups(block: nn.Module, linears: dict[str, nn.Linear], block_prefix: str) -> list[list[str]]:
    """Target Linear names of one block grouped by shared input (q/k/v together, gate/up together)."""
    names = [n for n in linears if n.startswith(block_prefix + ".")]
    groups: dict[str, list[str]] = {}
    for n in names:
        parent, _, leaf = n.rpartition(".")
        key = n
        for sib in SHARED_INPUT:
            if leaf in sib:
                key = parent + "::" + "|".join(sorted(sib))
        groups.setdefault(key, []).append(n)
    return list(groups.values())


#: default chunk of the lock-step calibration forward (``batch_size=None``), in tokens: large
#: enough for efficient matmuls, small enough that a chunk's transient activations stay small
#: (measured on SmolLM2, 32 x 512: faster than one 16k-token batch, and a lower peak RSS)
AUTO_CHUNK_TOKENS = 2048


def _no_autocast(x: torch.Tensor):
    return torch.autocast(x.device.type, enabled=False)


@dataclass
class Sequential:
    """Block-by-block calibration, pruning each block in execution order in ONE forward.

    For each block, ``on_group(names, x)`` is called once per group of target Linears sharing an
    input, when that input has been computed — so the block is pruned in execution order
    (q/k/v, then o, then gate/up, then down, each seeing inputs from the already-pruned part),
    and the same forward produces the block's output for the next block.

    With ``batch_size >= samples``: all samples in one forward; ``on_group`` gets the input ``x``
    (``[tokens, in_features]``). Otherwise (default ``None``: chunks of :data:`AUTO_CHUNK_TOKENS`
    tokens) the chunks run **in lock-step**: each chunk's forward is a greenlet (same OS
    thread, run one after the other) that pauses at every group;
    ``on_chunk(names, x)`` accumulates statistics chunk by chunk, and once every chunk has
    reached the group, ``on_group(names, None)`` prunes it and the chunks go on. Same
    semantics and one forward as the single batch, but the transient activations (the MLP's
    intermediates) exist for one chunk at a time: peak memory falls by ~1/chunks of them.
    ``after_block(i, hs_in, hs_out)`` sees each block's input and output hidden states.
    """

    model: nn.Module
    info: ArchInfo
    linears: dict[str, nn.Linear]
    on_group: Callable[[list[str], torch.Tensor | None], None]
    on_chunk: Callable[[list[str], torch.Tensor], None] | None = None
    batch_size: int | None = None
    after_block: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
    progress: bool = False
    #: autocast dtype of the block forwards (None: the model's dtype); see PruneConfig.calibration_dtype
    compute_dtype: torch.dtype | None = None
    #: False: two passes per block — statistics from the block's unpruned weights, then the
    #: outputs (the original Wanda / SparseGPT recipe); only one chunk's activations are alive
    in_order: bool = True
    stats: dict[str, Any] = field(default_factory=dict)

    def _autocast(self, hs: torch.Tensor):
        on = self.compute_dtype is not None and self.compute_dtype != hs.dtype
        return torch.autocast(hs.device.type, dtype=self.compute_dtype, enabled=on)

    @torch.no_grad()
    def run(self, ids: torch.Tensor) -> None:
        release_free_memory()
        hs, kwargs = capture_block_inputs(self.model, self.info, ids)
        n = hs.shape[0]
        if self.batch_size is None:  # auto: chunks of ~AUTO_CHUNK_TOKENS tokens
            self.batch_size = max(1, AUTO_CHUNK_TOKENS // max(1, ids.shape[1]))
        one_pass = self.batch_size >= n
        blocks = range(len(self.info.layers))
        if self.progress:
            from tqdm.auto import tqdm

            blocks = tqdm(blocks, desc="pruning blocks", unit="block")
        for i in blocks:
            block = self.info.layers[i]
            groups = input_groups(block, self.linears, self.info.layer_name(i))
            if not self.in_order:
                out = self._two_pass(block, hs, kwargs, groups)
            elif one_pass:
                out = self._one_pass(block, hs, kwargs, groups)
            else:
                out = self._lockstep(block, hs, kwargs, groups)
            if self.after_block is not None:
                self.after_block(i, hs, out)
            hs = out
            release_free_memory()

    def _one_pass(self, block, hs, kwargs, groups) -> torch.Tensor:
        handles = []
        for group in groups:
            done = {"v": False}

            def hook(module, args, group=group, done=done):
                if not done["v"]:
                    done["v"] = True
                    x = args[0]
                    with _no_autocast(x):  # statistics and weight updates stay float32
                        self.on_group(group, x.reshape(-1, x.shape[-1]))
            handles.append(self.linears[group[0]].register_forward_pre_hook(hook))
        try:
            with self._autocast(hs):
                o = block(hs, **kwargs)
                return o[0] if isinstance(o, tuple) else o
        finally:
            for h in handles:
                h.remove()

    def _two_pass(self, block, hs, kwargs, groups) -> torch.Tensor:
        """Pass 1 accumulates every group's statistics chunk by chunk (outputs dropped), the
        groups are pruned, pass 2 computes the outputs (in place when no after_block hook)."""
        handles = []
        for group in groups:
            def hook(module, args, group=group):
                x = args[0]
                with _no_autocast(x):
                    self.on_chunk(group, x.reshape(-1, x.shape[-1]))
            handles.append(self.linears[group[0]].register_forward_pre_hook(hook))
        n, bs = hs.shape[0], self.batch_size
        try:
            with self._autocast(hs):
                for a in range(0, n, bs):
                    b = min(a + bs, n)
                    block(hs[a:b], **_slice_kwargs(kwargs, n, a, b))
        finally:
            for h in handles:
                h.remove()
        with _no_autocast(hs):
            for group in groups:
                self.on_group(group, None)
        out = torch.empty_like(hs) if self.after_block is not None else hs
        with self._autocast(hs):
            for a in range(0, n, bs):
                b = min(a + bs, n)
                o = block(hs[a:b], **_slice_kwargs(kwargs, n, a, b))
                out[a:b] = o[0] if isinstance(o, tuple) else o
        return out

    def _lockstep(self, block, hs, kwargs, groups) -> torch.Tensor:
        """Chunks as greenlets (one OS thread: one malloc arena, shared autocast / grad state);
        each pauses at every group's pre-hook, the group is pruned once all have arrived."""
        from greenlet import getcurrent, greenlet

        n, bs = hs.shape[0], self.batch_size
        chunks = [(a, min(a + bs, n)) for a in range(0, n, bs)]
        main = getcurrent()
        handles = []
        for gi, group in enumerate(groups):
            def hook(module, args, group=group, gi=gi):
                x = args[0]
                with _no_autocast(x):
                    self.on_chunk(group, x.reshape(-1, x.shape[-1]))
                main.switch(gi)  # pause until every chunk has reached this group and it is pruned
            handles.append(self.linears[group[0]].register_forward_pre_hook(hook))
        # each chunk reads only its own rows of hs: without an after_block hook (which needs the
        # input and the output) the outputs overwrite the inputs in place (one less [n, seq, hidden])
        out = torch.empty_like(hs) if self.after_block is not None else hs
        done = object()

        def work(a: int, b: int):
            o = block(hs[a:b], **_slice_kwargs(kwargs, n, a, b))
            out[a:b] = o[0] if isinstance(o, tuple) else o
            return done

        lets = [greenlet(lambda a=a, b=b: work(a, b)) for a, b in chunks]
        try:
            with self._autocast(hs):
                at = [g.switch() for g in lets]
                for gi in range(len(groups)):
                    if any(x != gi for x in at):
                        raise UnsupportedError(f"the calibration forward did not reach {groups[gi][0]} in "
                                               "order: this block layout is not supported")
                    with _no_autocast(hs):
                        self.on_group(groups[gi], None)
                    at = [g.switch() for g in lets]
                if any(x is not done for x in at):
                    raise UnsupportedError("a block called a pruned Linear twice: this block layout is not supported")
        finally:
            for h in handles:
                h.remove()
            for g in lets:
                if not g.dead:
                    g.throw()  # GreenletExit: unwind the paused forward
        return out


# -- masks --------------------------------------------------------------------------------

def lowest_k_mask(scores: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """Boolean mask of exactly ``k`` lowest entries along ``dim`` (ties broken by position).

    ``kthvalue`` + a comparison instead of ``topk``: 2-5x faster on CPU for the large k of
    pruning (half a row), and the count stays exact when scores tie (e.g. already-zero weights).
    """
    n = scores.shape[dim]
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    kth = torch.kthvalue(scores, k, dim=dim, keepdim=True).values
    mask = scores < kth
    eq = scores == kth
    need = k - mask.sum(dim, keepdim=True)
    if bool((eq.sum(dim, keepdim=True) == need).all()):
        return mask.logical_or_(eq)
    return mask.logical_or_(eq & (eq.cumsum(dim) <= need))


def zero_(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight[mask] = 0`` in place (+0.0, never -0.0, so saved bytes are canonical).

    A multiply is ~4x faster than ``masked_fill_`` on CPU; ``add_(0.0)`` turns the -0.0 that
    negative weights times zero give into +0.0.
    """
    return weight.mul_(mask.logical_not()).add_(0.0)


def prune_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None,
               per: str = "row") -> torch.Tensor:
    """Boolean mask of the entries to ZERO: the lowest-scoring ones.

    ``per="row"``: round(cols * sparsity) per output row; ``per="layer"``: round(numel * sparsity)
    over the whole matrix; ``nm=(N, M)``: M - N lowest in every group of M consecutive inputs.
    """
    rows, cols = scores.shape
    if nm is not None:
        n, m = nm
        g = scores.reshape(rows, cols // m, m)
        idx = torch.topk(g, m - n, dim=-1, largest=False).indices
        mask = torch.zeros_like(g, dtype=torch.bool)
        mask.scatter_(-1, idx, True)
        return mask.reshape(rows, cols)
    if per == "row":
        return lowest_k_mask(scores, int(round(cols * sparsity)), dim=1)
    return lowest_k_mask(scores.reshape(-1), int(round(rows * cols * sparsity)), dim=0).reshape(rows, cols)


def global_threshold(tensors: list[torch.Tensor], fraction: float) -> float:
    """Value t such that about ``fraction`` of all entries of ``tensors`` are < t (bisection on
    counts, so no concatenated copy of all the weights is made)."""
    total = sum(t.numel() for t in tensors)
    target = int(round(total * fraction))
    if target <= 0:
        return -math.inf
    lo = 0.0
    hi = max(float(t.max()) for t in tensors) * (1 + 1e-6) + 1e-30
    for _ in range(64):
        mid = (lo + hi) / 2
        cnt = sum(int((t < mid).sum()) for t in tensors)
        if cnt < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(hi, 1e-30):
            break
    return hi


def finish_unstructured(bundle: Any, cfg: Any, linears: dict[str, nn.Linear], extra: dict[str, Any]
                        ) -> dict[str, Any]:
    """Summary for the report; installs the sparse saver when asked."""
    summary = {**sparsity_summary(linears), **extra}
    if cfg.pattern:
        summary["pattern"] = cfg.pattern
    if getattr(cfg, "calibration_dtype", None):
        summary["calibration_dtype"] = cfg.calibration_dtype
    if getattr(cfg, "low_memory", False):
        summary["low_memory"] = True
    if cfg.sparse_format:
        from .sparse_format import save_sparse

        bundle.saver = save_sparse
        bundle.meta["sparse_format"] = True
        summary["save_format"] = "hfcompress-sparse"
    return summary


def sparsity_summary(linears: dict[str, nn.Linear]) -> dict[str, Any]:
    total = zeros = 0
    per_layer = {}
    for name, lin in linears.items():
        w = lin.weight
        z = int((w == 0).sum())
        total += w.numel()
        zeros += z
        per_layer[name] = round(z / w.numel(), 4)
    return {"target_sparsity_actual": round(zeros / max(total, 1), 5), "targeted_modules": len(linears),
            "targeted_parameters": total}


@dataclass
class CalibratedRun:
    """What a calibrated unstructured method (Wanda, SparseGPT) needs before its pass."""

    model: Any
    info: ArchInfo
    linears: dict[str, nn.Linear]
    nm: tuple[int, int] | None
    ids: torch.Tensor
    base: float
    block_sparsity: list[float] | None
    extra: dict[str, Any]

    def sparsity(self, name: str, overrides: dict[str, float]) -> float:
        """Target sparsity of one Linear: OWL's per-block value (if on), then the overrides."""
        s = self.base if self.block_sparsity is None else self.block_sparsity[block_index(name, self.info)]
        return sparsity_for(name, s, overrides)


def prepare_calibrated(bundle: Any, cfg: Any, ctx: Any) -> CalibratedRun:
    """Targets, N:M check, calibration windows and (with ``cfg.owl``) OWL block sparsities."""
    model = bundle.model
    info = arch_info(model)
    linears = target_linears(model, info, cfg.targets, cfg.exclude)
    nm = cfg.nm()
    check_widths(linears, nm)
    ids = calibration_ids(bundle, cfg.calibration_or_default())
    base = cfg.effective_sparsity()
    block_sp = None
    extra: dict[str, Any] = {}
    if cfg.owl:
        from .owl import owl_block_sparsities

        block_sp = owl_block_sparsities(model, info, linears, ids, base, cfg.owl_lambda, cfg.owl_m,
                                        cfg.batch_size, progress=ctx.progress, compute_dtype=cfg.compute_dtype())
        extra["owl_block_sparsity"] = [round(x, 4) for x in block_sp]
    return CalibratedRun(model, info, linears, nm, ids, base, block_sp, extra)
