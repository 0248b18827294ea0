"""Pruning on the real SmolLM2-135M-Instruct (``-m real``): perplexity stays sane, structured rebuild reloads.

Kept short: 8 calibration windows of 256 tokens, 4,096 evaluation tokens (the benchmark uses
32 x 512 and 16,384; see benchmarks/results/prune_*.md).
"""

from __future__ import annotations

import pytest
import torch

from hfcompress.assets import SMOLLM2, asset_path
from hfcompress.data import local_datasets_dir

MODEL = asset_path(SMOLLM2)
DATA = local_datasets_dir()

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not MODEL.is_dir() or not DATA.is_dir(), reason="real assets not built")]


@pytest.fixture(scope="module")
def eval_ids():
    from transformers import AutoTokenizer

    from hfcompress.data import load_texts
    from hfcompress.evaluate.perplexity import tokenize_corpus

    tok = AutoTokenizer.from_pretrained(MODEL)
    texts = load_texts(str(DATA / "Salesforce/wikitext"), "wikitext-2-raw-v1", "test")
    return tokenize_corpus(tok, texts, max_tokens=4096)


def _ppl(model, ids) -> float:
    from hfcompress.evaluate.perplexity import perplexity_of_ids

    return perplexity_of_ids(model, ids, seq_len=512)["perplexity"]


def _cal():
    from hfcompress.config import CalibrationConfig

    return CalibrationConfig(dataset=str(DATA / "fixtures/enwiki-sample"), samples=8, seq_len=256)


def test_wanda_50_and_magnitude_sanity(eval_ids):
    import hfcompress
    from hfcompress.prune import MagnitudeConfig, WandaConfig

    torch.set_num_threads(2)
    b = hfcompress.load(str(MODEL), dtype="float32")
    hfcompress.prune(b, WandaConfig(sparsity=0.5, calibration=_cal()))
    wanda = _ppl(b.model, eval_ids)
    assert wanda < 120
    b = hfcompress.load(str(MODEL), dtype="float32")
    hfcompress.prune(b, MagnitudeConfig(sparsity=0.5))
    magnitude = _ppl(b.model, eval_ids)
    assert magnitude > 1.5 * wanda  # calibration-free magnitude is clearly worse


def test_sparsegpt_24_sparse_format_roundtrip(eval_ids, tmp_path):
    from transformers import AutoModelForCausalLM

    import hfcompress
    from hfcompress.pipeline import save_bundle
    from hfcompress.prune import SparseGPTConfig

    torch.set_num_threads(2)
    b = hfcompress.load(str(MODEL), dtype="float32")
    # the first 6 of 30 blocks keep the test short; the benchmark prunes them all
    hfcompress.prune(b, SparseGPTConfig(pattern="2:4", sparse_format=True, calibration=_cal(),
                                        targets=["model.layers.[0-5].*"]))
    assert _ppl(b.model, eval_ids[:2048]) < 200
    save_bundle(b, tmp_path)
    re = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    ref = b.model.state_dict()
    assert all(torch.equal(v, re.state_dict()[k]) for k, v in ref.items())
    assert (tmp_path / "model.safetensors").stat().st_size < (MODEL / "model.safetensors").stat().st_size


def test_structured_ffn_and_heads_reload(tmp_path):
    from transformers import AutoModelForCausalLM

    import hfcompress
    from hfcompress.prune import MagnitudeConfig

    torch.set_num_threads(2)
    for name, cfg, check in (
        ("ffn", MagnitudeConfig(structured="ffn", sparsity=0.3), lambda c: c.intermediate_size == 1075),
        ("heads", MagnitudeConfig(structured="heads", sparsity=0.33),
         lambda c: (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (6, 2, 64)),
    ):
        b = hfcompress.load(str(MODEL), dtype="float32")
        before = sum(p.numel() for p in b.model.parameters())
        hfcompress.prune(b, cfg)
        assert check(b.model.config)
        b.model.save_pretrained(tmp_path / name)
        re = AutoModelForCausalLM.from_pretrained(tmp_path / name).eval()
        assert sum(p.numel() for p in re.parameters()) < before
        x = torch.randint(100, 1000, (1, 32))
        with torch.no_grad():
            assert torch.equal(b.model(x).logits, re(x).logits)
        out = re.generate(x[:, :8], max_new_tokens=5, do_sample=False)
        assert out.shape[1] == 13
