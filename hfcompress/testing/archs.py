"""Tiny random models of common Hub architectures, built from transformers' own config classes.

For tests of the calibration layer and the methods on it (no download, a few MB each)::

    from hfcompress.testing.archs import ARCHS, tiny_arch, tiny_inputs
    model = tiny_arch("gemma3_text")          # 3 blocks: sliding, sliding, global attention
    batch = tiny_inputs(model, samples=3, seq_len=16)   # token ids, or a dict (pixels, audio)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_DEC = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)


def _cfg(name: str, **kw: Any) -> Any:
    import transformers

    return getattr(transformers, name)(**kw)


def _causal(cfg: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(cfg)


def _masked(cfg: Any) -> Any:
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_config(cfg)


def _seq2seq(cfg: Any) -> Any:
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_config(cfg)


#: model_type -> builder of a tiny random model (eval mode)
ARCHS: dict[str, Callable[[], Any]] = {
    "llama": lambda: _causal(_cfg("LlamaConfig", **_DEC)),
    "mistral": lambda: _causal(_cfg("MistralConfig", **_DEC, sliding_window=8)),
    "qwen2": lambda: _causal(_cfg("Qwen2Config", **_DEC)),
    "qwen3": lambda: _causal(_cfg("Qwen3Config", **_DEC, head_dim=16)),
    "gemma2": lambda: _causal(_cfg("Gemma2Config", **_DEC, head_dim=16, sliding_window=4)),
    "gemma3_text": lambda: _causal(_cfg("Gemma3TextConfig", **{**_DEC, "num_hidden_layers": 3}, head_dim=16,
                                        sliding_window=4,
                                        layer_types=["sliding_attention", "sliding_attention", "full_attention"])),
    "phi3": lambda: _causal(_cfg("Phi3Config", **_DEC, pad_token_id=0)),
    "gpt2": lambda: _causal(_cfg("GPT2Config", vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64)),
    "gpt_neox": lambda: _causal(_cfg("GPTNeoXConfig", vocab_size=128, hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)),
    "opt": lambda: _causal(_cfg("OPTConfig", vocab_size=128, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=64)),
    "falcon": lambda: _causal(_cfg("FalconConfig", vocab_size=128, hidden_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, new_decoder_architecture=True, num_kv_heads=2)),
    "mixtral": lambda: _causal(_cfg("MixtralConfig", **_DEC, num_local_experts=4, num_experts_per_tok=2)),
    "qwen3_moe": lambda: _causal(_cfg("Qwen3MoeConfig", **_DEC, head_dim=16, num_experts=4, num_experts_per_tok=2,
                                      moe_intermediate_size=32, decoder_sparse_step=1)),
    "bert": lambda: _masked(_cfg("BertConfig", vocab_size=128, hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)),
    "roberta": lambda: _masked(_cfg("RobertaConfig", vocab_size=128, hidden_size=64, intermediate_size=128,
                                    num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=80,
                                    pad_token_id=1)),
    "distilbert": lambda: _masked(_cfg("DistilBertConfig", vocab_size=128, dim=64, hidden_dim=128, n_layers=2,
                                       n_heads=4, max_position_embeddings=64)),
    "t5": lambda: _seq2seq(_cfg("T5Config", vocab_size=128, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0)),
    "bart": lambda: _seq2seq(_cfg("BartConfig", vocab_size=128, d_model=64, encoder_layers=2, decoder_layers=2,
                                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                                  decoder_ffn_dim=128, max_position_embeddings=64)),
    "vit": lambda: _vit(),
    "whisper": lambda: _whisper(),
}


def _vit() -> Any:
    from transformers import ViTForImageClassification

    return ViTForImageClassification(_cfg("ViTConfig", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=128, image_size=32, patch_size=8, num_labels=3))


def _whisper() -> Any:
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration(_cfg(
        "WhisperConfig", vocab_size=128, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=8,
        max_source_positions=16, max_target_positions=64, decoder_start_token_id=1, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, suppress_tokens=None, begin_suppress_tokens=None))


def tiny_arch(model_type: str, seed: int = 0) -> Any:
    """A tiny random model of ``model_type`` (a key of :data:`ARCHS`), in eval mode, float32."""
    torch.manual_seed(seed)
    model = ARCHS[model_type]()
    return model.float().eval()


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
