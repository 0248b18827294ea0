"""The architecture matrix (issue 13): every method on tiny random models of 28 architectures built
from transformers' own config classes; layouts proven against the generic proposal; students
keep the layer pattern; one Hub round trip per family.

A cell passes when the method works, or when it is refused before any work with the one-line
error naming the missing capability listed in ``EXPECTED_REFUSALS``. Cells refused by the pruning
engine's old allow-list of model types are xfail (not strict): they turn green once the
calibration work removes the allow-list. ``python -m hfcompress.testing.matrix`` renders the
results as docs/ARCHITECTURES.md's table.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hfcompress.calibration.blocks import find_block_stacks
from hfcompress.errors import UnsupportedError
from hfcompress.layouts import DECLARED, declared_layout, layout_for, propose_layout
from hfcompress.testing.matrix import CELLS, EXPECTED_REFUSALS, calibration_folder, outcome, record
from hfcompress.testing.models import ARCHITECTURES, matrix_inputs, matrix_model

ENWIKI = Path(__file__).resolve().parents[1].parent / "shared" / "hub" / "datasets" / "fixtures" / "enwiki-sample"


@pytest.fixture(scope="session")
def matrix_dataset(tmp_path_factory) -> str:
    """The first ~20k characters of enwiki-sample as a local dataset folder (fast calibration)."""
    import gc

    if not ENWIKI.is_dir():
        pytest.skip(f"{ENWIKI} not found")
    folder = str(calibration_folder(tmp_path_factory.mktemp("enwiki-small"), ENWIKI))
    # the pruning engine calls gc.collect() per block; with every library of the session alive a
    # full collection takes ~1 s: keep what exists now (imports) out of the collector's scans
    gc.collect()
    gc.freeze()
    return folder


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one intra-op thread is fastest (and fair on a shared machine)."""
    import gc

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    gc.unfreeze()  # what _freeze_survivors froze is collectable again for the rest of the session


@pytest.fixture(autouse=True)
def _freeze_survivors():
    """The calibration layer calls gc.collect() per block; a full collection scans every object alive,
    and the libraries the first cells import (bitsandbytes, quanto, datasets) add ~200k of them:
    freezing what survives each test keeps them out of the scans (a calibrated cell ~4x cheaper)."""
    import gc

    gc.collect()
    gc.freeze()


# -- the matrix -------------------------------------------------------------------------------

#: Cells that do not work yet, each with the missing capability (shown in docs/ARCHITECTURES.md);
#: xfail, not strict, so a fix turns them green. Everything else must pass.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_matrix(arch, cell, matrix_dataset, tmp_path):
    status, message = outcome(arch, cell, matrix_dataset, tmp_path)
    record(os.environ.get("HFCOMPRESS_MATRIX_OUT"), arch, cell, status, message)
    if status == "pending":
        pytest.xfail(f"engine allow-list (pending the calibration work): {message}")
    assert "\n" not in message
    if status != "ok" and (arch, cell) in KNOWN_GAPS:
        pytest.xfail(f"known gap: {KNOWN_GAPS[arch, cell]} ({message[:200]})")
    if (arch, cell) in EXPECTED_REFUSALS:
        assert status in ("refused", "ok"), message
    else:
        assert status == "ok", message


def test_tiny_models_build_fast():
    import time

    for name in ARCHITECTURES:
        matrix_model(name)  # the first build imports the modeling code
        t = time.perf_counter()
        model = matrix_model(name)
        assert time.perf_counter() - t < 3, name  # < 1 s on an idle core; slack for a shared machine
        with torch.no_grad():
            model(**matrix_inputs(name))
    gemma3 = matrix_model("gemma3_text").config.layer_types
    assert gemma3 == ["sliding_attention"] * 5 + ["full_attention"]


# -- layouts ----------------------------------------------------------------------------------

