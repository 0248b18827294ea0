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


def test_stages_announce_start_notes_and_end_as_they_happen(tiny_models, tmp_path, capsys, monkeypatch):
    """Each stage's start, progress notes and end reach stderr while the run goes on (issue 19 item 11)."""
    from hfcompress import stage

    seen_at_start: list[str] = []
    original = stage._apply

    def spy(bundle, config, ctx, method):
        seen_at_start.append(capsys.readouterr().err)  # printed before the stage's work
        return original(bundle, config, ctx, method)

    monkeypatch.setattr(stage, "_apply", spy)
    recipe = Recipe(stages=[QuantoInt8Config(), EfficiencyConfig(peak_rss="off", runs=1, warmup=0, generate=False)])
    pipeline.compress(str(tiny_models["llama"]), recipe, output=tmp_path / "o", progress=True)
    err = capsys.readouterr().err
    assert "[stage 1/2] quantize quanto-int8: started" in seen_at_start[0]
    assert "[stage 1/2] quantize quanto-int8: done in" in seen_at_start[1]  # before stage 2 began
    assert "[stage 2/2] evaluate efficiency: started" in seen_at_start[1]
    assert "[stage 2/2] evaluate efficiency: latency:" in err
    assert "[stage 2/2] evaluate efficiency: done in" in err


def test_no_stage_lines_without_progress(tiny_models, capsys):
    pipeline.compress(str(tiny_models["llama"]), Recipe(stages=[QuantoInt8Config()]), progress=False)
    assert "[stage" not in capsys.readouterr().err


def test_output_config_drops_the_origin_name(tiny_models, tmp_path):
    """A converted model's ``_name_or_path`` / ``_model_name_or_path`` is not written into the output."""
    src = tmp_path / "src"
    import shutil

    shutil.copytree(tiny_models["llama"], src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["_model_name_or_path"] = "Smollm2 135M 8k Lc100K Mix1 Ep2"  # what a GGUF conversion leaves
    (src / "config.json").write_text(json.dumps(cfg))
    pipeline.compress(str(src), Recipe(stages=[QuantoInt8Config()]), output=tmp_path / "o", progress=False)
    out = json.loads((tmp_path / "o" / "config.json").read_text())
    assert "_model_name_or_path" not in out and "_name_or_path" not in out


def test_pyproject_license_is_an_spdx_string():
    """setuptools reads pyproject.toml without the `project.license as a TOML table` deprecation."""
    import warnings
    from pathlib import Path

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), Path(__file__).parents[1] / "pyproject.toml")
    assert not [w for w in caught if "license" in str(w.message)], [str(w.message)[:120] for w in caught]
    assert dist.metadata.license_expression == "Apache-2.0"
