"""Propose a block's layout from what it contains: its projections, their shapes and names, and
the config's widths — no list of model types.

* Attentions are the outermost modules whose class name contains ``Attention`` (the naming
  every transformers model follows). Inside one, the projections reading the hidden state are
  ``q``/``k``/``v`` (told apart by the first letter of their name: ``q_proj``, ``query``, ``q``,
  ``q_lin``) or one fused ``qkv``; the one writing the hidden state is ``o``. An embedding with
  one column per head is a per-head table (T5's relative position bias).
* The FFN is what remains: the one projection writing the hidden state is its output, the ones
  reading it whose width is a multiple of the output's input width are its inputs (a router,
  whose width is the number of experts, is not). 3-D parameters are expert tensors.
* Config fields are found by role (``decoder_ffn_dim`` in a decoder stack of an encoder–decoder
  model), by the config's own ``attribute_map`` aliases (``num_hidden_layers`` -> ``n_layer``),
  and for the FFN width by value among the usual field names.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from .declared import declared_layout
from .spec import FFN, Attention, BlockLayout, Fields

#: config field names that hold an FFN width, in order of preference (data)
FFN_FIELDS = ("intermediate_size", "ffn_dim", "d_ff", "n_inner", "ffn_hidden_size", "hidden_dim")
#: FFN width of mixture-of-experts experts, when it has its own field
EXPERT_FFN_FIELDS = ("moe_intermediate_size", "expert_intermediate_size")


def _conv1d() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it
        return None
    return Conv1D


def projection_shape(obj: Any) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of a Linear, a Conv1D or a 3-D expert tensor, else None."""
    conv = _conv1d()
    if isinstance(obj, nn.Linear):
        return obj.in_features, obj.out_features
    if conv is not None and isinstance(obj, conv):
        w = obj.weight
        return int(w.shape[0]), int(w.shape[1])
    if isinstance(obj, nn.Parameter) and obj.dim() == 3:
        return int(obj.shape[2]), int(obj.shape[1])
    return None


def projections(block: nn.Module) -> list[tuple[str, Any]]:
    """``[(path, module or 3-D parameter)]`` of the block's projections, in definition order."""
    out = []
    for path, module in block.named_modules():
        if projection_shape(module) is not None:
            out.append((path, module))
            continue
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() == 3:
                out.append((f"{path}.{pname}" if path else pname, p))
    return out


def canonical_field(config: Any, name: str) -> str | None:
    """The stored field behind ``name`` (through ``attribute_map``), or None if the config has none."""
    amap = getattr(type(config), "attribute_map", None) or {}
    real = amap.get(name, name)
    return real if hasattr(config, real) else None


def _hidden_size(config: Any) -> int:
    return int(config.hidden_size)


def propose_fields(config: Any, role: str, is_encoder_decoder: bool, ffn_width: int | None,
                   experts: bool) -> Fields:
    """The config fields of one stack."""
    def first(*names):
        return next((n for n in names if n and hasattr(config, n)), None)

    side = (role,) if is_encoder_decoder else ()
    if is_encoder_decoder and role == "decoder":
        layers = first("decoder_layers", "num_decoder_layers")
    else:
        layers = first(*(f"{s}_layers" for s in side)) or canonical_field(config, "num_hidden_layers")
    heads = first(*(f"{s}_attention_heads" for s in side)) or canonical_field(config, "num_attention_heads")
    kv = canonical_field(config, "num_key_value_heads")
    if kv is None:
        kv = first("num_kv_heads")
    if kv is not None and kv == canonical_field(config, "num_attention_heads"):
        kv = None  # an alias of the head count (multi-head attention)
    ffn = first(*(f"{s}_ffn_dim" for s in side))
    if ffn is None and ffn_width is not None:
        names = (EXPERT_FFN_FIELDS if experts else ()) + FFN_FIELDS
        present = [n for n in names if hasattr(config, n)]
        ffn = next((n for n in present if getattr(config, n) == ffn_width), None)
        if ffn is None:  # a width left unset in the config (GPT-2's n_inner = None means 4 x hidden)
            ffn = next((n for n in present if getattr(config, n) is None), None)
    head_dim = canonical_field(config, "head_dim") or "head_dim"
    return Fields(layers=layers or "num_hidden_layers", ffn=ffn, heads=heads, kv_heads=kv, head_dim=head_dim)


def _outer_attentions(block: nn.Module) -> list[str]:
    names = [p for p, m in block.named_modules() if p and "Attention" in type(m).__name__]
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


def _letter(path: str) -> str:
    leaf = path.rsplit(".", 1)[-1].lower()
    return leaf[:1]


def _full_width_norms(block: nn.Module, prefix: str, projs: dict[str, Any], widths: dict[str, int]
                      ) -> tuple[tuple[str, str], ...]:
    """Norms inside the attention whose weight spans the whole query or key output (one entry per
    head and channel, OLMo 2's ``q_norm`` / ``k_norm``); a per-head-size norm (Qwen 3) is not one."""
    out = []
    for path, module in block.named_modules():
        w = getattr(module, "weight", None)
        if not path.startswith(prefix + ".") or path in projs or not isinstance(w, nn.Parameter) or w.dim() > 2:
            continue
        which = [x for x, width in widths.items() if w.numel() == width]
        if len(which) > 1:  # as wide as both (multi-head attention): the name tells
            which = [x for x in which if _letter(path) == x]
        if len(which) == 1:
            out.append((path, which[0]))
    return tuple(out)


