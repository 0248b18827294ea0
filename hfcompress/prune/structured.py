"""Structured pruning with model reconstruction, on any model whose blocks have a layout.

The blocks come from :func:`~hfcompress.calibration.blocks.find_block_stacks`, each block's
prunable structure from its layout (:mod:`hfcompress.layouts`: declared for its class, or
proposed from its projections). The model is rebuilt smaller from its rewritten config, so a
plain ``from_pretrained`` loads the result and gives the same outputs:

* ``ffn``: remove ``round(I * sparsity)`` channels of every FFN (uniform, so the config's width
  field describes the result): outputs of its input projections (each part of a fused gate|up),
  inputs of its output projection; mixture-of-experts tensors: each expert its own channels; FFNs
  side by side (a shared expert beside the routed ones): each by its own width field.
* ``heads``: grouped-query attention: remove ``round(G * sparsity)`` whole key/value groups (with
  their query heads); multi-query attention (one K/V head): remove query heads inside the group;
  multi-head: heads. Self- and cross-attention alike; fused q|k|v projections are sliced by
  their declared head order. The config must be able to state the head size (``head_dim``):
  a model that derives it from hidden_size / heads cannot describe fewer heads (one-line error).
* ``layers``: remove ``round(L * sparsity)`` blocks of every stack with the smallest angular
  distance arccos(cos(x_in, x_out)) / pi between their input and output hidden states on
  calibration data; depth fields, per-layer lists (``layer_types``, ...) and layer indices in the
  config are kept consistent.

Importance of a channel / head: ``magnitude`` (L2 norms of its weights), ``activations``
(||input of the output projection on that channel|| x ||its column||, Wanda-style) or
``taylor`` (sum of |w * dL/dw| over its weights).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..calibration.blocks import BlockStack, find_block_stacks
from ..calibration.capture import model_inputs
from ..calibration.data import num_samples, sample_length, take_samples
from ..errors import UnsupportedError, UsageError
from ..layouts.discover import FFN_FIELDS, layout_for, projection_shape, projections
from ..layouts.spec import Attention, BlockLayout
from ..layouts.surgery import (
    describable,
    keep_layers_in_config,
    rebuild,
    renumber_blocks,
    set_field,
    take,
    tensor_keys,
    weight_view,
)

#: tokens per calibration forward when ``batch_size`` is not set
_CHUNK_TOKENS = 2048


@dataclass
class _Block:
    stack: BlockStack
    index: int
    module: nn.Module
    layout: BlockLayout

    @property
    def prefix(self) -> str:
        return self.stack.block_name(self.index)

    def obj(self, path: str) -> Any:
        try:
            return self.module.get_submodule(path)
        except AttributeError:
            return self.module.get_parameter(path)

    def key(self, path: str) -> str:
        return tensor_keys(self.prefix, path, self.obj(path))[0]


@dataclass
class _Heads:
    """Head geometry of one attention of one block."""

    nq: int
    nkv: int
    hd: int

    @property
    def mqa(self) -> bool:
        return self.nkv == 1 < self.nq

    @property
    def units(self) -> int:
        return self.nq if self.mqa else self.nkv

    @property
    def rep(self) -> int:
        return self.nq // self.nkv

    def kept_heads(self, units: torch.Tensor) -> tuple[list[int], list[int]]:
        """Kept (query heads, key/value heads) for kept units (groups, or query heads under MQA)."""
        u = sorted(int(x) for x in units)
        if self.mqa:
            return u, [0]
        return [g * self.rep + r for g in u for r in range(self.rep)], u


def _blocks(model: nn.Module) -> list[_Block]:
    out = []
    for stack in find_block_stacks(model):
        for i, block in enumerate(stack.blocks):
            out.append(_Block(stack, i, block, layout_for(block, model.config, stack.role)[0]))
    return out


def _cls(b: _Block) -> str:
    return type(b.module).__name__


def _label(what: str) -> str:
    return {"ffn": "FFN channels", "heads": "attention heads (key/value groups)", "layers": "layers"}[what]


def _check_count(what: str, s: float, units: int, remove: int) -> None:
    if remove >= units:
        raise UsageError(f"structured {what} with sparsity {s} would remove every one of the {units} {_label(what)}: "
                         "use a smaller --sparsity")
    if remove == 0:
        raise UsageError(f"structured {what} with sparsity {s} removes none of the {units} {_label(what)}: use at "
                         f"least --sparsity {1 / (2 * units):.3g}")


# -- geometry ---------------------------------------------------------------------------------

def _ffn_views(blocks: list[_Block]) -> list[_Block]:
    """One entry per FFN: a block with FFNs side by side (``extra_ffn``: a shared expert beside the
    routed experts) gives one view per FFN, each with that FFN and its own width field."""
    out = []
    for b in blocks:
        out.append(b)
        for f in b.layout.extra_ffn:
            fields = replace(b.layout.fields, ffn=f.field)
            out.append(replace(b, layout=replace(b.layout, ffn=f, extra_ffn=(), fields=fields)))
    return out


def _ffn_outputs(b: _Block) -> list[str]:
    """Projections outside the attentions that write the hidden state (the FFN output candidates)."""
    if not b.layout.attention:
        return []
    hidden = projection_shape(b.obj(b.layout.attention[0].o))[1]
    used = [p for a in b.layout.attention for p in (a.q, a.k, a.v, a.qkv, a.o) if p]
    outs = [(p, o) for p, o in projections(b.module) if p not in used and projection_shape(o)[1] == hidden
            and not any(p.startswith(u.rpartition(".")[0] + ".") for u in used if "." in u)]
    if len(outs) > 1:  # a square projection beside an FFN output is not one
        outs = [(p, o) for p, o in outs if projection_shape(o)[0] != hidden]
    return [p for p, _ in outs]


def _ffn_width(b: _Block) -> int:
    ffn = b.layout.ffn
    if ffn is None:
        outs = _ffn_outputs(b)
        if len(outs) > 1:
            raise UnsupportedError(f"ffn pruning cuts one feed-forward network per block, and {_cls(b)} has "
                                   f"{len(outs)} side by side ({', '.join(f'`{o}`' for o in outs)}, e.g. routed "
                                   "and shared experts): use --structured heads or layers")
        raise UnsupportedError(f"ffn pruning needs a feed-forward network in each block, and none was found in "
                               f"{_cls(b)} (one projection writing the hidden state fed by ones reading it): "
                               "declare its layout in hfcompress/layouts")
    if b.layout.fields.ffn is None:
        raise UnsupportedError(f"ffn pruning needs a config field for the FFN width of {_cls(b)}, and none of "
                               f"{', '.join(FFN_FIELDS)} holds it: declare it in the block's layout")
    return projection_shape(b.obj(ffn.output))[0]


def _heads(model: nn.Module, b: _Block, a: Attention) -> _Heads:
    cfg, f = model.config, b.layout.fields
    if f.heads is None or getattr(cfg, f.heads, None) is None:
        raise UnsupportedError(f"heads pruning needs the head count of {_cls(b)} in the config, and no field holds it")
    nq = int(getattr(cfg, f.heads))
    hd = int(getattr(cfg, f.head_dim, None) or int(cfg.hidden_size) // nq)
    # the projections' shapes are the truth (Falcon's multi_query ignores num_kv_heads)
    if a.qkv is not None:
        nkv2 = projection_shape(b.obj(a.qkv))[1] // hd - nq
        nkv = nkv2 // 2
        ok = nkv2 > 0 and nkv2 % 2 == 0
    else:
        nkv = projection_shape(b.obj(a.k))[1] // hd
        ok = projection_shape(b.obj(a.q))[1] == nq * hd and projection_shape(b.obj(a.k))[1] == nkv * hd
    if not ok or nkv < 1 or nq % nkv:
        raise UnsupportedError(f"heads pruning cannot read the head layout of {_cls(b)}: {nq} heads of size {hd} "
                               "do not match its projections")
    return _Heads(nq, nkv, int(hd))


def _qkv_rows(a: Attention, h: _Heads, q: list[int], kv: list[int]) -> torch.Tensor:
    """Rows of a fused q|k|v projection to keep."""
    hd = h.hd
    if a.qkv_order == "interleaved":
        if h.nkv != h.nq:
            raise UnsupportedError(f"heads pruning of the interleaved projection `{a.qkv}` supports multi-head "
                                   "attention only")
        return torch.cat([torch.arange(i * 3 * hd, (i + 1) * 3 * hd) for i in q])
    rows = [torch.arange(i * hd, (i + 1) * hd) for i in q]
    rows += [h.nq * hd + torch.arange(i * hd, (i + 1) * hd) for i in kv]
    rows += [(h.nq + h.nkv) * hd + torch.arange(i * hd, (i + 1) * hd) for i in kv]
    return torch.cat(rows)


def _head_rows(q: list[int], hd: int) -> torch.Tensor:
    return torch.cat([torch.arange(i * hd, (i + 1) * hd) for i in q])


# -- cutting ----------------------------------------------------------------------------------

def _cut_ffn(state: dict, b: _Block, keep: torch.Tensor) -> None:
    """``keep``: ``[experts, k]`` channel indices (experts = 1 for a plain FFN)."""
    ffn = b.layout.ffn
    width = _ffn_width(b)
    idx = keep if ffn.experts else keep[0]
    parts = torch.cat([idx + c * width for c in range(ffn.chunks)], dim=-1)
    for path in ffn.inputs:
        take(state, b.prefix, path, b.obj(path), "out", parts)
    take(state, b.prefix, ffn.output, b.obj(ffn.output), "in", idx)


def _cut_heads(state: dict, b: _Block, a: Attention, h: _Heads, units: torch.Tensor) -> None:
    q, kv = h.kept_heads(units)
    if a.qkv is not None:
        if a.qkv_order is None:
            raise UnsupportedError(f"heads pruning needs the head order inside the fused projection `{a.qkv}`, "
                                   f"which its shapes cannot show: declare the layout of {_cls(b)} in hfcompress/layouts")
        take(state, b.prefix, a.qkv, b.obj(a.qkv), "out", _qkv_rows(a, h, q, kv))
    else:
        take(state, b.prefix, a.q, b.obj(a.q), "out", _head_rows(q, h.hd))
        for p in (a.k, a.v):
            take(state, b.prefix, p, b.obj(p), "out", _head_rows(kv, h.hd))
    take(state, b.prefix, a.o, b.obj(a.o), "in", _head_rows(q, h.hd))
    for path, which in a.norms:  # [heads x head size] or [heads, head size]
        heads = q if which == "q" else kv
        for key in tensor_keys(b.prefix, path, b.obj(path)):
            if key is not None and key in state:
                t = state[key]
                idx = _head_rows(heads, h.hd) if t.dim() == 1 else torch.tensor(heads)
                state[key] = t.index_select(0, idx).contiguous()
    for table in a.per_head:
        key = f"{b.prefix}.{table}.weight"
        if key in state:
            state[key] = state[key][:, torch.tensor(q)].contiguous()


# -- calibration forwards ---------------------------------------------------------------------

class _Done(Exception):
    """Raised after the last block: the statistics are gathered, the head (logits) is not needed."""


def _forward_all(bundle, ids: torch.Tensor, batch_size: int | None) -> None:
    """Calibration forwards in chunks, each stopped after the model's last block (no logits: a
    [chunk, seq, vocab] tensor would be the largest thing alive)."""
    model = bundle.model
    last = find_block_stacks(model)[-1].blocks[-1]

    def stop(module, args, out):
        raise _Done

    handle = last.register_forward_hook(stop)
    try:
        _forward_chunks(model, ids, batch_size)
    finally:
        handle.remove()


def _forward_chunks(model: nn.Module, ids: torch.Tensor | dict[str, torch.Tensor], batch_size: int | None) -> None:
    """``ids``: token windows, or a dict of batched image / audio inputs (sliced along dim 0)."""
    bs = batch_size or max(1, _CHUNK_TOKENS // sample_length(ids))
    extra: dict[str, Any] = {}
    if hasattr(model.config, "use_cache"):
        extra["use_cache"] = False
    for a in range(0, num_samples(ids), bs):
        x = take_samples(ids, a, a + bs)
        if isinstance(x, dict):
            kw = model_inputs(model, x)
        else:
            kw = {"input_ids": x, "attention_mask": torch.ones_like(x), **extra}
            if getattr(model.config, "is_encoder_decoder", False):
                kw["decoder_input_ids"] = x
        try:
            model(**kw)
        except _Done:
            pass


@torch.no_grad()
def _input_sq(bundle, modules: dict[str, nn.Module], ids, batch_size) -> dict[str, torch.Tensor]:
    """Per module: sum over calibration tokens of x_j^2 for each input feature j."""
    acc: dict[str, torch.Tensor] = {}
    handles = []
    for name, m in modules.items():
        def hook(module, args, name=name):
            x = args[0].detach().float()
            v = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            acc[name] = acc[name] + v if name in acc else v
        handles.append(m.register_forward_pre_hook(hook))
    try:
        _forward_all(bundle, ids, batch_size)
    finally:
        for h in handles:
            h.remove()
    return acc


@torch.no_grad()
def _expert_input_sq(bundle, blocks: list[_Block], ids, batch_size) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per expert FFN (key: its output tensor): ``(sum of x_j^2 [experts, I], routed tokens [experts])``
    for the input of each expert's output projection, from the tokens routed to that expert.

    The experts module is called as ``experts(hidden_states, top_k_index, top_k_weights)`` (the
    transformers 5 convention); its ``act_fn`` turns each expert's gate part into the gate.
    """
    acc: dict[str, list[torch.Tensor]] = {}
    handles = []
    for b in blocks:
        ffn = b.layout.ffn
        owner_path = ffn.output.rpartition(".")[0]
        owner = b.module.get_submodule(owner_path)
        act = getattr(owner, "act_fn", None)
        if act is None or len(ffn.inputs) != 1 or ffn.chunks != 2:
            raise UnsupportedError(f"activation importance of the expert tensors of {_cls(b)} needs a fused gate|up "
                                   f"tensor and an `act_fn` on `{owner_path}`: use magnitude or taylor importance")
        w_in = b.obj(ffn.inputs[0])
        key = b.key(ffn.output)
        n_exp, width = w_in.shape[0], w_in.shape[1] // 2
        acc[key] = [torch.zeros(n_exp, width), torch.zeros(n_exp)]

        def hook(module, args, kwargs, w_in=w_in, act=act, key=key, width=width):
            x = args[0] if args else kwargs["hidden_states"]
            idx = args[1] if len(args) > 1 else kwargs["top_k_index"]
            x = x.reshape(-1, x.shape[-1]).float()
            idx = idx.reshape(x.shape[0], -1)
            for e in range(w_in.shape[0]):
                rows = (idx == e).any(-1).nonzero().flatten()
                if rows.numel() == 0:
                    continue
                gate, up = torch.nn.functional.linear(x[rows], w_in[e].float()).split(width, dim=-1)
                acc[key][0][e] += (act(gate) * up).pow(2).sum(0)
                acc[key][1][e] += rows.numel()
        handles.append(owner.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        _forward_all(bundle, ids, batch_size)
    finally:
        for h in handles:
            h.remove()
    return {k: (v[0], v[1]) for k, v in acc.items()}


@torch.no_grad()
def _angular_distances(bundle, blocks: list[_Block], ids, batch_size) -> dict[tuple[str, int], float]:
    acc: dict[tuple[str, int], list[float]] = {}
    handles = []
    for b in blocks:
        key = (b.stack.name, b.index)
        seen: dict[str, torch.Tensor] = {}

        def pre(module, args, kwargs, seen=seen):
            seen["x"] = args[0] if args else kwargs["hidden_states"]

        def post(module, args, kwargs, out, seen=seen, key=key):
            y = out[0] if isinstance(out, (tuple, list)) else out
            x = seen.pop("x")
            a, c = x.reshape(-1, x.shape[-1]).float(), y.reshape(-1, y.shape[-1]).float()
            cos = torch.nn.functional.cosine_similarity(a, c, dim=-1).clamp(-1, 1)
            acc.setdefault(key, []).append(float(torch.arccos(cos).mean() / math.pi))
        handles.append(b.module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(b.module.register_forward_hook(post, with_kwargs=True))
    try:
        _forward_all(bundle, ids, batch_size)
    finally:
        for h in handles:
            h.remove()
    return {k: sum(v) / len(v) for k, v in acc.items()}


# -- importance -------------------------------------------------------------------------------

def _unit_scores(w: torch.Tensor, obj: Any, kind: str, importance: str, chunks: int = 1) -> torch.Tensor:
    """Per unit (output row / input column) of ``w``: ``[experts, units]``; chunks summed."""
    v = weight_view(w.detach().float(), obj, kind)
    e, n, rest = v.shape
    v = v.reshape(e, chunks, n // chunks, rest)
    s = v.pow(2).sum(-1) if importance == "magnitude" else v.sum(-1)
    return s.sum(1)


def _ffn_scores(bundle, blocks, importance, ids, cfg, progress, unrouted: dict[str, int]) -> list[torch.Tensor]:
    """Per block, ``[experts, I]`` channel scores (experts = 1 for a plain FFN). ``unrouted`` collects,
    per block, the experts no calibration token reached (ranked by magnitude instead)."""
    grads: dict[str, torch.Tensor] = {}
    if importance == "taylor":
        from .gradients import taylor_scores

        params = {}
        for b in blocks:
            for p in (*b.layout.ffn.inputs, b.layout.ffn.output):
                obj = b.obj(p)
                params[b.key(p)] = obj if isinstance(obj, nn.Parameter) else obj.weight
        grads = taylor_scores(bundle, params, ids, cfg.batch_size, progress)
    sq: dict[str, Any] = {}
    if importance == "activations":
        dense = [b for b in blocks if not b.layout.ffn.experts]
        sq = _input_sq(bundle, {b.key(b.layout.ffn.output): b.obj(b.layout.ffn.output) for b in dense}, ids,
                       cfg.batch_size) if dense else {}
        moe = [b for b in blocks if b.layout.ffn.experts]
        if moe:
            sq.update(_expert_input_sq(bundle, moe, ids, cfg.batch_size))
    out = []
    for b in blocks:
        ffn = b.layout.ffn
        cobj = b.obj(ffn.output)
        cw = cobj if isinstance(cobj, nn.Parameter) else cobj.weight
        if importance == "activations":
            col = _unit_scores(cw, cobj, "in", "magnitude").sqrt()
            if ffn.experts:
                act_sq, routed = sq[b.key(ffn.output)]
                score = act_sq.sqrt() * col
                # an expert no calibration token reached has no activations: rank its channels by
                # their weights (magnitude), explicitly, instead of keeping arbitrary ones
                idle = routed == 0
                if bool(idle.any()):
                    mag = sum(_unit_scores(b.obj(p).detach(), b.obj(p), "out", "magnitude", ffn.chunks).sqrt()
                              for p in ffn.inputs) + col
                    score[idle] = mag[idle]
                    unrouted[b.prefix] = int(idle.sum())
                out.append(score)
                continue
            out.append(sq[b.key(ffn.output)].sqrt()[None] * col)
            continue
        score = None
        for p, kind, ch in [*((p, "out", ffn.chunks) for p in ffn.inputs), (ffn.output, "in", 1)]:
            obj = b.obj(p)
            w = grads[b.key(p)] if importance == "taylor" else (obj if isinstance(obj, nn.Parameter) else obj.weight)
            s = _unit_scores(w, obj, kind, importance, ch)
            s = s.sqrt() if importance == "magnitude" else s
            score = s if score is None else score + s
        out.append(score)
    return out


def _head_scores(bundle, blocks, geo, importance, ids, cfg, progress) -> dict[tuple[int, int], torch.Tensor]:
    """(block number, attention number) -> one score per unit."""
    grads: dict[str, torch.Tensor] = {}
    if importance == "taylor":
        from .gradients import taylor_scores

        params = {}
        for b in blocks:
            for a in b.layout.attention:
                for p in (a.q, a.k, a.v, a.qkv, a.o):
                    if p:
                        params[b.key(p)] = b.obj(p).weight
        grads = taylor_scores(bundle, params, ids, cfg.batch_size, progress)
    sq = {}
    if importance == "activations":
        sq = _input_sq(bundle, {b.key(a.o): b.obj(a.o) for b in blocks for a in b.layout.attention}, ids,
                       cfg.batch_size)
    out = {}
    for bi, b in enumerate(blocks):
        for ai, a in enumerate(b.layout.attention):
            h = geo[(bi, ai)]

            def rows(p, kind, b=b):
                obj = b.obj(p)
                w = grads[b.key(p)] if importance == "taylor" else obj.weight
                return _unit_scores(w, obj, kind, "magnitude" if importance != "taylor" else "taylor")[0]

            if importance == "activations":
                col = rows(a.o, "in").sqrt()
                per_q = (sq[b.key(a.o)].sqrt() * col).reshape(h.nq, h.hd).sum(1)
                per_kv = torch.zeros(h.nkv)
            else:
                o = rows(a.o, "in").reshape(h.nq, h.hd).sum(1)
                if a.qkv is not None:
                    r = rows(a.qkv, "out")
                    if a.qkv_order == "interleaved":
                        r3 = r.reshape(h.nq, 3, h.hd).sum(-1)
                        q, k, v = r3[:, 0], r3[:, 1], r3[:, 2]
                    else:
                        q = r[:h.nq * h.hd].reshape(h.nq, h.hd).sum(1)
                        k = r[h.nq * h.hd:(h.nq + h.nkv) * h.hd].reshape(h.nkv, h.hd).sum(1)
                        v = r[(h.nq + h.nkv) * h.hd:].reshape(h.nkv, h.hd).sum(1)
                else:
                    q = rows(a.q, "out").reshape(h.nq, h.hd).sum(1)
                    k = rows(a.k, "out").reshape(h.nkv, h.hd).sum(1)
                    v = rows(a.v, "out").reshape(h.nkv, h.hd).sum(1)
                per_q, per_kv = q + o, k + v
            if h.mqa:
                out[(bi, ai)] = per_q
            else:
                out[(bi, ai)] = per_q.reshape(h.nkv, h.rep).sum(1) + per_kv
    return out


def _keep_sorted(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores, sorted, per row (``scores``: ``[rows, units]``)."""
    return torch.topk(scores, keep, dim=-1).indices.sort(dim=-1).values


# -- the stage --------------------------------------------------------------------------------

def _meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to("meta") for k, v in state.items()}


def _require_describable(model, new_config, meta_state, what: str, b: _Block) -> None:
    why = describable(model, new_config, meta_state)
    if why is None:
        return
    if what == "heads" and why.startswith(b.prefix):
        raise UnsupportedError(f"heads pruning needs a config that can state the head size, and "
                               f"{type(model.config).__name__} derives it from the hidden size and head count "
                               f"({why}): use --structured ffn or layers")
    raise UnsupportedError(f"structured {what} of {type(model).__name__} cannot be described by its config: {why}")


def _require_head_size(model: nn.Module, b: _Block, h: _Heads) -> None:
    """One-line error unless the config's head-size field reaches the model: a model built with
    twice the head size must have wider projections (checked on the meta device)."""
    field, a = b.layout.fields.head_dim, b.layout.attention[0]
    why = (f"heads pruning needs a config that can state the head size, and {type(model.config).__name__} "
           "derives it from the hidden size and head count: use --structured ffn or layers")
    probe_cfg = copy.deepcopy(model.config)
    try:
        set_field(probe_cfg, field, 2 * h.hd)
        with torch.device("meta"):
            probe = type(model)(probe_cfg)
    except Exception:  # noqa: BLE001 - a config that refuses the field cannot state it
        raise UnsupportedError(why) from None
    stack = next(s for s in find_block_stacks(probe) if s.name == b.stack.name)
    path = a.qkv or a.q
    if projection_shape(stack.blocks[b.index].get_submodule(path)) == projection_shape(b.obj(path)):
        raise UnsupportedError(why)


@torch.no_grad()
def apply_structured(bundle, cfg, ctx, importance: str) -> dict[str, Any]:
    """Prune ``bundle.model`` structurally (``cfg.structured``) and rebuild it; returns the summary."""
    model = bundle.model
    what, s = cfg.structured, cfg.effective_sparsity()
    if cfg.targets or cfg.exclude or cfg.overrides:
        raise UsageError("targets / exclude / overrides do not apply to structured pruning (it is uniform "
                         "across layers so the standard config describes the result)")
    blocks = _blocks(model)
    need_data = what == "layers" or importance in ("activations", "taylor")
    if importance == "taylor":
        from .gradients import check_taylor_task

        check_taylor_task(bundle)
    state = dict(model.state_dict())
    new_config = copy.deepcopy(model.config)
    summary: dict[str, Any] = {"structured": what, "importance": importance}

    # plan: counts, config fields and a dry run of the cut on the meta device, before any work
    if what == "ffn":
        blocks = _ffn_views(blocks)
        widths: dict[str, int] = {}
        for b in blocks:
            w = _ffn_width(b)
            if widths.setdefault(b.layout.fields.ffn, w) != w:
                raise UnsupportedError(f"ffn pruning needs one FFN width per config field, and "
                                       f"{b.layout.fields.ffn} covers widths {widths[b.layout.fields.ffn]} and {w}")
        units = next(iter(widths.values()))
        remove = {f: int(round(w * s)) for f, w in widths.items()}
        for f, w in widths.items():
            _check_count(what, s, w, remove[f])
        meta = _meta(state)
        for b in blocks:
            keep = widths[b.layout.fields.ffn] - remove[b.layout.fields.ffn]
            n_exp = b.obj(b.layout.ffn.output).shape[0] if b.layout.ffn.experts else 1
            _cut_ffn(meta, b, torch.arange(keep).expand(n_exp, keep))
        for f, w in widths.items():
            set_field(new_config, f, w - remove[f])
        _require_describable(model, new_config, meta, what, blocks[0])
    elif what == "heads":
        geo: dict[tuple[int, int], _Heads] = {}
        for bi, b in enumerate(blocks):
            if not b.layout.attention:
                raise UnsupportedError(f"heads pruning needs attention projections in each block, and none were "
                                       f"found in {_cls(b)}: declare its layout in hfcompress/layouts")
            for ai, a in enumerate(b.layout.attention):
                geo[(bi, ai)] = _heads(model, b, a)
        _require_head_size(model, blocks[0], geo[(0, 0)])
        units = geo[(0, 0)].units
        remove_n = int(round(units * s))
        for h in geo.values():
            _check_count(what, s, h.units, int(round(h.units * s)))
        meta = _meta(state)
        for (bi, ai), h in geo.items():
            _cut_heads(meta, blocks[bi], blocks[bi].layout.attention[ai], h,
                       torch.arange(h.units - int(round(h.units * s))))
        fields_done = set()
        for (bi, _ai), h in geo.items():
            f = blocks[bi].layout.fields
            q, kv = h.kept_heads(torch.arange(h.units - int(round(h.units * s))))
            if (f.heads, f.kv_heads) in fields_done:
                continue
            fields_done.add((f.heads, f.kv_heads))
            set_field(new_config, f.heads, len(q))
            if f.kv_heads and getattr(model.config, f.kv_heads, None) == h.nkv:
                set_field(new_config, f.kv_heads, len(kv))
            if f.head_dim and (hasattr(new_config, f.head_dim) or len(q) * h.hd != int(model.config.hidden_size)):
                try:
                    set_field(new_config, f.head_dim, h.hd)
                except (UnsupportedError, AttributeError):
                    raise UnsupportedError(f"heads pruning needs a config that can state the head size, and "
                                           f"{type(model.config).__name__} derives `{f.head_dim}` from the hidden "
                                           "size and head count: use --structured ffn or layers") from None
        _require_describable(model, new_config, meta, what, blocks[0])
        remove = remove_n
    else:
        stacks: dict[str, list[_Block]] = {}
        for b in blocks:
            stacks.setdefault(b.stack.name, []).append(b)
        remove_per = {name: int(round(len(bs) * s)) for name, bs in stacks.items()}
        for name, bs in stacks.items():
            _check_count(what, s, len(bs), remove_per[name])
        units = len(next(iter(stacks.values())))
        remove = remove_per[next(iter(stacks))]

    ids = None
    if need_data:
        from .engine import calibration_ids

        ids = calibration_ids(bundle, cfg.calibration_or_default())
    before = sum(p.numel() for p in model.parameters())
    summary.update({"units": units, "removed": remove})

    if what == "ffn":
        unrouted: dict[str, int] = {}
        scores = _ffn_scores(bundle, blocks, importance, ids, cfg, ctx.progress, unrouted)
        if unrouted:
            summary["experts_without_calibration_tokens"] = unrouted
        for b, sc in zip(blocks, scores, strict=True):
            keep = widths[b.layout.fields.ffn] - remove[b.layout.fields.ffn]
            _cut_ffn(state, b, _keep_sorted(sc, keep))
        summary["removed"] = remove[blocks[0].layout.fields.ffn]
        summary["intermediate_size"] = [units, units - summary["removed"]]
        if len(widths) > 1:  # FFNs side by side, each its own width field
            summary["ffn_widths"] = {f: [w, w - remove[f]] for f, w in widths.items()}
    elif what == "heads":
        scores = _head_scores(bundle, blocks, geo, importance, ids, cfg, ctx.progress)
        removed_units = []
        for (bi, ai), h in geo.items():
            keep_units = _keep_sorted(scores[(bi, ai)], h.units - int(round(h.units * s)))
            if ai == 0:
                removed_units.append(sorted(set(range(h.units)) - set(keep_units.tolist())))
            _cut_heads(state, blocks[bi], blocks[bi].layout.attention[ai], h, keep_units)
        h0 = geo[(0, 0)]
        q0, kv0 = h0.kept_heads(torch.arange(h0.units - remove))
        summary.update({"num_attention_heads": [h0.nq, len(q0)], "num_key_value_heads": [h0.nkv, len(kv0)],
                        "unit": "query heads" if h0.mqa else "key/value groups",
                        "removed_units_per_layer": removed_units})
    else:
        dist = _angular_distances(bundle, blocks, ids, cfg.batch_size)
        removed_layers: dict[str, list[int]] = {}
        for name, bs in stacks.items():
            d = torch.tensor([dist[(name, b.index)] for b in bs])
            drop = sorted(torch.topk(d, remove_per[name], largest=False).indices.tolist())
            kept = [i for i in range(len(bs)) if i not in drop]
            state = renumber_blocks(state, name, kept)
            keep_layers_in_config(new_config, bs[0].layout.fields.layers, kept, len(bs),
                                  per_layer_lists=len(stacks) == 1)
            removed_layers[name] = drop
        summary.update({"removed_layers": removed_layers if len(stacks) > 1 else next(iter(removed_layers.values())),
                        "angular_distance": {f"{k[0]}.{k[1]}": round(v, 4) for k, v in dist.items()},
                        "num_hidden_layers": [units, units - remove]})
    new = rebuild(model, new_config, state)
    del state
    bundle.model = new
    summary["parameters"] = [before, sum(p.numel() for p in new.parameters())]
    if ids is not None:
        summary["calibration_samples"] = num_samples(ids)
    return summary
