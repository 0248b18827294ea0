"""Lineage across steps (issue 19 item 10): prune → quantize → push → pull keeps both stages, the
base model, its license and the calibration data in ``hfcompress.json`` and the card, and the
pushed card names the repo it went to."""

from __future__ import annotations

import json
import shutil

import yaml
from huggingface_hub import ModelCard

import hfcompress
from hfcompress.cli import main


def test_prune_quantize_push_pull_keeps_lineage(hub_env, tiny_models, tmp_path):
    hub = hub_env
    base = tmp_path / "base"
    shutil.copytree(tiny_models["llama"], base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny base\n")
    base_repo = f"{hub.user}/lineage-base"
    hfcompress.push(base, base_repo)

    pruned, quantized = tmp_path / "pruned", tmp_path / "quantized"
    assert main(["prune", base_repo, "--method", "magnitude", "--sparsity", "0.5", "-o", str(pruned),
                 "--no-progress"]) == 0
    assert main(["quantize", str(pruned), "--method", "bnb-nf4", "-o", str(quantized), "--no-progress"]) == 0

    report = json.loads((quantized / "hfcompress.json").read_text())
    assert [(s["family"], s["method"]) for s in report["stages"]] == [("prune", "magnitude"), ("quantize", "bnb-nf4")]
    assert report["source"]["repo_id"] == base_repo and report["source"]["license"] == "apache-2.0"
    assert "repo_id" not in report["parent"]  # the input was a local folder
    before, after = report["size"]["before"], report["size"]["after"]
    assert after["nonzero_parameters"] < 0.75 * before["nonzero_parameters"], "ratio against the base model"
    stages = [next(iter(s)) for s in yaml.safe_load((quantized / "recipe.yaml").read_text())["stages"]]
    assert stages == ["prune", "quantize"], "recipe.yaml re-runs the whole chain from the base model"

    repo = f"{hub.user}/lineage-final"
    assert main(["push", str(quantized), repo]) == 0
    _, folder = hfcompress.pull(repo, load=False, output=tmp_path / "pulled")
    card = ModelCard((folder / "README.md").read_text())
    assert card.data.base_model == base_repo
    assert card.data.license == "apache-2.0"
    assert card.data.base_model_relation == "quantized"
    assert {"magnitude", "pruned", "bnb-nf4", "quantized", "4-bit"} <= set(card.data.tags)
    assert f'from_pretrained("{repo}")' in card.text and "REPO_ID" not in card.text
    assert "a local model" not in card.text and "prune | `magnitude`" in card.text
    assert "4-bit NF4 inference is slower" in card.text and "8-bit" not in card.text
    pulled = json.loads((folder / "hfcompress.json").read_text())
    assert len(pulled["stages"]) == 2 and pulled["source"]["repo_id"] == base_repo


def test_push_keeps_a_users_own_readme(hub_env, tiny_models, tmp_path):
    hub = hub_env
    out = tmp_path / "out"
    assert main(["prune", str(tiny_models["llama"]), "--method", "magnitude", "--sparsity", "0.5", "-o", str(out),
                 "--no-progress"]) == 0
    (out / "README.md").write_text("# my own words\n")
    repo = f"{hub.user}/lineage-own-readme"
    hfcompress.push(out, repo)
    _, folder = hfcompress.pull(repo, load=False, output=tmp_path / "pulled")
    assert (folder / "README.md").read_text() == "# my own words\n"
