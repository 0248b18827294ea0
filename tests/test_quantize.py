"""Quantization on tiny random models: every method round-trips (quantize -> save -> reload -> same
outputs), summaries account sizes, sparsity survives, misuse fails early with one-line errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import hfcompress  # noqa: F401 - registers the hfcompress-quanto format with transformers
from hfcompress.config import CalibrationConfig
from hfcompress.errors import UnsupportedError, UsageError
from hfcompress.pipeline import StageContext, as_bundle, run_stage
from hfcompress.quantize import (
    BnbFP4Config,
    BnbInt8Config,
    BnbNF4Config,
    CalibratedInt4Config,
    CalibratedNF4Config,
    GPTQOptimumConfig,
    QuantoFloat8Config,
    QuantoInt2Config,
    QuantoInt4Config,
    QuantoInt8Config,
    quantize,
)
from hfcompress.quantize.base import dequantized_weight, sparsity_of
from hfcompress.quantize.bnb import harden_bnb4

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Quantization maps full precision weights onto a small grid of values.",
    "A normal float codebook places its levels at the quantiles of a Gaussian.",
    "Calibration text gives the activations that decide which errors matter.",
    "Pruning sets weights to zero and quantization keeps those zeros exact.",
] * 40
VOCAB = 300


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["[UNK]", "[PAD]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> CalibrationConfig:
    folder = tmp_path_factory.mktemp("calib")
    (folder / "train.txt").write_text("\n".join(TEXTS) + "\n")
    return CalibrationConfig(dataset=str(folder), samples=4, seq_len=32)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                        max_position_embeddings=128)).eval()


def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=128)).eval()


def tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(d_model=64, d_ff=128, num_layers=1, num_decoder_layers=1,
                                               num_heads=4, d_kv=16, vocab_size=VOCAB,
                                               decoder_start_token_id=0)).eval()


FAMILIES = {"llama": tiny_llama, "bert": tiny_bert, "t5": tiny_t5}
IDS = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def outputs(model):
    if model.config.is_encoder_decoder:
        return model(input_ids=IDS, decoder_input_ids=IDS[:, :4]).logits
    out = model(input_ids=IDS, attention_mask=torch.ones_like(IDS))
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def reload(model, folder: Path):
    model.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" in cfg
    new = type(model).from_pretrained(folder)  # a plain from_pretrained, as a user would
    harden_bnb4(new)  # same bnb CPU code path as the in-memory model (see harden_bnb4)
    return new


def configs(calibration):
    return {
        "bnb-int8": BnbInt8Config(),
        "bnb-nf4": BnbNF4Config(),
        "bnb-fp4-dq": BnbFP4Config(double_quant=True),
        "quanto-int8": QuantoInt8Config(),
        "quanto-int4": QuantoInt4Config(group_size=32),
        "quanto-int2": QuantoInt2Config(group_size=32),
        "quanto-float8": QuantoFloat8Config(),
        "calibrated-nf4": CalibratedNF4Config(calibration=calibration),
        "calibrated-int4": CalibratedInt4Config(calibration=calibration, group_size=32),
    }


CASES = [(fam, m) for fam in ("llama", "bert") for m in
         ("bnb-int8", "bnb-nf4", "bnb-fp4-dq", "quanto-int8", "quanto-int4", "quanto-int2",
          "calibrated-nf4", "calibrated-int4")] + [("llama", "quanto-float8"), ("t5", "bnb-nf4"), ("t5", "bnb-int8"), ("t5", "quanto-int4")]


@pytest.mark.parametrize("family,method", CASES)
def test_round_trip_exact(family, method, tokenizer, calibration, tmp_path):
    base = FAMILIES[family]()
    ref = outputs(base)
    bundle = as_bundle(copy.deepcopy(base), tokenizer)
    rec = run_stage(bundle, configs(calibration)[method], StageContext(work_dir=tmp_path, progress=False))
    s = rec["summary"]
    q = bundle.model
    before = outputs(q)
    assert not torch.equal(before, ref)  # it did quantize
    rel = (before - ref).norm() / ref.norm()
    assert rel < {"quanto-int2": 1.5}.get(method, 0.5)
    after = outputs(reload(q, tmp_path / "out"))
    assert torch.equal(before, after), f"max diff {(before - after).abs().max()}"
    assert s["kind"] in ("uniform", "non-uniform")
    assert s["disk_bytes"] > 0 and s["memory_bytes"] > 0
    assert 1 < s["bits_per_weight_quantized_linears"] < 9
    assert s["quantized_modules"] > 0


def test_summary_accounting_nf4(tmp_path):
    model = tiny_llama()
    bundle = as_bundle(model)
    s = run_stage(bundle, BnbNF4Config(), StageContext(work_dir=tmp_path, progress=False))["summary"]
    assert s["kind"] == "non-uniform"
    assert "lm_head" in s["unquantized_linear_modules"]  # tied to the embeddings: kept in full precision
    # 4 bits + one fp32 absmax per 64 weights (+ a 16-entry codebook per module) = ~4.5-4.7 bits
    assert 4.4 < s["bits_per_weight_quantized_linears"] < 4.8
    assert s["quantized_linear_ratio_vs_fp32"] <= 0.15
    s8 = run_stage(as_bundle(tiny_llama()), QuantoInt8Config(), StageContext(work_dir=tmp_path, progress=False))
    assert s8["summary"]["kind"] == "uniform"
    assert 8 <= s8["summary"]["bits_per_weight_quantized_linears"] < 8.5


def test_skip_modules_kept_full_precision(tmp_path):
    bundle = as_bundle(tiny_llama())
    s = run_stage(bundle, QuantoInt4Config(skip_modules=["*.down_proj"]),
                  StageContext(work_dir=tmp_path, progress=False))["summary"]
    assert "model.layers.0.mlp.down_proj" in s["unquantized_linear_modules"]
    assert type(bundle.model.model.layers[0].mlp.down_proj).__name__ == "Linear"
    assert type(bundle.model.model.layers[0].mlp.up_proj).__name__ == "QLinear"
    r = reload(bundle.model, tmp_path / "o")
    assert type(r.model.layers[0].mlp.down_proj).__name__ == "Linear"


def _sparsify(model, fraction=0.5):
    with torch.no_grad():
        for n, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and n != "lm_head":
                w = m.weight
                k = int(w.shape[1] * fraction)
                idx = w.abs().argsort(dim=1)[:, :k]
                w.scatter_(1, idx, 0.0)
    return model


@pytest.mark.parametrize("method", ["bnb-nf4", "bnb-int8", "quanto-int8", "calibrated-nf4"])
def test_sparsity_survives_quantization(method, tokenizer, calibration, tmp_path):
    bundle = as_bundle(_sparsify(tiny_llama()), tokenizer)
    s = run_stage(bundle, configs(calibration)[method], StageContext(work_dir=tmp_path, progress=False))["summary"]
    assert s["sparsity_before"] == pytest.approx(0.5, abs=0.01)
    assert s["sparsity_after_dequantization"] >= 0.5 - 1e-6
    r = reload(bundle.model, tmp_path / "o")
    names = [n for n, m in r.named_modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt", "QLinear")]
    assert sparsity_of(r, names) >= 0.5 - 1e-6


def test_wanda_then_nf4_recipe(tokenizer, calibration, tmp_path):
    from transformers import AutoModelForCausalLM

    from hfcompress.pipeline import compress
    from hfcompress.recipes import parse_recipe

    pytest.importorskip("hfcompress.prune.wanda")
    text = (Path(__file__).resolve().parents[1] / "recipes" / "wanda-50-nf4.yaml").read_text()
    text = text.replace("dataset: NeelNanda/pile-10k, samples: 32, seq_len: 512",
                        f"dataset: {calibration.dataset}, samples: 4, seq_len: 32")
    recipe = parse_recipe(text)
    bundle = as_bundle(tiny_llama(), tokenizer)
    result = compress(bundle, recipe, output=tmp_path / "out", progress=False)
    summary = result.report["stages"][1]["summary"]
    assert summary["sparsity_after_dequantization"] >= 0.49
    r = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    names = [n for n, m in r.named_modules() if type(m).__name__ == "Linear4bit"]
    assert names and sparsity_of(r, names) >= 0.49


def test_nf4_and_int8_grids_keep_exact_zero():
    import bitsandbytes.functional as F

    assert 0.0 in F.get_4bit_type("nf4", device="cpu").tolist()
    m = torch.nn.Linear(64, 8)
    with torch.no_grad():
        m.weight[:, ::2] = 0
    assert (dequantized_weight(m) == 0).float().mean() >= 0.5


# ---------------------------------------------------------------------------------------------
# Misuse: clear errors before work
# ---------------------------------------------------------------------------------------------

def test_already_quantized_is_refused(tmp_path):
    q = quantize(tiny_llama(), BnbNF4Config())
    with pytest.raises(UsageError, match="already quantized"):
        quantize(q, QuantoInt8Config())
    q2 = quantize(tiny_llama(), QuantoInt4Config())
    with pytest.raises(UsageError, match="already quantized"):
        quantize(q2, BnbNF4Config())


def test_int8_rejects_compute_dtype():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="does not apply to bnb-int8"):
        BnbInt8Config(compute_dtype="float16")


def test_unknown_bit_width():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="2, 3, 4 or 8 bits"):
        GPTQOptimumConfig(bits=5)


def test_gptq_without_gptqmodel(monkeypatch):
    import hfcompress.quantize.gptq as gptq

    monkeypatch.setattr(gptq, "gptq_available", lambda: False)
    with pytest.raises(UnsupportedError) as err:
        quantize(tiny_llama(), GPTQOptimumConfig())
    assert str(err.value) == ("GPTQ needs the gptqmodel package: pip install 'hfcompress[gptq]' "
                              "(requires torch>=2.14.1)")


def test_bad_group_size_and_skip_modules():
    with pytest.raises(UsageError, match="does not divide"):
        quantize(tiny_llama(), QuantoInt4Config(group_size=48))
    with pytest.raises(UsageError, match="names no module"):
        quantize(tiny_llama(), BnbNF4Config(skip_modules=["no_such_module"]))
    with pytest.raises(UsageError, match="applies to quanto-int4"):
        quantize(tiny_llama(), QuantoInt8Config(group_size=32))


def test_every_method_declares_kind():
    from hfcompress.registry import methods

    kinds = {name: m.config_cls.kind for name, m in methods("quantize").items()}
    assert kinds["bnb-nf4"] == kinds["bnb-fp4"] == kinds["calibrated-nf4"] == "non-uniform"
    assert kinds["bnb-int8"] == kinds["quanto-int4"] == kinds["calibrated-int4"] == kinds["gptq"] == "uniform"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def model_folder(tmp_path, tokenizer) -> Path:
    folder = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_quantize_nf4(model_folder, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from hfcompress.cli import main

    out = tmp_path / "nf4"
    rc = main(["quantize", str(model_folder), "--method", "bnb-nf4", "--double-quant", "--skip-modules",
               "model.layers.1.mlp.down_proj", "-o", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads((out / "hfcompress.json").read_text())
    s = report["stages"][0]["summary"]
    assert s["double_quant"] is True and "model.layers.1.mlp.down_proj" in s["unquantized_linear_modules"]
    r = AutoModelForCausalLM.from_pretrained(out)
    assert type(r.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    assert type(r.model.layers[1].mlp.down_proj).__name__ == "Linear"


def test_cli_quanto_int4_reloads(model_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    from hfcompress.cli import main

    out = tmp_path / "q4"
    assert main(["quantize", str(model_folder), "--method", "quanto-int4", "--group-size", "32", "-o", str(out),
                 "--no-progress"]) == 0
    r = AutoModelForCausalLM.from_pretrained(out)
    assert type(r.model.layers[0].self_attn.q_proj).__name__ == "QLinear"
    assert r.model.layers[0].self_attn.q_proj.weight_group_size == 32


@pytest.mark.parametrize("argv,message", [
    (["--method", "bnb-int8", "--compute-dtype", "float16"], "does not apply to bnb-int8"),
    (["--method", "bnb-nf4", "--group-size", "64"], "--group-size does not apply"),
    (["--method", "gptq-optimum", "--bits", "5"], "2, 3, 4 or 8"),
    (["--method", "gptq", "--bits", "5"], "4 or 8 bits"),
    (["--method", "bnb-nf4", "--calibration", "x"], "--calibration applies to calibrated"),
])
def test_cli_misuse(model_folder, tmp_path, capsys, argv, message):
    from hfcompress.cli import main

    rc = main(["quantize", str(model_folder), *argv, "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_top_level_verb():
    q = hfcompress.quantize(tiny_llama(), QuantoInt8Config())
    assert type(q.model.layers[0].mlp.up_proj).__name__ == "QLinear"
