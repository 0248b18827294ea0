"""Recovery fine-tuning (LoRA / QLoRA): masks survive the merge, 4-bit merge re-quantizes."""

from __future__ import annotations

import pytest
import torch

from hfcompress.distill import LoraFinetuneConfig, QLoraFinetuneConfig, finetune
from hfcompress.distill._tiny import save_model, text_dataset, tiny_llama, tiny_tokenizer
from hfcompress.distill.recovery import linear_layers, sparsity

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return text_dataset(tmp_path_factory.mktemp("recovery-ds") / "ds")


def _prune_half(model):
    """Zero the smallest half of every block linear weight (unstructured 50%)."""
    with torch.no_grad():
        for m in linear_layers(model).values():
            w = m.weight
            k = w.numel() // 2
            thresh = w.abs().flatten().kthvalue(k).values
            w.mul_((w.abs() > thresh).to(w.dtype))


def _training(steps=4):
    return {"max_steps": steps, "logging_steps": 1, "learning_rate": 5e-3, "disable_tqdm": True}


def test_lora_merge_keeps_zero_mask_exactly(tok, ds):
    model = tiny_llama(len(tok), layers=2, seed=3)
    _prune_half(model)
    zeros_before = {n: (m.weight == 0).clone() for n, m in linear_layers(model).items()}
    dense_before = {n: m.weight.detach().clone() for n, m in linear_layers(model).items()}
    assert sparsity(model)["sparsity"] == pytest.approx(0.5, abs=1e-3)
    from hfcompress.pipeline import StageContext, as_bundle, run_stage

    bundle = as_bundle(model, tok, task="causal-lm")
    cfg = LoraFinetuneConfig(r=4, data={"dataset": str(ds), "seq_len": 32}, training=_training(),
                             lora_dropout=0.0)
    record = run_stage(bundle, cfg, StageContext(progress=False))
    s = record["summary"]
    merged = bundle.model
    assert type(merged).__name__ == "LlamaForCausalLM" and not any("lora" in n for n, _ in merged.named_modules())
    assert s["zeros_preserved"] is True
    assert s["sparsity_before"] == s["sparsity_after"]
    changed = False
    for n, m in linear_layers(merged).items():
        assert torch.all(m.weight[zeros_before[n]] == 0)
        assert int((m.weight == 0).sum()) == int(zeros_before[n].sum())
        changed |= not torch.equal(m.weight, dense_before[n])
    assert changed  # the adapters were trained and merged
    assert s["merged_layers"] == s["masked_layers"] > 0
    assert {"loss", "hard_loss"} <= set(s["last_log"])


def test_lora_without_mask_loses_zeros(tok, ds):
    """Control: without re-applying the mask, the merge fills the zeros (so the mask step matters)."""
    model = tiny_llama(len(tok), layers=2, seed=3)
    _prune_half(model)
    out = finetune(model, LoraFinetuneConfig(r=4, keep_sparsity=False, lora_dropout=0.0,
                                             data={"dataset": str(ds), "seq_len": 32}, training=_training(2)),
                   tokenizer=tok)
    assert sparsity(out)["sparsity"] < 0.4


def test_lora_kd_recovery_from_input_teacher(tmp_path, tok, ds):
    import hfcompress
    from hfcompress.recipes import Recipe

    dense = tiny_llama(len(tok), layers=2, seed=4)
    folder = save_model(dense, tok, tmp_path / "dense")
    bundle = hfcompress.load(str(folder))
    _prune_half(bundle.model)
    recipe = Recipe(stages=[LoraFinetuneConfig(r=4, loss="kd", data={"dataset": str(ds), "seq_len": 32},
                                               training=_training(3))])
    result = hfcompress.compress(bundle, recipe, output=tmp_path / "out", progress=False)
    s = result.report["stages"][0]["summary"]
    assert s["loss"] == "kd" and "kd_loss" in s["last_log"] and s["zeros_preserved"] is True
    assert result.report["stages"][0]["family"] == "finetune"
    reloaded = hfcompress.load(str(tmp_path / "out"))
    assert sparsity(reloaded.model)["sparsity"] == s["sparsity_before"]["sparsity"]


def test_qlora_on_4bit_merges_by_requantizing(tok, ds):
    pytest.importorskip("bitsandbytes")
    model = tiny_llama(len(tok), hidden=64, layers=2, seed=5)
    _prune_half(model)
    from hfcompress.pipeline import StageContext, as_bundle, run_stage

    bundle = as_bundle(model, tok, task="causal-lm")
    cfg = QLoraFinetuneConfig(r=4, lora_dropout=0.0, data={"dataset": str(ds), "seq_len": 32}, training=_training(2))
    s = run_stage(bundle, cfg, StageContext(progress=False))["summary"]
    merged = bundle.model
    assert any(type(m).__name__ == "Linear4bit" for m in merged.modules())
    assert s["requantized_layers"] == s["merged_layers"] > 0
    assert "re-quantized" in s["merge"] and "4-bit" in s["base"]
    assert s["zeros_preserved"] is True
    # recorded zeros stay zero; NF4 rounding may turn a few tiny weights into extra zeros
    assert s["sparsity_after"]["zeros"] >= s["sparsity_before"]["zeros"]
    ids = tok(["hello"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(merged(ids).logits).all()
