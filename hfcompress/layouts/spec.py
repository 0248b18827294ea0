"""What a transformer block is made of, as data: which projections feed which, and how heads group.

A :class:`BlockLayout` names, relative to one block of a stack (``model.layers.0``), the
projections of its feed-forward network and of each attention, and the config fields that
describe their widths. Structured pruning slices tensors by it; students and layer removal
rewrite the per-stack fields by it. Projections are ``nn.Linear`` (weight ``[out, in]``),
transformers' ``Conv1D`` (weight ``[in, out]``, GPT-2) or 3-D expert tensors
(``[experts, out, in]``, the fused mixture-of-experts storage of transformers 5).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FFN:
    """A feed-forward network: ``inputs`` produce the channels, ``output`` consumes them."""

    #: projections whose output features are the FFN channels (rows of a Linear weight)
    inputs: tuple[str, ...]
    #: the projection whose input features are the channels (columns of a Linear weight)
    output: str
    #: each input holds ``chunks`` equal parts, each sliced alike (fused gate|up: 2)
    chunks: int = 1
    #: the projections are 3-D expert tensors ``[experts, out, in]`` (one channel set per expert)
    experts: bool = False
    #: config field of this FFN's width, when it is not the stack's ``Fields.ffn`` (a second FFN)
    field: str | None = None


@dataclass(frozen=True)
class Attention:
    """One attention (self or cross): separate ``q``/``k``/``v`` or one fused ``qkv``, and ``o``."""

    o: str
    q: str | None = None
    k: str | None = None
    v: str | None = None
    #: one projection producing queries, keys and values
    qkv: str | None = None
    #: order of heads inside ``qkv``: "concat" ([all q | all k | all v]) or "interleaved"
    #: ([q_h | k_h | v_h] per head, GPT-NeoX). Shapes cannot show it: only a declared layout knows.
    qkv_order: str | None = None
    #: embedding tables with one column per head (T5's relative position bias); optional per block
    per_head: tuple[str, ...] = ()
    #: norms over the whole query or key projection output (``(path, "q" | "k")``, OLMo 2's
    #: ``q_norm`` of width heads x head size): their weights are cut with the heads
    norms: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Fields:
    """Config fields of one stack (names as stored in config.json)."""

    layers: str
    ffn: str | None = None
    heads: str | None = None
    #: None: every head has its own key/value head (multi-head attention)
    kv_heads: str | None = None
    #: the field that states the head size (written when heads are removed)
    head_dim: str = "head_dim"


@dataclass(frozen=True)
class BlockLayout:
    """The prunable structure of one kind of block."""

    fields: Fields
    ffn: FFN | None = None
    attention: tuple[Attention, ...] = ()
    #: further FFNs beside ``ffn`` in the same block, each with its own ``field`` (a shared expert
    #: next to the routed experts, Qwen2-MoE)
    extra_ffn: tuple[FFN, ...] = ()

    def projections(self) -> list[str]:
        out: list[str] = []
        for ffn in (self.ffn, *self.extra_ffn):
            if ffn is not None:
                out += [*ffn.inputs, ffn.output]
        for a in self.attention:
            out += [p for p in (a.q, a.k, a.v, a.qkv, a.o) if p]
        return out
