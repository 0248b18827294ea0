"""Structured pruning with model reconstruction.

The model is physically rebuilt smaller and its config updated, so a plain
``AutoModel....from_pretrained`` loads the result:

* ``ffn``: remove ``round(I * sparsity)`` intermediate channels in every layer (uniform, so the
  standard ``intermediate_size`` describes the result). Llama: rows of gate/up_proj, columns of
  down_proj; BERT: rows (+bias) of intermediate.dense, columns of output.dense.
* ``heads``: Llama-family, GQA-aware: remove ``round(G * sparsity)`` whole key/value groups
  (with their query heads) in every layer; ``num_attention_heads`` / ``num_key_value_heads``
  are updated, ``head_dim`` stays. (BERT derives its head size from hidden_size /
  num_attention_heads, so removed heads cannot be described by its config: refused.)
* ``layers``: remove ``round(L * sparsity)`` whole blocks with the smallest angular distance
  arccos(cos(x_in, x_out)) / pi between their input and output hidden states on calibration data;
  ``num_hidden_layers`` (and ``layer_types``) are updated and blocks renumbered (so each
  attention's ``layer_idx`` for the KV cache is its new position).

Importance of a channel / head group: ``magnitude`` (L2 norms of its weights), ``activations``
(||input of the down / o projection on that channel|| x ||its column||, Wanda-style, from a
sequential calibration pass) or ``taylor`` (sum of |w * dL/dw| over its weights).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError, UsageError
from .engine import ArchInfo, Sequential, arch_info, calibration_ids


def _ffn_modules(info: ArchInfo, i: int) -> tuple[list[nn.Linear], nn.Linear, list[str], str]:
    """(row-sliced Linears, column-sliced Linear, their names) of block ``i``'s FFN."""
    layer = info.layers[i]
    p = info.layer_name(i)
    if info.kind == "decoder":
        return ([layer.mlp.gate_proj, layer.mlp.up_proj], layer.mlp.down_proj,
                [f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"], f"{p}.mlp.down_proj")
    return [layer.intermediate.dense], layer.output.dense, [f"{p}.intermediate.dense"], f"{p}.output.dense"


def _attn_modules(info: ArchInfo, i: int):
    a = info.layers[i].self_attn
    p = f"{info.layer_name(i)}.self_attn"
    return ({"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "o": a.o_proj},
            {k: f"{p}.{k}_proj" for k in "qkvo"})


def _plan(cfg, info: ArchInfo, model) -> tuple[int, int]:
    """(units, units removed) for the structured mode; one-line errors before any work."""
    c = model.config
    s = cfg.effective_sparsity()
    what = cfg.structured
    if what == "ffn":
        units = int(c.intermediate_size)
    elif what == "heads":
        if info.kind != "decoder":
            raise UnsupportedError(f"structured head pruning is not supported for {info.model_type}: its config "
                                   "derives the head size from hidden_size / num_attention_heads, so fewer heads "
                                   "cannot be described; use --structured ffn or layers")
        units = int(getattr(c, "num_key_value_heads", None) or c.num_attention_heads)
        rep = int(c.num_attention_heads) // units
        left = (units - int(round(units * s))) * rep
        if 0 < left and c.hidden_size % left:
            raise UnsupportedError(f"removing {int(round(units * s))} of {units} key/value groups leaves {left} "
                                   f"heads, and {c.model_type} configs require hidden_size ({c.hidden_size}) to be "
                                   "a multiple of num_attention_heads: choose another --sparsity")
    else:
        units = int(c.num_hidden_layers)
    remove = int(round(units * s))
    label = {"ffn": "FFN channels", "heads": "key/value head groups", "layers": "layers"}[what]
    if remove >= units:
        raise UsageError(f"structured {what} with sparsity {s} would remove every one of the {units} {label}: "
                         "use a smaller --sparsity")
    if remove == 0:
        raise UsageError(f"structured {what} with sparsity {s} removes none of the {units} {label}: use at least "
                         f"--sparsity {1 / (2 * units):.3g}")
    return units, remove


# -- importance -----------------------------------------------------------------------------

def _col_norm(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(w.detach().float(), dim=0)


def _row_norm(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(w.detach().float(), dim=1)


def _activation_sq(model, info, names: dict[str, nn.Linear], ids, batch_size, progress) -> dict[str, torch.Tensor]:
    """Sum over calibration tokens of x_j^2 for the input of each named Linear (dense model)."""
    acc: dict[str, torch.Tensor] = {}

    def add(group, x):
        v = torch.linalg.vector_norm(x, dim=0, dtype=torch.float32).pow_(2)
        acc[group[0]] = acc[group[0]] + v if group[0] in acc else v

    def on_group(group, x):
        if x is not None:
            add(group, x)

    Sequential(model, info, names, on_group, add, batch_size, progress=progress).run(ids)
    return acc


def _ffn_scores(bundle, cfg, info, importance, ids, progress) -> list[torch.Tensor]:
    model = bundle.model
    n = len(info.layers)
    if importance == "magnitude":
        out = []
        for i in range(n):
            rows, col, _, _ = _ffn_modules(info, i)
            out.append(sum(_row_norm(r.weight) for r in rows) + _col_norm(col.weight))
        return out
    if importance == "activations":
        cols = {}
        for i in range(n):
            _, col, _, cname = _ffn_modules(info, i)
            cols[cname] = col
        sq = _activation_sq(model, info, cols, ids, cfg.batch_size, progress)
        return [sq[_ffn_modules(info, i)[3]].sqrt() * _col_norm(_ffn_modules(info, i)[1].weight) for i in range(n)]
    from .taylor import taylor_scores

    params = {}
    for i in range(n):
        rows, col, rnames, cname = _ffn_modules(info, i)
        params.update({nm: r.weight for nm, r in zip(rnames, rows, strict=True)})
        params[cname] = col.weight
    sc = taylor_scores(bundle, info, params, ids, cfg.batch_size, progress)
    out = []
    for i in range(n):
        _, _, rnames, cname = _ffn_modules(info, i)
        out.append(sum(sc[r].sum(1) for r in rnames) + sc[cname].sum(0))
    return out


def _head_scores(bundle, cfg, info, importance, ids, progress) -> list[torch.Tensor]:
    """Per layer, one score per key/value group."""
    c = bundle.model.config
    hd = int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    nq, nkv = int(c.num_attention_heads), int(c.num_key_value_heads)
    rep = nq // nkv
    n = len(info.layers)

    def group(q_rows, k_rows, v_rows, o_cols):  # per-channel scores -> per group
        q = q_rows.reshape(nkv, rep * hd).sum(1)
        o = o_cols.reshape(nkv, rep * hd).sum(1)
        return q + o + k_rows.reshape(nkv, hd).sum(1) + v_rows.reshape(nkv, hd).sum(1)

    out = []
    if importance == "magnitude":
        for i in range(n):
            m, _ = _attn_modules(info, i)
            out.append(group(_row_norm(m["q"].weight) ** 2, _row_norm(m["k"].weight) ** 2,
                             _row_norm(m["v"].weight) ** 2, _col_norm(m["o"].weight) ** 2))
        return out
    if importance == "activations":
        os_ = {_attn_modules(info, i)[1]["o"]: _attn_modules(info, i)[0]["o"] for i in range(n)}
        sq = _activation_sq(bundle.model, info, os_, ids, cfg.batch_size, progress)
        for i in range(n):
            m, names = _attn_modules(info, i)
            per = sq[names["o"]].sqrt() * _col_norm(m["o"].weight)
            out.append(per.reshape(nkv, rep * hd).sum(1))
        return out
    from .taylor import taylor_scores

    params = {}
    for i in range(n):
        m, names = _attn_modules(info, i)
        params.update({names[k]: m[k].weight for k in "qkvo"})
    sc = taylor_scores(bundle, info, params, ids, cfg.batch_size, progress)
    for i in range(n):
        _, names = _attn_modules(info, i)
        out.append(group(sc[names["q"]].sum(1), sc[names["k"]].sum(1), sc[names["v"]].sum(1),
                         sc[names["o"]].sum(0)))
    return out


def _layer_distances(bundle, cfg, info, ids, progress) -> list[float]:
    dist = [0.0] * len(info.layers)

    def after(i, x_in, x_out):
        a = x_in.reshape(-1, x_in.shape[-1]).float()
        b = x_out.reshape(-1, x_out.shape[-1]).float()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
        dist[i] = float(torch.arccos(cos).mean() / math.pi)

    Sequential(bundle.model, info, {}, lambda g, x: None, lambda g, x: None, cfg.batch_size,
               after_block=after, progress=progress).run(ids)
    return dist


# -- rebuild --------------------------------------------------------------------------------

def _rebuild(model: nn.Module, new_config: Any, state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh model of the same class from ``new_config`` with ``state`` loaded strictly."""
    dtype = next(model.parameters()).dtype
    new = type(model)(new_config).to(dtype)
    missing, unexpected = new.load_state_dict(state, strict=True)
    # tied weights (lm_head <- embeddings) may be absent from one side
    tied = set(getattr(new, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise UnsupportedError(f"structured rebuild of {type(model).__name__} failed: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
    if getattr(new_config, "tie_word_embeddings", False) and hasattr(new, "tie_weights"):
        new.tie_weights()
    new.eval()
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    return new


def _keep_sorted(scores: torch.Tensor, keep: int) -> torch.Tensor:
    return torch.topk(scores, keep).indices.sort().values


@torch.no_grad()
def apply_structured(bundle, cfg, ctx, importance: str) -> dict[str, Any]:
    model = bundle.model
    info = arch_info(model)
    units, remove = _plan(cfg, info, model)
    if cfg.targets or cfg.exclude or cfg.overrides:
        raise UsageError("targets / exclude / overrides do not apply to structured pruning (it is uniform "
                         "across layers so the standard config describes the result)")
    need_data = cfg.structured == "layers" or importance in ("activations", "taylor")
    if importance == "taylor" and cfg.structured != "layers":
        from .taylor import check_taylor_task

        check_taylor_task(bundle)
    ids = calibration_ids(bundle, cfg.calibration_or_default()) if need_data else None
    before = sum(p.numel() for p in model.parameters())
    state = dict(model.state_dict())
    new_config = copy.deepcopy(model.config)
    summary: dict[str, Any] = {"structured": cfg.structured, "importance": importance, "units": units,
                               "removed": remove}
    if cfg.structured == "ffn":
        scores = _ffn_scores(bundle, cfg, info, importance, ids, ctx.progress)
        keep = units - remove
        for i, sc in enumerate(scores):
            idx = _keep_sorted(sc, keep)
            rows, col, rnames, cname = _ffn_modules(info, i)
            for rn in rnames:
                state[f"{rn}.weight"] = state[f"{rn}.weight"][idx].clone()
                if f"{rn}.bias" in state:
                    state[f"{rn}.bias"] = state[f"{rn}.bias"][idx].clone()
            state[f"{cname}.weight"] = state[f"{cname}.weight"][:, idx].clone()
        new_config.intermediate_size = keep
        summary["intermediate_size"] = [units, keep]
    elif cfg.structured == "heads":
        scores = _head_scores(bundle, cfg, info, importance, ids, ctx.progress)
        c = model.config
        hd = int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
        nq, nkv = int(c.num_attention_heads), int(c.num_key_value_heads)
        rep = nq // nkv
        keep = nkv - remove
        removed_groups = []
        for i, sc in enumerate(scores):
            g = _keep_sorted(sc, keep)
            removed_groups.append(sorted(set(range(nkv)) - set(g.tolist())))
            kv_idx = torch.cat([torch.arange(int(x) * hd, (int(x) + 1) * hd) for x in g])
            q_idx = torch.cat([torch.arange(int(x) * rep * hd, (int(x) + 1) * rep * hd) for x in g])
            _, names = _attn_modules(info, i)
            for k, idx in (("q", q_idx), ("k", kv_idx), ("v", kv_idx)):
                state[f"{names[k]}.weight"] = state[f"{names[k]}.weight"][idx].clone()
                if f"{names[k]}.bias" in state:
                    state[f"{names[k]}.bias"] = state[f"{names[k]}.bias"][idx].clone()
            state[f"{names['o']}.weight"] = state[f"{names['o']}.weight"][:, q_idx].clone()
        new_config.num_attention_heads = keep * rep
        new_config.num_key_value_heads = keep
        new_config.head_dim = hd
        summary.update({"num_attention_heads": [nq, keep * rep], "num_key_value_heads": [nkv, keep],
                        "removed_kv_groups_per_layer": removed_groups})
    else:
        dist = _layer_distances(bundle, cfg, info, ids, ctx.progress)
        drop = sorted(torch.topk(torch.tensor(dist), remove, largest=False).indices.tolist())
        kept = [i for i in range(units) if i not in drop]
        prefix = info.layers_name + "."
        new_state = {}
        for k, v in state.items():
            if k.startswith(prefix):
                i, rest = k[len(prefix):].split(".", 1)
                if int(i) in drop:
                    continue
                k = f"{prefix}{kept.index(int(i))}.{rest}"
            new_state[k] = v
        state = new_state
        new_config.num_hidden_layers = len(kept)
        for attr in ("layer_types",):
            val = getattr(new_config, attr, None)
            if isinstance(val, list) and len(val) == units:
                setattr(new_config, attr, [val[i] for i in kept])
        summary.update({"removed_layers": drop, "angular_distance": [round(d, 4) for d in dist],
                        "num_hidden_layers": [units, len(kept)]})
    new = _rebuild(model, new_config, state)
    del state
    bundle.model = new
    after = sum(p.numel() for p in new.parameters())
    summary["parameters"] = [before, after]
    if ids is not None:
        summary["calibration_samples"] = int(ids.shape[0])
    return summary
