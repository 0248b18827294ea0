"""The default calibration / training dataset is a real public Hub id, and the local Hub serves an
offline stand-in under it that says what it is (issue 19 item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from hfcompress.cli import main
from hfcompress.config import DEFAULT_CALIBRATION_DATASET, CalibrationConfig
from hfcompress.data import default_calibration_dataset
from hfcompress.distill.data import TrainDataConfig
from hfcompress.hub.seed import SEED_ORGS, STAND_INS

ROOT = Path(__file__).resolve().parents[1]


def _datasets(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "dataset" and isinstance(v, str)] + \
            [d for v in node.values() for d in _datasets(v)]
    if isinstance(node, list):
        return [d for v in node for d in _datasets(v)]
    return []


def test_defaults_and_shipped_recipes_name_a_public_dataset(monkeypatch):
    monkeypatch.delenv("HFCOMPRESS_CALIBRATION", raising=False)
    assert DEFAULT_CALIBRATION_DATASET == "NeelNanda/pile-10k"
    assert CalibrationConfig().dataset == TrainDataConfig().dataset == default_calibration_dataset() == \
        DEFAULT_CALIBRATION_DATASET
    assert DEFAULT_CALIBRATION_DATASET in STAND_INS and DEFAULT_CALIBRATION_DATASET.split("/")[0] in SEED_ORGS
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        for name in _datasets(yaml.safe_load(recipe.read_text())):
            assert not name.startswith("fixtures/"), f"{recipe.name} names {name}, which no public Hub has"


def test_local_hub_serves_the_stand_in(hub_env, tiny_models, tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    ds = load_dataset(DEFAULT_CALIBRATION_DATASET, split="train")
    assert "text" in ds.column_names and len(ds) == 96  # the 96 articles of fixtures/enwiki-sample
    card = DatasetCard.load(DEFAULT_CALIBRATION_DATASET)
    assert "hfcompress-stand-in" in card.data.tags
    assert "This is not NeelNanda/pile-10k" in card.text and "fixtures/enwiki-sample" in card.text
    # a calibrated method with no --calibration runs on the default id, against the local Hub
    out = tmp_path / "o"
    assert main(["prune", str(tiny_models["llama"]), "--method", "wanda", "--sparsity", "0.5", "--samples", "2",
                 "--seq-len", "32", "-o", str(out), "--no-progress"]) == 0
    params = json.loads((out / "hfcompress.json").read_text())["stages"][0]["params"]
    assert params["calibration"]["dataset"] == DEFAULT_CALIBRATION_DATASET
