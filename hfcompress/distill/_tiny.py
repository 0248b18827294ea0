"""Tiny random models, a character tokenizer and local datasets for the distill tests."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"
TEXTS = [
    "the quick brown fox jumps over the lazy dog. " * 4,
    "a stitch in time saves nine, and a penny saved is a penny earned. " * 3,
    "to be or not to be, that is the question; whether tis nobler in the mind. " * 3,
    "all that glitters is not gold; often have you heard that told. " * 3,
] * 6


def tiny_tokenizer(chars: str = CHARS) -> Any:
    """A character-level fast tokenizer (pad/eos/bos/unk specials)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(chars)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def tiny_llama(vocab_size: int, *, hidden: int = 32, layers: int = 4, heads: int = 4, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                      max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.config.architectures = ["LlamaForCausalLM"]
    return model


def tiny_bert_classifier(vocab_size: int, *, hidden: int = 32, layers: int = 4, labels: int = 2,
                         seed: int = 0) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                     num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=256,
                     num_labels=labels, pad_token_id=0)
    model = BertForSequenceClassification(cfg)
    model.config.architectures = ["BertForSequenceClassification"]
    return model


def save_model(model: Any, tokenizer: Any, folder: str | Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def text_dataset(folder: str | Path, texts: list[str] | None = None, labels: list[int] | None = None,
                 split: str = "train") -> Path:
    """A local dataset folder laid out like a Hub dataset repo (``data/<split>-....parquet``)."""
    import datasets

    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    texts = texts or TEXTS
    data: dict[str, list] = {"text": texts}
    if labels is not None:
        data["label"] = labels
    datasets.Dataset.from_dict(data).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder
