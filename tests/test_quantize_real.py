"""Quantization on the real models (``-m real``): MiniLM round-trips with embeddings close to fp32,
SmolLM2 NF4 saves / reloads with a plain from_pretrained and still answers sensibly."""

from __future__ import annotations

import pytest
import torch

import hfcompress  # noqa: F401 - registers the hfcompress-quanto format

pytestmark = pytest.mark.real

SENTENCES = ["a gripping, beautifully shot film", "the plot is thin and the jokes fall flat",
             "an actor at the top of his game", "i wanted my two hours back"]


@torch.no_grad()
def _embed(model, tok):
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


@pytest.mark.parametrize("method", ["quanto-int8", "bnb-nf4"])
def test_minilm_round_trip_and_quality(minilm_path, tmp_path, method):
    from transformers import AutoModel

    from hfcompress.loading import load
    from hfcompress.pipeline import StageContext, run_stage
    from hfcompress.quantize import BnbNF4Config, QuantoInt8Config
    from hfcompress.quantize.bnb import harden_bnb4

    bundle = load(minilm_path, dtype="float32")
    ref = _embed(bundle.model, bundle.tokenizer)
    cfg = {"quanto-int8": QuantoInt8Config(), "bnb-nf4": BnbNF4Config()}[method]
    s = run_stage(bundle, cfg, StageContext(work_dir=tmp_path, progress=False))["summary"]
    e = _embed(bundle.model, bundle.tokenizer)
    cos = (e * ref).sum(-1)
    assert cos.min() > {"quanto-int8": 0.99, "bnb-nf4": 0.9}[method]
    bundle.model.save_pretrained(tmp_path / "out")
    r = AutoModel.from_pretrained(tmp_path / "out")
    harden_bnb4(r)
    assert torch.equal(_embed(r, bundle.tokenizer), e)
    assert s["bits_per_weight_quantized_linears"] < 9


def test_smollm2_nf4_reload_generates(smollm2_path, tmp_path):
    from transformers import AutoModelForCausalLM

    from hfcompress.loading import load
    from hfcompress.pipeline import StageContext, run_stage
    from hfcompress.quantize import BnbNF4Config

    bundle = load(smollm2_path, dtype="float32")
    s = run_stage(bundle, BnbNF4Config(), StageContext(work_dir=tmp_path, progress=False))["summary"]
    assert s["quantized_linear_ratio_vs_fp32"] <= 0.15
    assert s["disk_bytes"] / (134.5e6 * 4) <= 0.33
    bundle.model.save_pretrained(tmp_path / "out")
    r = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ids = bundle.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = r.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in bundle.tokenizer.decode(out[0, ids.shape[1]:])
