"""Evaluation on the real SmolLM2-135M and wikitext-2 (``-m real``; about 2 minutes)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.real

# First 4,096 / 2,048 tokens of wikitext-2-raw-v1 test, 512-token windows, stride 512, no BOS.
# (The 16,384-token figure, 28.13, is in benchmarks/results/evaluate_baselines.json.)
PPL_4K = 29.874
PPL_2K = 29.920


def test_smollm2_wikitext_perplexity_cli(smollm2_path, shared_datasets, tmp_path, capsys):
    import torch

    from hfcompress.cli import main

    torch.set_num_threads(2)
    out = tmp_path / "report.json"
    rc = main(["evaluate", str(smollm2_path), "--dataset", str(shared_datasets / "Salesforce" / "wikitext"),
               "--config", "wikitext-2-raw-v1", "--split", "test", "--metric", "perplexity",
               "--max-tokens", "4096", "--seq-len", "512", "--stride", "512", "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    (r,) = json.loads(out.read_text())["results"]
    assert r["settings"]["corpus_tokens"] == 4096 and r["details"]["scored_tokens"] == 4096 - 8
    assert r["settings"]["add_bos"] is False
    assert r["value"] == pytest.approx(PPL_4K, abs=0.02)
    assert 20 < r["value"] < 40  # sane band around the 16k reference 28.1
    assert "| perplexity ↓ |" in out.with_suffix(".md").read_text()


def test_smollm2_perplexity_by_repo_id_through_hub(smollm2_path, hub_env):
    """The dataset by repo id, fetched from the local Hub server (HF_ENDPOINT)."""
    import torch

    import hfcompress
    from hfcompress.evaluate import PerplexityConfig, evaluate

    torch.set_num_threads(2)
    bundle = hfcompress.load(smollm2_path)
    report = evaluate(bundle, [PerplexityConfig(dataset="Salesforce/wikitext", max_tokens=2048)])
    (r,) = report["results"]
    assert r["dataset"] == "Salesforce/wikitext" and r["config"] == "wikitext-2-raw-v1"
    assert r["value"] == pytest.approx(PPL_2K, abs=0.02)