def _without_qkv_order(layout):
    return replace(layout, attention=tuple(replace(a, qkv_order=None) for a in layout.attention))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_declared_layouts_equal_the_proposal(arch):
    """Every declared layout is what the generic discovery proposes from a real block (a fused
    projection's head order cannot be seen from shapes: only declarations state it). A block
    nobody declared runs on the proposal (its matrix row proves it); the proposal names every
    projection of the block, never a path the block lacks."""
    model = matrix_model(arch)
    for stack in find_block_stacks(model):
        block = stack.blocks[0]
        declared = declared_layout(type(block).__name__, stack.role)
        proposed = propose_layout(block, model.config, stack.role)
        if declared is None:
            assert proposed.attention, type(block).__name__
            declared = proposed
        assert proposed == _without_qkv_order(declared)
        for path in declared.projections():  # every declared path exists in the block
            try:
                block.get_submodule(path)
            except AttributeError:
                block.get_parameter(path)


def test_every_declared_entry_is_exercised():
    seen = set()
    for arch in ARCHITECTURES:
        model = matrix_model(arch)
        for stack in find_block_stacks(model):
            name = type(stack.blocks[0]).__name__
            seen.add((name, stack.role) if (name, stack.role) in DECLARED else name)
    assert set(DECLARED) <= seen | {"MistralDecoderLayer"}


def test_unknown_block_class_uses_the_proposal(tmp_path):
    """A model whose block class is not declared but looks like a known one is pruned through the
    proposed layout — no list of model types decides."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hfcompress.loading import ModelBundle
    from hfcompress.prune import MagnitudeConfig
    from hfcompress.stage import StageContext, run_stage

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                         vocab_size=256)).eval()
    renamed = type("MyNewDecoderLayer", (type(model.model.layers[0]),), {})  # a class no layout declares
    for layer in model.model.layers:
        layer.__class__ = renamed
    layout, source = layout_for(model.model.layers[0], model.config, "decoder")
    assert source == "proposed" and layout.ffn.inputs == ("mlp.gate_proj", "mlp.up_proj")
    bundle = ModelBundle(model, None, "causal-lm")
    s = run_stage(bundle, MagnitudeConfig(structured="heads", sparsity=0.5), StageContext(progress=False))["summary"]
    # multi-query attention: query heads inside the single group are removed
    assert s["unit"] == "query heads" and s["num_attention_heads"] == [4, 2] and s["num_key_value_heads"] == [1, 1]
    assert bundle.model.config.num_attention_heads == 2 and bundle.model.config.num_key_value_heads == 1


def test_fused_projection_without_declared_order_is_refused():
    from hfcompress.loading import ModelBundle
    from hfcompress.prune import MagnitudeConfig
    from hfcompress.stage import StageContext, run_stage

    model = matrix_model("phi3")
    renamed = type("UnknownFusedLayer", (type(model.model.layers[0]),), {})
    for layer in model.model.layers:
        layer.__class__ = renamed
    with pytest.raises(UnsupportedError, match="head order inside the fused projection `self_attn.qkv_proj`"):
        run_stage(ModelBundle(model, None, "causal-lm"), MagnitudeConfig(structured="heads", sparsity=0.5),
                  StageContext(progress=False))
    # FFN pruning needs no head order: the proposal is enough
    bundle = ModelBundle(model, None, "causal-lm")
    run_stage(bundle, MagnitudeConfig(structured="ffn", sparsity=0.5), StageContext(progress=False))
    assert bundle.model.config.intermediate_size == 64


# -- Conv1D, fused experts, Linear subclasses --------------------------------------------------

@pytest.mark.parametrize("arch", ["gpt2", "mixtral"])
def test_taylor_scores_of_conv1d_and_expert_targets_are_their_weights_gradients(arch):
    """Scores come from the leaf parameters and are cut like each target's [out, in] weight: a
    Conv1D's transpose, one expert's slice of the fused tensor (compared with plain autograd)."""
    from hfcompress.calibration.targets import Conv1DTarget, ExpertTarget
    from hfcompress.loading import ModelBundle
    from hfcompress.prune.engine import arch_info, target_linears
    from hfcompress.prune.gradients import target_scores

    model = matrix_model(arch)
    targets = target_linears(model, arch_info(model), None)
    kinds = {type(t) for t in targets.values()}
    assert (Conv1DTarget if arch == "gpt2" else ExpertTarget) in kinds
    ids = matrix_inputs(arch, batch=1, seq=12)["input_ids"]
    got = target_scores(ModelBundle(model, None, "causal-lm"), targets, ids, batch_size=1)
    model.zero_grad()
    with torch.enable_grad():
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    for name, t in targets.items():
        leaf = t.weight if isinstance(t, torch.nn.Linear) else t.parameter
        want = (leaf.detach() * leaf.grad).abs()
        want = want.t() if isinstance(t, Conv1DTarget) else want[t.expert] if isinstance(t, ExpertTarget) else want
        assert got[name].shape == t.weight.shape, name
        torch.testing.assert_close(got[name], want, rtol=1e-4, atol=1e-9, msg=name)


def test_conv1d_quantized_as_the_linear_of_its_transpose(tmp_path):
    """quanto on GPT-2: each Conv1D becomes the nn.Linear of its transposed weight (same outputs
    before quantization), and the saved folder reloads into the same QLinear layers."""
    import transformers

    from hfcompress.loading import ModelBundle
    from hfcompress.quantize import QuantoInt8Config
    from hfcompress.quantize.quanto_format import conv1d_as_linear
    from hfcompress.stage import StageContext, run_stage

    model = matrix_model("gpt2")
    x = matrix_inputs("gpt2")
    with torch.no_grad():
        ref = model(**x).logits
        twin = matrix_model("gpt2")
        conv1d_as_linear(twin, [n for n, m in twin.named_modules() if type(m).__name__ == "Conv1D"])
        assert not any(type(m).__name__ == "Conv1D" for m in twin.modules())
        torch.testing.assert_close(twin(**x).logits, ref, rtol=1e-5, atol=1e-5)
    bundle = ModelBundle(model, None, "causal-lm")
    s = run_stage(bundle, QuantoInt8Config(), StageContext(progress=False))["summary"]
    assert s["quantized_modules"] == 8  # c_attn, c_proj, c_fc, c_proj of 2 blocks; lm_head kept
    bundle.model.save_pretrained(tmp_path)
    re = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert type(re.transformer.h[0].attn.c_attn).__name__ == "QLinear"
    with torch.no_grad():
        assert torch.equal(bundle.model(**x).logits, re(**x).logits)


def test_calibrated_nf4_stores_the_chosen_values_of_conv1d(matrix_dataset, monkeypatch):
    """Calibrated NF4 on GPT-2 runs GPTQ on each Conv1D's [out, in] view; bitsandbytes (through
    transformers' transposing loader) then stores exactly the values it chose."""
    pytest.importorskip("bitsandbytes")
    import hfcompress.quantize.bnb as bnb
    from hfcompress.config import CalibrationConfig
    from hfcompress.loading import ModelBundle
    from hfcompress.quantize import CalibratedNF4Config
    from hfcompress.quantize.base import dequantized_weight
    from hfcompress.stage import StageContext, run_stage
    from hfcompress.testing.matrix import matrix_tokenizer

    chosen: dict[str, torch.Tensor] = {}
    real = bnb.apply_bnb

    def spy(bundle, cfg, ctx):
        chosen.update({n: m.weight.detach().t().clone() for n, m in bundle.model.named_modules()
                       if type(m).__name__ == "Conv1D"})
        return real(bundle, cfg, ctx)

    monkeypatch.setattr(bnb, "apply_bnb", spy)
    bundle = ModelBundle(matrix_model("gpt2"), matrix_tokenizer("gpt2"), "causal-lm")
    cfg = CalibratedNF4Config(calibration=CalibrationConfig(dataset=matrix_dataset, samples=2, seq_len=16),
                              act_order=False, clip_search=False)
    s = run_stage(bundle, cfg, StageContext(progress=False))["summary"]
    assert s["calibrated_modules"] == len(chosen) == 8 and not s["plain_nf4_modules"]
    for name, w in chosen.items():
        assert torch.equal(dequantized_weight(bundle.model.get_submodule(name)), w), name


