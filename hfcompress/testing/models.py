"""Tiny random models of every family, for fast plumbing tests (never quality claims).

::

    from hfcompress.testing.models import save_tiny
    folder = save_tiny("llama", tmp_path / "tiny-llama")   # config.json + model.safetensors (+ tokenizer)

:data:`ARCHITECTURES` is the architecture matrix (issue 13), built from transformers' own config classes:
``matrix_model("gemma3_text")`` and ``matrix_inputs("gemma3_text")`` for the tiny models of
``tests/test_architectures.py``; the calibration-layer tests use the same models::

    from hfcompress.testing.models import ARCHS, tiny_arch, tiny_inputs
    model = tiny_arch("gemma3_text")          # 6 blocks: five sliding-window layers, then a global one
    batch = tiny_inputs(model, samples=3, seq_len=16)   # token ids, or a dict (pixels, audio)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: family -> (config class name, model class name, config kwargs)
TINY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, tie_word_embeddings=False)),
    "bert": ("BertConfig", "BertForSequenceClassification", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=256, max_position_embeddings=128, num_labels=2)),
    "bert-encoder": ("BertConfig", "BertModel", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=256, max_position_embeddings=128)),
    "t5": ("T5Config", "T5ForConditionalGeneration", dict(
        d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=256,
        decoder_start_token_id=0)),
    "vit": ("ViTConfig", "ViTForImageClassification", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, num_labels=3)),
    "whisper": ("WhisperConfig", "WhisperForConditionalGeneration", dict(
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256, num_mel_bins=16, max_source_positions=32,
        max_target_positions=32, decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, bos_token_id=1)),
}


_DEC = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, tie_word_embeddings=False)
_ENC = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256,
            max_position_embeddings=128)

#: The architecture matrix (issue 13): name -> (config class, model class, config kwargs, family).
#: Every config is built with transformers' own config class; each model builds in well under 1 s.
#: Families: decoder / encoder / encoder-decoder / vision / speech.
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(_DEC, head_dim=16), "decoder"),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(_DEC, head_dim=16, sliding_window=16), "decoder"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(_DEC), "decoder"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(_DEC, head_dim=16), "decoder"),
    # multi-query attention (one K/V head), alternating sliding-window / global layers
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(_DEC, num_hidden_layers=4, num_key_value_heads=1,
                                                         head_dim=16, sliding_window=16, query_pre_attn_scalar=16),
               "decoder"),
    # five sliding-window layers then one global layer (Gemma 3's pattern), two rope bases
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        _DEC, hidden_size=32, intermediate_size=64, num_hidden_layers=6, head_dim=8, sliding_window=16,
        query_pre_attn_scalar=8, sliding_window_pattern=6), "decoder"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(_DEC, pad_token_id=0, bos_token_id=1, eos_token_id=2), "decoder"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_inner=128, n_layer=2, n_head=4, vocab_size=256,
                                                   n_positions=128, tie_word_embeddings=False, bos_token_id=1,
                                                   eos_token_id=2), "decoder"),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256,
        max_position_embeddings=128, tie_word_embeddings=False), "decoder"),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                                num_attention_heads=4, vocab_size=256, max_position_embeddings=128,
                                                word_embed_proj_dim=64, pad_token_id=0), "decoder"),
    # multi-query attention in one fused query_key_value projection
    "falcon": ("FalconConfig", "FalconForCausalLM", dict(
        hidden_size=64, ffn_hidden_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256,
        multi_query=True, new_decoder_architecture=False, parallel_attn=True, alibi=False, bias=False,
        max_position_embeddings=128, tie_word_embeddings=False), "decoder"),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(_DEC, head_dim=16, num_local_experts=4,
                                                            num_experts_per_tok=2), "decoder"),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(
        _DEC, moe_intermediate_size=64, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True), "decoder"),
    # more decoders of the Hub, each through the generic layout proposal (no declared layout)
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(_DEC, head_dim=16), "decoder"),
    # logits / residual / attention multipliers in the config
    "granite": ("GraniteConfig", "GraniteForCausalLM", dict(_DEC, residual_multiplier=0.5, logits_scaling=2.0),
                "decoder"),
    # biased projections, plain (non-gated) MLP c_fc -> c_proj, sliding window
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict(_DEC, sliding_window=16), "decoder"),
    # parallel attention + MLP on one LayerNorm, logit scale
    "cohere": ("CohereConfig", "CohereForCausalLM", dict(_DEC), "decoder"),
    # per-layer list: rotary in some layers only (no_rope_layers)
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", dict(_DEC, num_hidden_layers=4, no_rope_layer_interval=2,
                                                            pad_token_id=0, bos_token_id=1, eos_token_id=2),
                "decoder"),
    # partial rotary, parallel attention + fc1/fc2 MLP, output projection named `dense`
    "phi": ("PhiConfig", "PhiForCausalLM", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256,
        max_position_embeddings=128, partial_rotary_factor=0.5, tie_word_embeddings=False), "decoder"),
    # RMSNorm over the whole query / key projections (q_norm, k_norm: heads x head size)
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(_DEC, pad_token_id=0, bos_token_id=1, eos_token_id=2),
              "decoder"),
    # routed experts (fused 3-D) beside a shared expert with its own sigmoid gate (Qwen1.5-MoE / Qwen2-MoE)
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", dict(
        _DEC, moe_intermediate_size=48, shared_expert_intermediate_size=96, num_experts=4, num_experts_per_tok=2),
        "decoder"),
    "bert": ("BertConfig", "BertForMaskedLM", dict(_ENC), "encoder"),
    "roberta": ("RobertaConfig", "RobertaForMaskedLM", dict(_ENC, max_position_embeddings=130, pad_token_id=0),
                "encoder"),
    "distilbert": ("DistilBertConfig", "DistilBertForMaskedLM", dict(
        dim=64, hidden_dim=128, n_layers=2, n_heads=4, vocab_size=256, max_position_embeddings=128), "encoder"),
    "t5": ("T5Config", "T5ForConditionalGeneration", dict(
        d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=256,
        decoder_start_token_id=0, relative_attention_num_buckets=8), "encoder-decoder"),
    "bart": ("BartConfig", "BartForConditionalGeneration", dict(
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2), "encoder-decoder"),
    "vit": ("ViTConfig", "ViTForImageClassification", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, num_labels=3), "vision"),
    "whisper": ("WhisperConfig", "WhisperForConditionalGeneration", dict(
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256, num_mel_bins=16, max_source_positions=32,
        max_target_positions=32, decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, bos_token_id=1),
        "speech"),
}


def matrix_model(name: str, seed: int = 0) -> Any:
    """A tiny randomly initialised model of the matrix architecture ``name`` (see :data:`ARCHITECTURES`)."""
    import transformers

    cfg_name, model_name, kwargs, _ = ARCHITECTURES[name]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_name)(**kwargs)
    config.architectures = [model_name]
    return getattr(transformers, model_name)(config).eval()


def matrix_inputs(name: str, batch: int = 2, seq: int = 8, seed: int = 0) -> dict[str, Any]:
    """Deterministic forward inputs for a matrix model (token ids, pixels or log-mel features)."""
    _, _, kwargs, family = ARCHITECTURES[name]
    g = torch.Generator().manual_seed(seed)
    if family == "vision":
        size = kwargs["image_size"]
        return {"pixel_values": torch.randn(batch, kwargs.get("num_channels", 3), size, size, generator=g)}
    if family == "speech":
        feats = torch.randn(batch, kwargs["num_mel_bins"], 2 * kwargs["max_source_positions"], generator=g)
        return {"input_features": feats, "decoder_input_ids": torch.randint(4, 200, (batch, 4), generator=g)}
    ids = torch.randint(4, 200, (batch, seq), generator=g)
    out = {"input_ids": ids}
    if family == "encoder-decoder":
        out["decoder_input_ids"] = torch.randint(4, 200, (batch, seq // 2), generator=g)
    return out


#: the architectures the calibration-layer tests run on (tests/test_calibration.py): issue 13's list,
#: built from :data:`ARCHITECTURES` (the matrix adds more decoders)
ARCHS: tuple[str, ...] = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox",
                          "opt", "falcon", "mixtral", "qwen3_moe", "bert", "roberta", "distilbert", "t5", "bart",
                          "vit", "whisper")


def tiny_arch(name: str, seed: int = 0) -> Any:
    """A tiny random model of the matrix architecture ``name``, in eval mode, float32 (:func:`matrix_model`)."""
    return matrix_model(name, seed).float().eval()


def tiny_inputs(model: Any, samples: int = 3, seq_len: int = 16, seed: int = 0) -> Any:
    """Calibration inputs for ``model``: token ids, or a dict of model inputs for vision / speech."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    main = getattr(model, "main_input_name", "input_ids")
    if main == "pixel_values":
        return {"pixel_values": torch.randn(samples, cfg.num_channels, cfg.image_size, cfg.image_size, generator=g)}
    if main == "input_features":
        feats = torch.randn(samples, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g)
        dec = torch.randint(3, cfg.vocab_size, (samples, seq_len), generator=g)
        return {"input_features": feats, "decoder_input_ids": dec}
    return torch.randint(3, cfg.vocab_size, (samples, seq_len), generator=g)


