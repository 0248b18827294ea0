"""Tiny random models of every family, for fast plumbing tests (never quality claims).

::

    from hfcompress.testing.models import save_tiny
    folder = save_tiny("llama", tmp_path / "tiny-llama")   # config.json + model.safetensors (+ tokenizer)
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


def tiny_model(family: str, seed: int = 0) -> Any:
    """A tiny randomly initialised model of ``family`` (see :data:`TINY`)."""
    import transformers

    cfg_name, model_name, kwargs = TINY[family]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_name)(**kwargs)
    config.architectures = [model_name]
    return getattr(transformers, model_name)(config).eval()


def tiny_tokenizer(vocab_size: int = 256) -> Any:
    """A character-level tokenizer (one token per printable character; built locally, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # Characters map to tokens by code point so any text tokenizes deterministically.
    chars = [chr(c) for c in range(32, 32 + vocab_size - 4)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{ch: i + 4 for i, ch in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


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
