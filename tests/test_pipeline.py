"""compress(): each thing done once on the hot path (config resolved, output checked, model saved,
card rendered), and the figures it records."""

from __future__ import annotations

import json

import pytest
import transformers

import hfcompress.pipeline as pipeline
from hfcompress.evaluate import EfficiencyConfig
from hfcompress.io import weight_bytes
from hfcompress.quantize import QuantoInt8Config
from hfcompress.recipes import Recipe

FAST = dict(runs=1, warmup=0, generate=False, peak_rss="off")


@pytest.fixture
def counted(monkeypatch):
    counts = {"save_pretrained": 0, "check_output": 0, "get_method": 0, "write_card": 0}
    save = transformers.PreTrainedModel.save_pretrained

    def counting_save(self, *a, **k):
        counts["save_pretrained"] += 1
        return save(self, *a, **k)

    def wrap(name, fn):
        def inner(*a, **k):
            counts[name] += 1
            return fn(*a, **k)
        return inner

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", counting_save)
    for name in ("check_output", "get_method", "write_card"):
        monkeypatch.setattr(pipeline, name, wrap(name, getattr(pipeline, name)))
    return counts


def test_quantize_then_evaluate_saves_the_model_once(tiny_models, tmp_path, counted):
    pytest.importorskip("optimum.quanto")
    recipe = Recipe(stages=[QuantoInt8Config(), EfficiencyConfig(**FAST)])
    out = tmp_path / "out"
    result = pipeline.compress(str(tiny_models["llama"]), recipe, output=out, progress=False, repo_id="me/tiny-q8")
    # One save of the quantized model: the quantize stage's disk figures, the efficiency stage and
    # the output all use it (the output's files are linked from it).
    assert counted["save_pretrained"] == 1
    assert counted["check_output"] == 1 and counted["get_method"] == 2 and counted["write_card"] == 1
    report = json.loads((out / "hfcompress.json").read_text())
    disk = next(r for r in report["evaluation"] if r["metric"] == "disk_bytes")
    assert disk["value"] == weight_bytes(out)  # the measured copy is what the output holds
    assert 0 < report["stages"][0]["summary"]["disk_bytes"] <= weight_bytes(out)  # tensor bytes (no headers)
    assert 'from_pretrained("me/tiny-q8")' in (out / "README.md").read_text()
    import hfcompress

    reloaded = hfcompress.load(out)
    assert type(reloaded.model.model.layers[0].mlp.up_proj).__name__ == "QLinear"
    assert result.output == out.resolve()


def test_linear_sparsity_leaves_out_the_tied_head(tiny_models):
    """Issue 19 item 6: a model whose blocks are 50% pruned reports 0.5, whatever the LM head."""
    import torch

    import hfcompress
    from hfcompress.sizes import count_parameters, size_figures

    bundle = hfcompress.load(tiny_models["llama"])
    model = bundle.model
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and ".layers." in name:
                w = m.weight.view(-1)
                w[: w.numel() // 2] = 0
    fig = size_figures(model)
    assert fig["linear_sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert "lm_head" not in fig["layers"]
    assert fig["parameters"] == count_parameters(model)["parameters"]


def test_sparsity_row_has_no_ratio():
    """Issue 19 item 6 / 11: a fraction's ratio (0.5 / 0.003 = "164.306x") is never shown."""
    from hfcompress.evaluate import make_result
    from hfcompress.reports import compare, render_markdown

    results = [make_result("efficiency", "linear_sparsity", v, model=m) for m, v in
               (("baseline", 0.003), ("compressed", 0.5))]
    row = compare(results)[0]
    assert row["ratio"] is None and row["delta"] == pytest.approx(0.497)
    line = next(ln for ln in render_markdown({"results": results}).splitlines() if "linear_sparsity" in ln)
    assert "×" not in line
