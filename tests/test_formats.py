"""Output formats (issue 15): compressed-tensors pack-quantized written by ``rtn`` / ``gptq`` reloads in a
fresh interpreter with plain transformers + compressed-tensors (no ``import hfcompress``) and computes
exactly what the in-memory model did, also after a round trip through the local Hub; our own formats
(hfcompress-sparse, hfcompress-quanto) raise without ``import hfcompress`` and reload bit-exactly with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hfcompress
from hfcompress.config import CalibrationConfig
from hfcompress.distill._tiny import text_dataset
from hfcompress.errors import UsageError
from hfcompress.prune import MagnitudeConfig, WandaConfig
from hfcompress.quantize import GPTQConfig, QuantoInt4Config, RTNConfig
from hfcompress.recipes import Recipe

IDS = [[1, 40, 50, 60, 70, 80, 90, 41, 42, 43, 44, 45]]

# Loads every folder named in argv[1] with plain transformers; prints the outputs (or the error) as JSON.
PLAIN_LOAD = """
import json, sys, torch
{pre}
import transformers
out = {{}}
for folder, cls in json.loads(sys.argv[1]).items():
    try:
        model = getattr(transformers, cls).from_pretrained(folder)
        with torch.no_grad():
            o = model(input_ids=torch.tensor(json.loads(sys.argv[2])))
        out[folder] = {{"out": (o.logits if hasattr(o, "logits") else o.last_hidden_state).tolist()}}
    except Exception as exc:
        out[folder] = {{"error": type(exc).__name__ + ": " + str(exc)}}
