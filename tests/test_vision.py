"""Vision: image-classification accuracy / F1 through ``evaluate`` (tiny random ViT, tiny image
dataset on the local Hub), the digits dataset builder, and the real ViT digits teacher (``real``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hfcompress.errors import UnsupportedError, UsageError


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64, num_labels=3,
                    id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2},
                    architectures=["ViTForImageClassification"])
    ViTForImageClassification(cfg).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


def _image_dataset(folder: Path, n: int = 12) -> Path:
    import io

    from datasets import ClassLabel, Features, Image
    from PIL import Image as PILImage

    from hfcompress.assets_datasets import write_parquet

    rng = np.random.default_rng(0)
    rows = {"image": [], "label": []}
    for i in range(n):
        buf = io.BytesIO()
        PILImage.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, format="PNG")
        rows["image"].append({"bytes": buf.getvalue(), "path": f"{i}.png"})
        rows["label"].append(i % 3)
    feats = Features({"image": Image(), "label": ClassLabel(names=["cat", "dog", "fox"])})
    write_parquet(rows, feats, folder / "data" / "test-00000-of-00001.parquet")
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: test\n"
                                      "    path: data/test-*\n---\n# tiny images\n")
    return folder


def test_image_accuracy_and_f1_through_local_hub(hub_env, tiny_vit, tmp_path):
    import datasets
    from transformers import AutoImageProcessor, ViTForImageClassification

    from hfcompress.evaluate import AccuracyConfig, EfficiencyConfig, F1Config, evaluate

    api = hub_env.api()
    repo = "fixtures/tiny-images-acc"
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(_image_dataset(tmp_path / "ds")), repo_id=repo, repo_type="dataset")
    kw = dict(dataset=repo, split="test", batch_size=5)
    report = evaluate(str(tiny_vit), [AccuracyConfig(**kw), F1Config(**kw),
                                      EfficiencyConfig(warmup=0, runs=1, peak_rss="off", measure_disk=False)])
    by = {r["metric"]: r for r in report["results"]}
    # By hand: the same images through the processor and model.
    ds = datasets.load_dataset(repo, split="test")
    proc = AutoImageProcessor.from_pretrained(tiny_vit)
    model = ViTForImageClassification.from_pretrained(tiny_vit).eval()
    with torch.no_grad():
        preds = model(**proc(images=[im.convert("RGB") for im in ds["image"]], return_tensors="pt")).logits.argmax(-1)
    refs = torch.tensor(ds["label"])
    assert by["accuracy"]["value"] == pytest.approx(float((preds == refs).double().mean()), abs=1e-12)
    f1s = []
    for c in range(3):
        tp = int(((preds == c) & (refs == c)).sum())
        fp = int(((preds == c) & (refs != c)).sum())
        fn = int(((preds != c) & (refs == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert by["f1"]["value"] == pytest.approx(sum(f1s) / 3, abs=1e-12)
    assert by["accuracy"]["settings"]["image_column"] == "image" and by["accuracy"]["settings"]["examples"] == 12
    assert by["latency_ms"]["value"] > 0


def test_image_dataset_errors(tiny_vit, tmp_path):
    from hfcompress.evaluate import AccuracyConfig, evaluate
    from hfcompress.evaluate.speech import WERConfig

    ds = str(_image_dataset(tmp_path / "ds", n=3))
    with pytest.raises(UsageError, match="no image column 'picture'"):
        evaluate(str(tiny_vit), [AccuracyConfig(dataset=ds, split="test", image_column="picture")])
    with pytest.raises(UsageError, match="no label column 'target'"):
        evaluate(str(tiny_vit), [AccuracyConfig(dataset=ds, split="test", label_column="target")])
    with pytest.raises(UsageError, match="wer scores speech-seq2seq .* 'image-classification': use --metric accuracy"):
        evaluate(str(tiny_vit), [WERConfig(dataset=ds)])


def test_text_dataset_on_image_model_is_refused(tiny_vit, tmp_path):
    import datasets

    from hfcompress.evaluate import AccuracyConfig, evaluate

    (tmp_path / "t" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).to_parquet(
        str(tmp_path / "t" / "data" / "test-00000-of-00001.parquet"))
    with pytest.raises(UnsupportedError, match="text classification set.*sequence-classification model"):
        evaluate(str(tiny_vit), [AccuracyConfig(dataset=str(tmp_path / "t"), split="test")])


def test_digits_dataset_builder(tmp_path):
    pytest.importorskip("sklearn")
    import datasets

    from hfcompress.assets_datasets import build_digits_dataset

    build_digits_dataset(tmp_path / "digits")
    train = datasets.load_dataset(str(tmp_path / "digits"), split="train")
    test = datasets.load_dataset(str(tmp_path / "digits"), split="test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.features["label"].names == [str(i) for i in range(10)]
    img = test[0]["image"]
    assert img.size == (32, 32) and img.mode == "RGB"
    assert "load_digits" in (tmp_path / "digits" / "README.md").read_text()


@pytest.mark.real
def test_real_vit_digits_teacher_accuracy():
    from hfcompress.assets import DIGITS_DATASET, VIT_DIGITS, ensure_asset
    from hfcompress.evaluate import AccuracyConfig, evaluate

    report = evaluate(str(ensure_asset(VIT_DIGITS)), [AccuracyConfig(dataset=str(ensure_asset(DIGITS_DATASET)),
                                                                     split="test")])
    (acc,) = [r for r in report["results"] if r["metric"] == "accuracy"]
    assert acc["value"] >= 0.95


def test_compressed_vit_card_carries_accuracy_through_the_hub(hub_env, tiny_vit, tmp_path):
    """compress (int8 + accuracy on a Hub dataset) -> push -> pull: the pulled folder loads and its
    card's model-index carries the accuracy measured on that dataset."""
    from hfcompress.evaluate import AccuracyConfig
    from hfcompress.quantize import QuantoInt8Config
    from hfcompress.testing.hub import compress_push_pull

    data = "fixtures/tiny-images-card"
    measured, results = compress_push_pull(
        hub_env, tiny_vit, [QuantoInt8Config(), AccuracyConfig(dataset=data, split="test", batch_size=6)],
        (_image_dataset(tmp_path / "ds"), data), "vit-int8-card", tmp_path)
    (result,) = results
    assert (result.metric_type, result.dataset_name, result.task_type) == \
        ("accuracy", data, "image-classification")
    assert result.metric_value == pytest.approx(measured["accuracy"]["value"], abs=1e-4)