def _propose_attention(block: nn.Module, prefix: str, projs: list[tuple[str, Any]], hidden: int
                       ) -> Attention | None:
    inside = [(p, o) for p, o in projs if p.startswith(prefix + ".")]
    reads = [p for p, o in inside if projection_shape(o)[0] == hidden]
    writes = [p for p, o in inside if projection_shape(o)[1] == hidden and p not in reads[:3]]
    by = {_letter(p): p for p in reads}
    per_head = tuple(p for p, m in block.named_modules()
                     if p.startswith(prefix + ".") and isinstance(m, nn.Embedding))
    if len(reads) >= 3 and {"q", "k", "v"} <= set(by):
        q, k, v = by["q"], by["k"], by["v"]
        o = [p for p, obj in inside if p not in (q, k, v) and projection_shape(obj)[1] == hidden]
        if len(o) == 1:
            widths = {"q": projection_shape(dict(inside)[q])[1], "k": projection_shape(dict(inside)[k])[1]}
            return Attention(q=q, k=k, v=v, o=o[0], per_head=per_head,
                             norms=_full_width_norms(block, prefix, dict(inside), widths))
        return None
    if len(reads) == 2:  # fused qkv + o (both read the hidden state when the head width equals it)
        fused = max(reads, key=lambda p: projection_shape(dict(inside)[p])[1])
        other = [p for p in reads if p != fused]
        return Attention(qkv=fused, o=other[0], per_head=per_head)
    if len(reads) == 1 and len(writes) == 1:
        return Attention(qkv=reads[0], o=writes[0], per_head=per_head)
    return None


def propose_layout(block: nn.Module, config: Any, role: str = "decoder") -> BlockLayout:
    """A layout for ``block`` (one block of a stack of ``role``) from its modules and ``config``."""
    hidden = _hidden_size(config)
    projs = projections(block)
    attn_paths = _outer_attentions(block)
    attention = []
    used: set[str] = set()
    for prefix in attn_paths:
        a = _propose_attention(block, prefix, projs, hidden)
        if a is not None:
            attention.append(a)
            used.update(p for p in (a.q, a.k, a.v, a.qkv, a.o) if p)
        used.update(p for p, _ in projs if p.startswith(prefix + "."))
    rest = [(p, o) for p, o in projs if p not in used]
    ffn = None
    extra: list[FFN] = []
    outputs = [(p, o) for p, o in rest if projection_shape(o)[1] == hidden]
    if len(outputs) > 1:  # a square projection beside the FFN output is not its output
        outputs = [(p, o) for p, o in outputs if projection_shape(o)[0] != hidden]
    if len(outputs) == 1:
        ffn = _propose_ffn(rest, outputs[0], hidden, same_parent=False)
    elif len(outputs) > 1:  # FFNs side by side (routed + shared experts): each fed from its own module
        found = [_propose_ffn(rest, out, hidden, same_parent=True) for out in outputs]
        if all(found):
            ffn, extra = found[0], found[1:]
    is_ed = bool(getattr(config, "is_encoder_decoder", False))
    width = None
    if ffn is not None:
        width = projection_shape(dict(projs)[ffn.output])[0]
    fields = propose_fields(config, role, is_ed, width, bool(ffn and ffn.experts))
    if extra:
        taken = {fields.ffn}
        named = []
        for f in extra:
            field = _width_field(config, projection_shape(dict(projs)[f.output])[0], taken)
            if field is None:
                return BlockLayout(fields=fields, ffn=None, attention=tuple(attention))
            taken.add(field)
            named.append(replace(f, field=field))
        extra = named
    return BlockLayout(fields=fields, ffn=ffn, attention=tuple(attention), extra_ffn=tuple(extra))


#: config fields of a second FFN's width (a shared expert beside routed ones), besides FFN_FIELDS (data)
SHARED_FFN_FIELDS = ("shared_expert_intermediate_size",)


def _width_field(config: Any, width: int, taken: set[str | None]) -> str | None:
    names = SHARED_FFN_FIELDS + EXPERT_FFN_FIELDS + FFN_FIELDS
    return next((n for n in names if n not in taken and getattr(config, n, None) == width), None)


def _propose_ffn(rest: list[tuple[str, Any]], output: tuple[str, Any], hidden: int, same_parent: bool
                 ) -> FFN | None:
    """The FFN whose output projection is ``output``: the projections reading the hidden state with a
    multiple of its width (of the same kind, 2-D or expert tensors; with ``same_parent``, inside the
    same module)."""
    out_path, out_obj = output
    width = projection_shape(out_obj)[0]
    experts = isinstance(out_obj, nn.Parameter)
    parent = out_path.rpartition(".")[0]
    ins = [(p, o) for p, o in rest if p != out_path and projection_shape(o)[0] == hidden
           and projection_shape(o)[1] % width == 0 and isinstance(o, nn.Parameter) == experts
           and (not same_parent or p.rpartition(".")[0] == parent)]
    chunks = {projection_shape(o)[1] // width for _, o in ins}
    if ins and len(chunks) == 1:
        return FFN(inputs=tuple(p for p, _ in ins), output=out_path, chunks=chunks.pop(), experts=experts)
    return None


def layout_for(block: nn.Module, config: Any, role: str) -> tuple[BlockLayout, str]:
    """The layout of ``block``: the declared one for its class if any, else the proposal.

    Returns ``(layout, source)`` with source ``"declared"`` or ``"proposed"``.
    """

    declared = declared_layout(type(block).__name__, role)
    if declared is not None:
        return declared, "declared"
    return propose_layout(block, config, role), "proposed"
