"""hfcompress.load: every model family, task detection, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

import hfcompress
from hfcompress.errors import ModelLoadError, UnsupportedError, UsageError

EXPECTED = {
    "llama": ("causal-lm", "LlamaForCausalLM", True),
    "bert": ("sequence-classification", "BertForSequenceClassification", True),
    "bert-encoder": ("feature-extraction", "BertModel", True),
    "t5": ("seq2seq-lm", "T5ForConditionalGeneration", True),
    "vit": ("image-classification", "ViTForImageClassification", False),
    "whisper": ("speech-seq2seq", "WhisperForConditionalGeneration", False),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_load_each_family(tiny_models, family):
    task, cls_name, has_tokenizer = EXPECTED[family]
    bundle = hfcompress.load(tiny_models[family])
    assert bundle.task == task
    assert type(bundle.model).__name__ == cls_name
    assert (bundle.tokenizer is not None) == has_tokenizer
    assert not bundle.model.training
    assert bundle.source.repo_id is None and bundle.source.local_name == family
    assert bundle.path == tiny_models[family].resolve()


def test_explicit_task_and_dtype(tiny_models):
    bundle = hfcompress.load(tiny_models["bert-encoder"], task="masked-lm", dtype="bfloat16")
    assert type(bundle.model).__name__ == "BertForMaskedLM"
    assert bundle.model.dtype == torch.bfloat16


def test_llama_forward_matches_saved(tiny_models):
    from transformers import AutoModelForCausalLM

    bundle = hfcompress.load(tiny_models["llama"])
    ref = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    ids = torch.tensor([[1, 5, 9, 12]])
    assert torch.equal(bundle.model(ids).logits, ref(ids).logits)


@pytest.mark.parametrize(
    "make, kwargs, error, text",
    [
        (lambda p: p / "missing", {}, ModelLoadError, "does not exist"),
        (lambda p: p, {}, ModelLoadError, "not a model folder (no config.json)"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", {}, ModelLoadError, "is a file"),
        (lambda p: p, {"dtype": "int3"}, UsageError, "dtype 'int3' is not supported"),
        (lambda p: p, {"task": "telepathy"}, UsageError, "unknown task 'telepathy'"),
    ],
)
def test_load_errors(tmp_path, make, kwargs, error, text):
    with pytest.raises(error, match=None) as info:
        hfcompress.load(make(tmp_path), **kwargs)
    assert text in str(info.value)
    assert "\n" not in str(info.value)


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-arch", "architectures": ["X"]}))
    with pytest.raises(UnsupportedError, match="unsupported architecture"):
        hfcompress.load(tmp_path)


def test_revision_refused_for_local_folder(tiny_models):
    with pytest.raises(UsageError, match="--revision"):
        hfcompress.load(tiny_models["llama"], revision="main")


def test_pickle_needs_opt_in(tmp_path):
    from hfcompress.testing.models import tiny_model

    model = tiny_model("llama")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle checkpoints need an explicit opt-in"):
        hfcompress.load(tmp_path)
    assert hfcompress.load(tmp_path, allow_pickle=True).task == "causal-lm"


def test_trust_remote_code_default_off(tiny_models, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    hfcompress.load(tiny_models["llama"])
    assert seen["trust_remote_code"] is False
    assert seen["use_safetensors"] is True


@pytest.mark.real
def test_real_models_load(smollm2_path, minilm_path):
    smol = hfcompress.load(smollm2_path, dtype="float32")
    assert smol.task == "causal-lm" and smol.model.config.num_hidden_layers == 30
    ids = smol.tokenizer("The capital of France is", return_tensors="pt")
    out = smol.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in smol.tokenizer.decode(out[0, ids.input_ids.shape[1]:])
    mini = hfcompress.load(minilm_path)
    assert mini.task == "feature-extraction" and mini.model.config.hidden_size == 384