print("RESULT" + json.dumps({{"results": out, "hfcompress_imported": "hfcompress" in sys.modules}}))
"""


def _run_plain(folders: dict[str, str], *, with_hfcompress: bool, env: dict | None = None,
               runner=None) -> dict:
    code = PLAIN_LOAD.format(pre="import hfcompress" if with_hfcompress else "")
    cmd = [sys.executable, "-c", code, json.dumps(folders), json.dumps(IDS)]
    if runner is not None:
        proc = runner(cmd)
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env or dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    data = json.loads(line[len("RESULT"):])
    assert data["hfcompress_imported"] is with_hfcompress
    return data["results"]


def _outputs(model) -> torch.Tensor:
    with torch.no_grad():
        o = model(input_ids=torch.tensor(IDS))
    return (o.logits if hasattr(o, "logits") else o.last_hidden_state).float()


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> CalibrationConfig:
    data = text_dataset(tmp_path_factory.mktemp("calib-data"))
    return CalibrationConfig(dataset=str(data), samples=4, seq_len=32)


@pytest.fixture(scope="module")
def ct_outputs(tiny_models, calib, tmp_path_factory) -> dict[str, tuple[Path, str, torch.Tensor, dict]]:
    """name -> (folder, transformers class, in-memory outputs, stage summary) for each compressed-tensors case."""
    root = tmp_path_factory.mktemp("ct")
    cases = {
        "rtn-int4-g32": ("llama", [RTNConfig(group_size=32)]),
        "rtn-int4-asym": ("llama", [RTNConfig(group_size=32, symmetric=False)]),
        "rtn-int8-channel": ("llama", [RTNConfig(bits=8, group_size=-1)]),
        "gptq-int4-g32": ("llama", [GPTQConfig(group_size=32, calibration=calib)]),
        "gptq-int4-asym-actorder": ("llama", [GPTQConfig(group_size=32, symmetric=False, act_order=True,
                                                         calibration=calib)]),
        "24-gptq-int4": ("llama", [MagnitudeConfig(pattern="2:4"), GPTQConfig(group_size=32, calibration=calib)]),
        "bert-gptq-int4": ("bert-encoder", [GPTQConfig(group_size=32, calibration=calib)]),
        "bert-g128-fallback": ("bert-encoder", [RTNConfig(group_size=128)]),
        "bert-asym-g128-uniform": ("bert-encoder", [RTNConfig(group_size=128, symmetric=False)]),
        "rtn-int4-embeddings": ("llama", [RTNConfig(group_size=32, quantize_embeddings=True)]),
    }
    out = {}
    for name, (family, stages) in cases.items():
        folder = root / name
        result = hfcompress.compress(str(tiny_models[family]), Recipe(stages=stages), output=folder, progress=False)
        cls = "AutoModelForCausalLM" if family == "llama" else "AutoModel"
        out[name] = (folder, cls, _outputs(result.bundle.model), result.report["stages"][-1]["summary"])
    return out


@pytest.mark.slow
def test_pack_quantized_reloads_exactly_with_plain_transformers(ct_outputs):
    results = _run_plain({str(f): cls for f, cls, _, _ in ct_outputs.values()}, with_hfcompress=False)
    for name, (folder, _, want, summary) in ct_outputs.items():
        got = results[str(folder)]
        assert "error" not in got, f"{name}: {got.get('error')}"
        assert torch.equal(torch.tensor(got["out"]), want), f"{name}: reloaded outputs differ"
        qc = json.loads((folder / "config.json").read_text())["quantization_config"]
        assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized", name
        report = json.loads((folder / "hfcompress.json").read_text())
        assert report["format"]["loads_with"] == "compressed-tensors", name
        assert summary["loads_with"] == "compressed-tensors"


def test_pack_quantized_layout_and_sizes(ct_outputs):
    from safetensors import safe_open

    folder, _, _, summary = ct_outputs["rtn-int4-g32"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor("model.layers.0.mlp.down_proj.weight_packed")
        scale = f.get_tensor("model.layers.0.mlp.down_proj.weight_scale")
    assert "model.layers.0.mlp.down_proj.weight" not in keys
    assert "lm_head.weight" in keys  # the untied head stays in full precision by default
    assert packed.dtype == torch.int32 and tuple(packed.shape) == (64, 128 * 4 // 32)
    assert tuple(scale.shape) == (64, 128 // 32)
    # 4 bits + one fp32 scale per 32 weights = 0.125 + 1/32 of fp32
    assert summary["quantized_linear_ratio_vs_fp32"] == pytest.approx(0.125 + 1 / 32, abs=1e-3)
    int8 = ct_outputs["rtn-int8-channel"][3]
    assert 0.25 <= int8["quantized_linear_ratio_vs_fp32"] < 0.27
    assert "Loads with **`compressed-tensors`** (`pip install compressed-tensors`)" in (folder / "README.md").read_text()
    asym = json.loads((ct_outputs["rtn-int4-asym"][0] / "config.json").read_text())["quantization_config"]
    assert asym["dequantize"] is True and asym["config_groups"]["group_0"]["weights"]["symmetric"] is False


def test_2_4_sparsity_survives_int4(ct_outputs):
    summary = ct_outputs["24-gptq-int4"][3]
    assert summary["sparsity_before"] == pytest.approx(0.5, abs=1e-3)
    assert summary["sparsity_after_dequantization"] >= 0.5


def test_group_fallback_is_a_second_config_group(ct_outputs):
    folder, _, _, summary = ct_outputs["bert-g128-fallback"]
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    sizes = sorted(g["weights"]["group_size"] for g in qc["config_groups"].values())
    assert sizes == [64, 128]  # 64-wide inputs fall back to groups of 64; 128-wide keep 128
    assert "group_fallback" in summary


def test_one_scheme_when_dequantized_at_load(ct_outputs):
    """Asymmetric / embedding checkpoints load through transformers' dequantize path, which reads one scheme."""
    for name in ("bert-asym-g128-uniform", "rtn-int4-embeddings"):
        qc = json.loads((ct_outputs[name][0] / "config.json").read_text())["quantization_config"]
        assert qc["dequantize"] is True and len(qc["config_groups"]) == 1, name
    folder, _, _, summary = ct_outputs["rtn-int4-embeddings"]
    assert summary["quantized_embeddings"]["modules"] == ["lm_head", "model.embed_tokens"]
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert {"model.embed_tokens", "lm_head"} <= set(qc["config_groups"]["group_0"]["targets"])
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert "model.embed_tokens.weight_packed" in f.keys() and "lm_head.weight" not in f.keys()


@pytest.mark.parametrize("symmetric,act_order", [(True, False), (False, True)])
def test_gptq_beats_rtn_on_the_layer_objective(symmetric, act_order):
    """Same compressed-tensors grid; GPTQ's output error on correlated inputs, tr((W-Q) H (W-Q)^T),
    is below round-to-nearest's (what GPTQ minimises), and its codes sit on the grid."""
    from hfcompress.formats import compressed_tensors as ct
    from hfcompress.quantize.calibrated import gptq_quantize

    g = torch.Generator().manual_seed(0)
    W = torch.randn(48, 128, generator=g)
    X = torch.randn(512, 16, generator=g) @ torch.randn(16, 128, generator=g) + 0.1 * torch.randn(512, 128, generator=g)
    H = 2 * X.T @ X / X.shape[0]
    args = ct.weight_args(4, 32, symmetric)
    rtn, _ = ct.rtn_quantize(W, args)
    grid = ct.CTIntGrid(args, 128, W.dtype)
    Q = gptq_quantize(W, H, grid, act_order=act_order)

    def err(A):
        D = W - A
        return float(torch.trace(D @ H @ D.T))

    assert err(Q) < 0.7 * err(rtn)
    scale, zp = grid.params()
    codes = Q.unflatten(-1, (-1, 32)) / scale[..., None] + (0 if zp is None else zp[..., None].float())
    assert torch.allclose(codes, codes.round(), atol=1e-4)