def test_bnb_refuses_linear_subclasses_before_any_work():
    """transformers' bitsandbytes integration converts exact nn.Linear / Conv1D only: a model made of
    nn.Linear subclasses (FalconLinear) is refused in one line naming that, and left untouched;
    int4 methods that need nn.Linear refuse a Conv1D model in one line too."""
    pytest.importorskip("bitsandbytes")
    from hfcompress.loading import ModelBundle
    from hfcompress.quantize import BnbNF4Config, CalibratedNF4Config
    from hfcompress.quantize.base import select_linears
    from hfcompress.stage import StageContext, run_stage

    model = matrix_model("falcon")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for cfg in (BnbNF4Config(), CalibratedNF4Config()):
        with pytest.raises(UnsupportedError, match="exact nn.Linear and Conv1D layers only.*FalconLinear") as e:
            run_stage(ModelBundle(model, None, "causal-lm"), cfg, StageContext(progress=False))
        assert "\n" not in str(e.value)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(UnsupportedError, match="transformers Conv1D layers"):
        select_linears(matrix_model("gpt2"), [])


# -- students ---------------------------------------------------------------------------------

def test_student_keeps_the_layer_pattern(tmp_path):
    from transformers import Gemma3ForCausalLM

    from hfcompress.distill.student import select_layers, student_from_layers

    assert select_layers(6, 3, ["s"] * 5 + ["g"]) == [0, 4, 5]
    assert select_layers(6, 2, ["s"] * 5 + ["g"]) == [0, 5]
    assert select_layers(4, 2, ["s", "g", "s", "g"]) == [0, 1]
    assert select_layers(30, 15) == list(range(0, 30, 2))  # no pattern: every other layer
    teacher = matrix_model("gemma3_text")
    student, kept = student_from_layers(teacher, 3)
    assert kept == [0, 4, 5]
    assert student.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    student.save_pretrained(tmp_path)
    re = Gemma3ForCausalLM.from_pretrained(tmp_path).eval()
    x = matrix_inputs("gemma3_text")
    with torch.no_grad():
        assert torch.equal(student(**x).logits, re(**x).logits)


def test_student_of_encoder_decoder_stacks(tmp_path):
    from transformers import T5ForConditionalGeneration

    from hfcompress.distill.student import student_from_layers

    teacher = matrix_model("t5")
    both, kept = student_from_layers(teacher, [1])  # drops block 0, which owns the position bias
    assert kept == {"encoder.block": [1], "decoder.block": [1]}
    assert (both.config.num_layers, both.config.num_decoder_layers) == (1, 1)
    dec, kept = student_from_layers(teacher, 1, stacks="decoder")
    assert kept == [0] and (dec.config.num_layers, dec.config.num_decoder_layers) == (2, 1)
    x = matrix_inputs("t5")
    for i, s in enumerate((both, dec)):
        s.save_pretrained(tmp_path / str(i))
        re = T5ForConditionalGeneration.from_pretrained(tmp_path / str(i)).eval()
        with torch.no_grad():
            assert torch.equal(s(**x).logits, re(**x).logits)


def test_per_layer_config_fields_follow_the_kept_layers():
    from transformers import Qwen2Config, Qwen3MoeConfig

    from hfcompress.layouts.surgery import keep_layers_in_config

    moe = Qwen3MoeConfig(num_hidden_layers=6, decoder_sparse_step=2, mlp_only_layers=[])  # MoE at 1, 3, 5
    keep_layers_in_config(moe, "num_hidden_layers", [0, 3, 4], 6)
    assert (moe.num_hidden_layers, moe.decoder_sparse_step, moe.mlp_only_layers) == (3, 1, [0, 2])
    q2 = Qwen2Config(num_hidden_layers=6, use_sliding_window=True, max_window_layers=3)
    keep_layers_in_config(q2, "num_hidden_layers", [1, 2, 5], 6)
    assert q2.max_window_layers == 2 and len(q2.layer_types) == 3


def test_layer_removal_keeps_per_layer_config_lists(matrix_dataset):
    from hfcompress.config import CalibrationConfig
    from hfcompress.loading import ModelBundle
    from hfcompress.prune import MagnitudeConfig
    from hfcompress.stage import StageContext, run_stage
    from hfcompress.testing.matrix import matrix_tokenizer

    model = matrix_model("gemma3_text")
    bundle = ModelBundle(model, matrix_tokenizer("gemma3_text"), "causal-lm")
    cfg = MagnitudeConfig(structured="layers", sparsity=0.5,
                          calibration=CalibrationConfig(dataset=matrix_dataset, samples=2, seq_len=16))
    s = run_stage(bundle, cfg, StageContext(progress=False))["summary"]
    types = ["sliding_attention"] * 5 + ["full_attention"]
    assert bundle.model.config.layer_types == [t for i, t in enumerate(types) if i not in s["removed_layers"]]
    assert bundle.model.config.num_hidden_layers == 3


