"""Model cards: metadata (base_model, relation, tags, datasets, model-index), body, no leaks."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

import stage_fixtures  # noqa: F401 - registers prune/test-zero-rows
from hfcompress.cards import build_card, write_card
from hfcompress.cli import main
from hfcompress.errors import UsageError


@pytest.fixture()
def output(tiny_models, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - prune:\n      method: test-zero-rows\n"
                      f"      calibration: {{dataset: {tmp_path}/my-local-data}}\n")
    out = tmp_path / "out"
    assert main(["compress", str(tiny_models["llama"]), "-r", str(recipe), "-o", str(out)]) == 0
    return out


def _with_report(folder, **changes):
    path = folder / "hfcompress.json"
    report = json.loads(path.read_text())
    report.update(changes)
    path.write_text(json.dumps(report))


def test_local_source_has_no_base_model(output, tmp_path):
    text = (output / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.base_model is None
    assert "a local folder (`llama`)" in text
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert {"hfcompress", "pruned", "sparse", "test-zero-rows"} <= set(card.data.tags)
    assert "# out" in text, "the card is titled by the output folder, not its temporary name"
    for f in output.iterdir():
        if f.suffix in (".md", ".json", ".yaml"):
            assert str(tmp_path) not in f.read_text(), f"local path leaked into {f.name}"
    assert "local:my-local-data" in (output / "recipe.yaml").read_text()


def test_hub_source_metadata_and_eval_results(output):
    _with_report(
        output,
        source={"repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "main", "commit": "a" * 40,
                "license": "apache-2.0"},
        evaluation=[
            {"name": "wikitext", "metric": "perplexity", "value": 31.5, "dataset": "Salesforce/wikitext",
             "config": "wikitext-2-raw-v1", "split": "test", "model": "compressed"},
            {"name": "wikitext", "metric": "perplexity", "value": 28.1, "dataset": "Salesforce/wikitext",
             "config": "wikitext-2-raw-v1", "split": "test", "model": "baseline"},
        ],
        stages=[{"family": "prune", "method": "wanda", "params": {"sparsity": 0.5}, "seconds": 1.0,
                 "summary": {}},
                {"family": "quantize", "method": "bnb-nf4", "params": {}, "seconds": 2.0, "summary": {"bits": 4}}],
    )
    path = write_card(output, repo_id="me/smol-wanda-nf4")
    card = ModelCard.load(path)
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data.base_model_relation == "quantized"
    assert data.license == "apache-2.0"
    assert {"4-bit", "bitsandbytes", "quantized", "wanda", "bnb-nf4"} <= set(data.tags)
    assert data.datasets == ["Salesforce/wikitext"]
    (result,) = data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_name) == ("perplexity", 31.5,
                                                                            "Salesforce/wikitext")
    assert 'from_pretrained("me/smol-wanda-nf4")' in card.text
    assert "revision `main`" in card.text and "aaaaaaaaaaaa" in card.text


def test_custom_format_snippet_imports_hfcompress(output):
    cfg = json.loads((output / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "hfcompress-sparse"}
    (output / "config.json").write_text(json.dumps(cfg))
    text = str(build_card(output, repo_id="me/x"))
    assert "import hfcompress" in text


def test_card_cli(output, capsys):
    (output / "README.md").unlink()
    assert main(["card", str(output), "--repo-id", "me/y"]) == 0
    assert (output / "README.md").is_file()
    assert 'from_pretrained("me/y")' in (output / "README.md").read_text()


def test_snippet_loads_only_the_processor_the_folder_ships(output):
    assert 'tokenizer = AutoTokenizer.from_pretrained("me/x")' in str(build_card(output, repo_id="me/x"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (output / name).unlink(missing_ok=True)
    text = str(build_card(output, repo_id="me/x"))
    assert "AutoTokenizer" not in text and 'model = AutoModelForCausalLM.from_pretrained("me/x")' in text
    (output / "preprocessor_config.json").write_text("{}")
    assert 'processor = AutoProcessor.from_pretrained("me/x")' in str(build_card(output, repo_id="me/x"))


def test_card_needs_report(tmp_path):
    with pytest.raises(UsageError, match="no hfcompress.json"):
        build_card(tmp_path)