@pytest.mark.parametrize("symmetric", [True, False])
def test_clip_search_never_raises_the_weighted_rounding_error(symmetric):
    """The searched range includes the plain min / max (factor 1.0), so per row and group the
    Hessian-weighted rounding error can only go down; with outliers it goes down strictly."""
    from hfcompress.formats import compressed_tensors as ct

    g = torch.Generator().manual_seed(1)
    W = torch.randn(64, 128, generator=g)
    W[::7, ::13] *= 6  # a few outliers stretch their groups' ranges
    hdiag = torch.rand(128, generator=g) + 0.1
    args = ct.weight_args(4, 32, symmetric)
    Wg, hg = W.unflatten(-1, (-1, 32)), hdiag.unflatten(-1, (-1, 32))

    def weighted_err(grid):
        scale, zp = grid.qparams(Wg, hg)
        return ((Wg - grid.round(Wg, scale[..., None], zp[..., None])) ** 2 * hg).sum(-1)

    plain = weighted_err(ct.CTIntGrid(args, 128, W.dtype))
    searched = weighted_err(ct.CTIntGrid(args, 128, W.dtype, clip_search=True))
    assert bool((searched <= plain + 1e-6).all()) and float(searched.sum()) < float(plain.sum())


@pytest.mark.parametrize("symmetric,act_order", [(True, True), (False, False)])
def test_gptq_with_clip_search_stays_on_the_grid(symmetric, act_order):
    from hfcompress.formats import compressed_tensors as ct
    from hfcompress.quantize.calibrated import gptq_quantize

    g = torch.Generator().manual_seed(2)
    W = torch.randn(32, 64, generator=g)
    X = torch.randn(256, 64, generator=g)
    grid = ct.CTIntGrid(ct.weight_args(4, 32, symmetric), 64, W.dtype, clip_search=True)
    Q = gptq_quantize(W, 2 * X.T @ X / 256, grid, act_order=act_order)
    scale, zp = grid.params()
    codes = Q.unflatten(-1, (-1, 32)) / scale[..., None] + (0 if zp is None else zp[..., None].float())
    assert torch.allclose(codes, codes.round(), atol=1e-4)


@pytest.mark.slow
def test_our_formats_fail_loudly_without_hfcompress(tiny_models, tmp_path):
    folders = {}
    expected = {}
    for name, stages in {"hfcompress-sparse": [WandaConfig(sparsity=0.5, format="hfcompress-sparse",
                                                           calibration=CalibrationConfig(
                                                               dataset=str(text_dataset(tmp_path / "d")),
                                                               samples=2, seq_len=32))],
                         "hfcompress-quanto": [QuantoInt4Config(group_size=32)]}.items():
        out = tmp_path / name
        res = hfcompress.compress(str(tiny_models["llama"]), Recipe(stages=stages), output=out, progress=False)
        folders[str(out)] = "AutoModelForCausalLM"
        expected[str(out)] = _outputs(hfcompress.load(out).model)
        report = json.loads((out / "hfcompress.json").read_text())
        assert report["format"] == {"name": name, "loads_with": "hfcompress", "pip": "hfcompress"}
        assert res.report["format"]["name"] == name
    plain = _run_plain(folders, with_hfcompress=False)
    for folder, got in plain.items():
        assert "error" in got, f"{folder} loaded without hfcompress"
        assert "pip install hfcompress" in got["error"] and "import hfcompress" in got["error"], got["error"]
    ours = _run_plain(folders, with_hfcompress=True)
    for folder, got in ours.items():
        assert "error" not in got, got.get("error")
        assert torch.equal(torch.tensor(got["out"]), expected[folder]), folder


def test_resaved_quanto_model_stays_guarded(tiny_models, tmp_path):
    res = hfcompress.compress(str(tiny_models["llama"]), Recipe(stages=[QuantoInt4Config(group_size=32)]),
                              output=tmp_path / "q", progress=False)
    del res
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q")  # hfcompress is imported here
    assert model.config._attn_implementation != hfcompress.formats.guard_message("hfcompress-quanto")
    model.save_pretrained(tmp_path / "again")
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert "pip install hfcompress" in cfg["attn_implementation"]