def tiny_model(family: str, seed: int = 0) -> Any:
    """A tiny randomly initialised model of ``family`` (see :data:`TINY`)."""
    import transformers

    cfg_name, model_name, kwargs = TINY[family]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_name)(**kwargs)
    config.architectures = [model_name]
    return getattr(transformers, model_name)(config).eval()


def tiny_tokenizer(vocab_size: int = 256, mask_token: bool = False) -> Any:
    """A character-level tokenizer (one token per printable character; built locally, no download).

    ``mask_token=True`` adds ``<mask>`` (id 4) for masked language models, one character fewer.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # Characters map to tokens by code point so any text tokenizes deterministically.
    special = ["<pad>", "<s>", "</s>", "<unk>"] + (["<mask>"] if mask_token else [])
    chars = [chr(c) for c in range(32, 32 + vocab_size - len(special))]
    vocab = {**{t: i for i, t in enumerate(special)}, **{ch: i + len(special) for i, ch in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    extra = {"mask_token": "<mask>"} if mask_token else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", **extra)


def save_tiny(family: str, folder: str | Path, seed: int = 0, with_tokenizer: bool = True) -> Path:
    """Save a tiny model (and, for text families, a tiny tokenizer) to ``folder``."""
    folder = Path(folder)
    model = tiny_model(family, seed)
    model.save_pretrained(folder)
    if with_tokenizer and family in ("llama", "bert", "bert-encoder", "t5"):
        tiny_tokenizer(model.config.vocab_size).save_pretrained(folder)
    return folder


def write_random_safetensors(path: str | Path, nbytes: int) -> None:
    """A valid safetensors file holding one uint8 tensor of ``nbytes`` random bytes (big uploads)."""
    import json
    import os
    import struct

    header = json.dumps({"w": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        left = nbytes
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
