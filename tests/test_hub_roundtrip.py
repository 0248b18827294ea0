"""Every compressed format: compress a tiny model, push it to the local Hub, pull it back in a
fresh process with a fresh cache, and get the same outputs (issue 8). Also the card's metadata
as the Hub sees it (base_model, eval results) and the server's YAML validation."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import hfcompress
from hfcompress.distill import KDConfig, LoraFinetuneConfig
from hfcompress.distill._tiny import text_dataset
from hfcompress.evaluate import PerplexityConfig
from hfcompress.prune import MagnitudeConfig
from hfcompress.quantize.bnb import BnbFP4Config, BnbInt8Config, BnbNF4Config
from hfcompress.recipes import Recipe
from hfcompress.registry import get_method

IDS = [[1, 40, 50, 60, 70, 80, 90, 41]]
TRAIN = {"max_steps": 2, "learning_rate": 1e-3, "disable_tqdm": True, "report_to": "none"}


def _formats(data: str) -> dict[str, list]:
    quanto = get_method("quantize", "quanto-int8").config_cls
    quanto4 = get_method("quantize", "quanto-int4").config_cls
    train_data = {"dataset": data, "seq_len": 32}
    return {
        "structured-ffn": [MagnitudeConfig(structured="ffn", sparsity=0.25)],
        "sparse-compressed": [MagnitudeConfig(sparsity=0.5, sparse_format=True)],
        "bnb-int8": [BnbInt8Config()],
        "bnb-nf4": [BnbNF4Config()],
        "bnb-fp4": [BnbFP4Config()],
        "quanto-int8": [quanto()],
        "quanto-int4": [quanto4(group_size=32)],
        "lora-merged": [MagnitudeConfig(sparsity=0.5),
                        LoraFinetuneConfig(r=4, data=train_data, training=TRAIN)],
        "distilled": [KDConfig(student_layers=1, data=train_data, training=TRAIN)],
    }


def _logits(model) -> list:
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits.float().tolist()


PULL_SCRIPT = """
import json, sys, torch
import hfcompress
from transformers import AutoModelForCausalLM
out = {}
for repo in json.loads(sys.argv[1]):
    model = AutoModelForCausalLM.from_pretrained(repo)  # plain transformers after `import hfcompress`
    with torch.no_grad():
        out[repo] = model(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits.float().tolist()
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_every_format_round_trips_through_the_hub(hub_env, tiny_models, tmp_path):
    hub = hub_env
    data = str(text_dataset(tmp_path / "ds"))
    dense = f"{hub.user}/rt-dense"
    hfcompress.push(tiny_models["llama"], dense)
    folders = {"dense": tiny_models["llama"]}
    for name, stages in _formats(data).items():
        # Every format starts from the Hub repo id, so the cards have a real base_model.
        out = tmp_path / name
        hfcompress.compress(dense, Recipe(stages=stages), output=out, progress=False)
        folders[name] = out
    expected = {}
    repos = {}
    for name, folder in folders.items():
        expected[name] = _logits(hfcompress.load(folder).model)
        repo = f"{hub.user}/rt-{name}"
        if name != "dense":
            hfcompress.push(folder, repo)
        repos[name] = repo

    proc = hub.run([sys.executable, "-c", PULL_SCRIPT, json.dumps(list(repos.values())), json.dumps(IDS)],
                   env={"HF_HOME": str(tmp_path / "fresh-home")}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    pulled = json.loads(line[len("RESULT"):])
    for name, repo in repos.items():
        got, want = torch.tensor(pulled[repo]), torch.tensor(expected[name])
        assert got.shape == want.shape, name
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), f"{name}: outputs differ after pull"

    info = hub.api().model_info(repos["bnb-nf4"])
    assert info.card_data.base_model == dense
    assert info.card_data.base_model_relation == "quantized"
    assert "4-bit" in info.card_data.tags
    structured = hub.api().model_info(repos["structured-ffn"]).card_data
    assert "structured-pruning" in structured.tags
    assert "import hfcompress" in (tmp_path / "sparse-compressed" / "README.md").read_text()


def test_card_with_eval_results_on_the_hub(hub_env, tiny_models, tmp_path, shared_datasets):
    from huggingface_hub import ModelCard

    hub = hub_env
    dense = f"{hub.user}/card-src"
    hfcompress.push(tiny_models["llama"], dense)
    out = tmp_path / "out"
    recipe = Recipe(stages=[MagnitudeConfig(sparsity=0.5),
                            PerplexityConfig(dataset="Salesforce/wikitext", max_tokens=256, seq_len=64)])
    hfcompress.compress(dense, recipe, output=out, progress=False)
    repo = f"{hub.user}/card-pruned"
    hfcompress.push(out, repo)
    card = ModelCard.load(repo)
    card.validate()  # the server's /api/validate-yaml
    data = hub.api().model_info(repo).card_data
    assert data.base_model == dense
    (result,) = data.eval_results
    assert result.metric_type == "perplexity" and result.dataset_name == "Salesforce/wikitext"
    assert result.metric_value == pytest.approx(
        json.loads((out / "hfcompress.json").read_text())["evaluation"][0]["value"], rel=1e-3)
    assert "| perplexity" in card.text and ".png" in card.text