def test_pull_checks_the_loading_library_first(monkeypatch, tmp_path):
    import importlib.util

    from hfcompress import formats
    from hfcompress.errors import UnsupportedError

    cfg = {"quantization_config": {"quant_method": "compressed-tensors"}}
    assert formats.missing_library(cfg) is None
    assert formats.missing_library({}) is None
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "compressed_tensors" else real(name, *a))
    with pytest.raises(UnsupportedError, match="pip install compressed-tensors"):
        formats.check_loadable_before_pull(lambda: path)
    formats.check_loadable_before_pull(lambda: tmp_path / "absent.json")  # no config.json: nothing to check


def test_config_validation():
    with pytest.raises(ValueError, match="bits"):
        RTNConfig(bits=3)
    with pytest.raises(ValueError, match="no sparse-only format"):
        WandaConfig(format="compressed-tensors")
    assert WandaConfig(sparse_format=True).format == "hfcompress-sparse"
    assert MagnitudeConfig(format="hfcompress-sparse").sparse_format is True


def test_group_that_divides_nothing_is_refused(tiny_models):
    with pytest.raises(UsageError, match="group size 24"):
        hfcompress.compress(str(tiny_models["llama"]), Recipe(stages=[RTNConfig(group_size=24)]), progress=False)


def test_cli_flags_reach_the_configs():
    from hfcompress.cli import build_parser
    from hfcompress.cli.common import method_config

    parser = build_parser()
    args = parser.parse_args(["quantize", "m", "--method", "gptq", "--bits", "8", "--group-size", "-1",
                              "--no-symmetric", "--no-act-order", "--no-clip-search", "-o", "x"])
    cfg = method_config(args)
    assert (cfg.method, cfg.bits, cfg.group_size, cfg.symmetric, cfg.act_order, cfg.clip_search) == \
        ("gptq", 8, -1, False, False, False)
    cfg = method_config(parser.parse_args(["quantize", "m", "--method", "gptq", "-o", "x"]))
    assert (cfg.act_order, cfg.clip_search) == (True, True)  # the defaults that close RTN's gap on SmolLM2
    cfg = method_config(parser.parse_args(["quantize", "m", "--method", "rtn", "-o", "x"]))
    assert (cfg.bits, cfg.group_size, cfg.symmetric) == (4, 128, True)
    with pytest.raises(UsageError, match="symmetric does not apply to --method bnb-nf4"):
        method_config(parser.parse_args(["quantize", "m", "--method", "bnb-nf4", "--no-symmetric", "-o", "x"]))


@pytest.mark.slow
def test_pack_quantized_round_trips_through_the_hub(hub_env, ct_outputs, tmp_path):
    hub = hub_env
    folders, want = {}, {}
    for name in ("gptq-int4-g32", "24-gptq-int4", "bert-gptq-int4"):
        folder, cls, out, _ = ct_outputs[name]
        repo = f"{hub.user}/ct-{name}"
        hfcompress.push(folder, repo)
        folders[repo], want[repo] = cls, out
    results = _run_plain(folders, with_hfcompress=False,
                         runner=lambda cmd: hub.run(cmd, env={"HF_HOME": str(tmp_path / "fresh")}, timeout=600))
    for repo, got in results.items():
        assert "error" not in got, got.get("error")
        assert torch.equal(torch.tensor(got["out"]), want[repo]), repo


def test_encoder_calibration_windows_are_framed():
    from transformers import BertTokenizerFast

    from hfcompress.loading import ModelBundle
    from hfcompress.quantize.gptq import frame_for_encoder
    from hfcompress.testing.models import tiny_model, tiny_tokenizer

    ids = torch.arange(40).reshape(4, 10) + 10
    llama = ModelBundle(model=tiny_model("llama"), tokenizer=tiny_tokenizer(), task="causal-lm")
    assert torch.equal(frame_for_encoder(llama, ids), ids)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(60)]]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    bert = ModelBundle(model=tiny_model("bert-encoder"), tokenizer=tok, task="feature-extraction")
    framed = frame_for_encoder(bert, ids)
    assert framed[:, 0].tolist() == [2] * 4 and framed[:, -1].tolist() == [3] * 4
    assert torch.equal(framed[:, 1:-1], ids[:, 1:-1])