@pytest.mark.parametrize("arch", ["mixtral", "qwen3_moe", "qwen2_moe", "t5"])
def test_activation_importance_on_experts_and_stacks(arch, matrix_dataset, tmp_path):
    """Wanda-style structured FFN: per-expert statistics from the tokens routed to each expert
    (an expert no token reached is ranked by magnitude, and reported), both stacks of T5."""
    import transformers

    from hfcompress.config import CalibrationConfig
    from hfcompress.loading import ModelBundle
    from hfcompress.loading.load import detect_task
    from hfcompress.prune import WandaConfig
    from hfcompress.stage import StageContext, run_stage
    from hfcompress.testing.matrix import matrix_tokenizer

    model = matrix_model(arch)
    bundle = ModelBundle(model, matrix_tokenizer(arch), detect_task(model.config))
    cfg = WandaConfig(structured="ffn", sparsity=0.5,
                      calibration=CalibrationConfig(dataset=matrix_dataset, samples=2, seq_len=16))
    s = run_stage(bundle, cfg, StageContext(progress=False))["summary"]
    assert s["intermediate_size"][1] == s["intermediate_size"][0] // 2
    if arch == "qwen2_moe":  # routed experts and the shared expert, each its own width field
        assert s["ffn_widths"] == {"moe_intermediate_size": [48, 24], "shared_expert_intermediate_size": [96, 48]}
    bundle.model.save_pretrained(tmp_path)
    re = getattr(transformers, ARCHITECTURES[arch][1]).from_pretrained(tmp_path).eval()
    x = matrix_inputs(arch)
    with torch.no_grad():
        assert torch.equal(bundle.model(**x).logits, re(**x).logits)


# -- Hub round trip per family ----------------------------------------------------------------

FAMILY_MODELS = {"decoder": "llama", "encoder": "bert", "encoder-decoder": "t5", "vision": "vit",
                 "speech": "whisper"}

PULL = """
import json, sys, torch, transformers
import hfcompress
from hfcompress.testing.models import matrix_inputs
out = {}
for repo, arch, cls in json.loads(sys.argv[1]):
    model = getattr(transformers, cls).from_pretrained(repo).eval()
    with torch.no_grad():
        out[repo] = model(**matrix_inputs(arch)).logits.tolist()
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_one_round_trip_per_family_through_the_hub(hub_env, tmp_path):
    """A structurally pruned model of each family: push to the local Hub, pull in a fresh process
    with a fresh cache, same outputs."""
    import hfcompress
    from hfcompress.loading import ModelBundle
    from hfcompress.loading.load import detect_task
    from hfcompress.prune import MagnitudeConfig
    from hfcompress.stage import StageContext, run_stage, save_bundle

    hub = hub_env
    jobs, expected = [], {}
    for family, arch in FAMILY_MODELS.items():
        model = matrix_model(arch)
        bundle = ModelBundle(model, None, detect_task(model.config))
        run_stage(bundle, MagnitudeConfig(structured="ffn", sparsity=0.5), StageContext(progress=False))
        folder = tmp_path / arch
        save_bundle(bundle, folder)
        repo = f"{hub.user}/matrix-{family}"
        hfcompress.push(folder, repo)
        with torch.no_grad():
            expected[repo] = bundle.model(**matrix_inputs(arch)).logits.tolist()
        jobs.append([repo, arch, ARCHITECTURES[arch][1]])
    proc = hub.run([sys.executable, "-c", PULL, json.dumps(jobs)], env={"HF_HOME": str(tmp_path / "fresh-home")},
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    got = json.loads(line[len("RESULT"):])
    for repo, logits in expected.items():
        assert torch.equal(torch.tensor(got[repo]), torch.tensor(logits)), repo
