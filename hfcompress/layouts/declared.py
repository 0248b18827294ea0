"""Declared layouts: one entry per kind of block, keyed by the block's class name (data, not code).

A block class listed here uses its declared layout; any other block gets the layout proposed
from its modules (:func:`hfcompress.layouts.discover.propose_layout`), so an unknown model whose
blocks look like a known one works too. ``tests/test_architectures.py`` proves every entry: the
proposal from a real block equals the declaration (except a fused projection's head order, which
only a declaration can state). To add an architecture, add an entry (see docs/ARCHITECTURES.md).
"""

from __future__ import annotations

from .spec import FFN, Attention, BlockLayout, Fields

_LLAMA_ATTN = Attention(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj")
_GATED = FFN(inputs=("mlp.gate_proj", "mlp.up_proj"), output="mlp.down_proj")
_DECODER = Fields(layers="num_hidden_layers", ffn="intermediate_size", heads="num_attention_heads",
                  kv_heads="num_key_value_heads")
#: Llama and every block built like it (Mistral, Qwen2/3, Gemma 2/3, ...)
LLAMA = BlockLayout(fields=_DECODER, ffn=_GATED, attention=(_LLAMA_ATTN,))
#: fused [gate | up] and [q | k | v]
PHI3 = BlockLayout(fields=_DECODER, ffn=FFN(inputs=("mlp.gate_up_proj",), output="mlp.down_proj", chunks=2),
                   attention=(Attention(qkv="self_attn.qkv_proj", qkv_order="concat", o="self_attn.o_proj"),))
#: experts stored as 3-D tensors (transformers 5), router untouched
MIXTRAL = BlockLayout(fields=_DECODER, ffn=FFN(inputs=("mlp.experts.gate_up_proj",), output="mlp.experts.down_proj",
                                               chunks=2, experts=True), attention=(_LLAMA_ATTN,))
QWEN3_MOE = BlockLayout(fields=Fields(layers="num_hidden_layers", ffn="moe_intermediate_size",
                                      heads="num_attention_heads", kv_heads="num_key_value_heads"),
                        ffn=MIXTRAL.ffn, attention=(_LLAMA_ATTN,))
GPT2 = BlockLayout(fields=Fields(layers="n_layer", ffn="n_inner", heads="n_head"),
                   ffn=FFN(inputs=("mlp.c_fc",), output="mlp.c_proj"),
                   attention=(Attention(qkv="attn.c_attn", qkv_order="concat", o="attn.c_proj"),))
GPT_NEOX = BlockLayout(fields=Fields(layers="num_hidden_layers", ffn="intermediate_size", heads="num_attention_heads"),
                       ffn=FFN(inputs=("mlp.dense_h_to_4h",), output="mlp.dense_4h_to_h"),
                       attention=(Attention(qkv="attention.query_key_value", qkv_order="interleaved",
                                            o="attention.dense"),))
FALCON = BlockLayout(fields=Fields(layers="num_hidden_layers", ffn="ffn_hidden_size", heads="num_attention_heads",
                                   kv_heads="num_kv_heads"),
                     ffn=FFN(inputs=("mlp.dense_h_to_4h",), output="mlp.dense_4h_to_h"),
                     attention=(Attention(qkv="self_attention.query_key_value", qkv_order="concat",
                                          o="self_attention.dense"),))
_OPT_ATTN = Attention(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.out_proj")
OPT = BlockLayout(fields=Fields(layers="num_hidden_layers", ffn="ffn_dim", heads="num_attention_heads"),
                  ffn=FFN(inputs=("fc1",), output="fc2"), attention=(_OPT_ATTN,))
BERT = BlockLayout(fields=Fields(layers="num_hidden_layers", ffn="intermediate_size", heads="num_attention_heads"),
                   ffn=FFN(inputs=("intermediate.dense",), output="output.dense"),
                   attention=(Attention(q="attention.self.query", k="attention.self.key", v="attention.self.value",
                                        o="attention.output.dense"),))
DISTILBERT = BlockLayout(fields=Fields(layers="n_layers", ffn="hidden_dim", heads="n_heads"),
                         ffn=FFN(inputs=("ffn.lin1",), output="ffn.lin2"),
                         attention=(Attention(q="attention.q_lin", k="attention.k_lin", v="attention.v_lin",
                                              o="attention.out_lin"),))
VIT = BlockLayout(fields=Fields(layers="num_hidden_layers", ffn="intermediate_size", heads="num_attention_heads"),
                  ffn=FFN(inputs=("mlp.fc1",), output="mlp.fc2"),
                  attention=(Attention(q="attention.q_proj", k="attention.k_proj", v="attention.v_proj",
                                       o="attention.o_proj"),))


def _t5_attn(prefix: str, bias: bool) -> Attention:
    return Attention(q=f"{prefix}.q", k=f"{prefix}.k", v=f"{prefix}.v", o=f"{prefix}.o",
                     per_head=(f"{prefix}.relative_attention_bias",) if bias else ())


T5_ENCODER = BlockLayout(fields=Fields(layers="num_layers", ffn="d_ff", heads="num_heads", head_dim="d_kv"),
                         ffn=FFN(inputs=("layer.1.DenseReluDense.wi",), output="layer.1.DenseReluDense.wo"),
                         attention=(_t5_attn("layer.0.SelfAttention", True),))
T5_DECODER = BlockLayout(fields=Fields(layers="num_decoder_layers", ffn="d_ff", heads="num_heads", head_dim="d_kv"),
                         ffn=FFN(inputs=("layer.2.DenseReluDense.wi",), output="layer.2.DenseReluDense.wo"),
                         attention=(_t5_attn("layer.0.SelfAttention", True),
                                    _t5_attn("layer.1.EncDecAttention", False)))
_CROSS = Attention(q="encoder_attn.q_proj", k="encoder_attn.k_proj", v="encoder_attn.v_proj",
                   o="encoder_attn.out_proj")
BART_ENCODER = BlockLayout(fields=Fields(layers="encoder_layers", ffn="encoder_ffn_dim",
                                         heads="encoder_attention_heads"),
                           ffn=OPT.ffn, attention=(_OPT_ATTN,))
BART_DECODER = BlockLayout(fields=Fields(layers="decoder_layers", ffn="decoder_ffn_dim",
                                         heads="decoder_attention_heads"),
                           ffn=OPT.ffn, attention=(_OPT_ATTN, _CROSS))

#: block class name -> layout. For encoder–decoder models the key is ``(class name, role)``.
DECLARED: dict[str | tuple[str, str], BlockLayout] = {
    "LlamaDecoderLayer": LLAMA,
    "MistralDecoderLayer": LLAMA,
    "Qwen2DecoderLayer": LLAMA,
    "Qwen3DecoderLayer": LLAMA,
    "Gemma2DecoderLayer": LLAMA,
    "Gemma3DecoderLayer": LLAMA,
    "Phi3DecoderLayer": PHI3,
    "MixtralDecoderLayer": MIXTRAL,
    "Qwen3MoeDecoderLayer": QWEN3_MOE,
    "GPT2Block": GPT2,
    "GPTNeoXLayer": GPT_NEOX,
    "FalconDecoderLayer": FALCON,
    "OPTDecoderLayer": OPT,
    "BertLayer": BERT,
    "RobertaLayer": BERT,
    "TransformerBlock": DISTILBERT,
    "ViTLayer": VIT,
    ("T5Block", "encoder"): T5_ENCODER,
    ("T5Block", "decoder"): T5_DECODER,
    "BartEncoderLayer": BART_ENCODER,
    "BartDecoderLayer": BART_DECODER,
    "WhisperEncoderLayer": BART_ENCODER,
    "WhisperDecoderLayer": BART_DECODER,
}


def declared_layout(block_class: str, role: str) -> BlockLayout | None:
    """The declared layout of a block class (in a stack of ``role``), or None."""
    return DECLARED.get((block_class, role)) or DECLARED.get(block_class)
