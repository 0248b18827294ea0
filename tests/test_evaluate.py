"""Evaluation: metrics, dataset checks, efficiency, reports (tiny random models; fast)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hfcompress.errors import HFCompressError, UnsupportedError, UsageError
from hfcompress.evaluate import (
    AccuracyConfig,
    EfficiencyConfig,
    F1Config,
    MetricConfig,
    PerplexityConfig,
    evaluate,
    load_metric,
    make_plots,
    render_markdown,
)
from hfcompress.evaluate.perplexity import perplexity_of_ids, tokenize_corpus, tokenize_prefix

MOVIES = "fixtures/movie-review-snippets"
N_ROWS = 400  # validation rows used (the tiny model is fast, but the test machine is shared)
FAST_EFF = dict(warmup=1, runs=2, gen_runs=1, gen_new_tokens=4, gen_prompt_tokens=8, latency_seq_len=16)


@pytest.fixture(scope="module")
def movies(shared_datasets) -> str:
    return str(shared_datasets / MOVIES)


def _write_dataset(folder: Path, splits: dict[str, dict], features=None) -> str:
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    for split, columns in splits.items():
        ds = datasets.Dataset.from_dict(columns, features=features)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return str(folder)


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fail the test if any model weights are loaded (errors must come first)."""
    import hfcompress.evaluate.core as core

    def boom(*a, **k):
        raise AssertionError("model loaded before the dataset was validated")

    monkeypatch.setattr(core, "load", boom, raising=False)
    import hfcompress.loading as loading

    monkeypatch.setattr(loading, "load", boom)


# ------------------------------------------------------------------ metric modules
def test_local_metric_modules_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    acc = load_metric("accuracy")
    assert acc.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])["accuracy"] == 0.75
    f1 = load_metric("f1")
    # class 1: tp=1 fp=1 fn=0 -> 2/3; macro over {0,1,2}: (1 + 2/3 + 2/3) / 3
    assert f1.compute(predictions=[0, 1, 1], references=[0, 1, 0])["f1"] == pytest.approx(2 / 3)
    macro = f1.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2], average="macro")["f1"]
    assert macro == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    with pytest.raises(UsageError, match="not shipped"):
        load_metric("bleu")


# ------------------------------------------------------------------ accuracy / f1
def test_accuracy_and_f1_match_hand_count(tiny_models, movies):
    import hfcompress

    bundle = hfcompress.load(tiny_models["bert"])
    kw = dict(dataset=movies, split="validation", text_column="sentence", max_samples=N_ROWS, max_length=64)
    report = evaluate(bundle, [AccuracyConfig(**kw), F1Config(**kw)])
    import datasets

    ds = datasets.load_dataset(movies, split="validation").select(range(N_ROWS))
    preds = []
    with torch.no_grad():
        for i in range(0, len(ds), 64):
            enc = bundle.tokenizer(list(ds["sentence"][i:i + 64]), padding=True, truncation=True, max_length=64,
                                   return_tensors="pt")
            preds += bundle.model(**enc).logits.argmax(-1).tolist()
    refs = ds["label"]
    hand_acc = sum(p == r for p, r in zip(preds, refs, strict=True)) / len(refs)
    tp = sum(p == 1 and r == 1 for p, r in zip(preds, refs, strict=True))
    fp = sum(p == 1 and r == 0 for p, r in zip(preds, refs, strict=True))
    fn = sum(p == 0 and r == 1 for p, r in zip(preds, refs, strict=True))
    hand_f1 = 2 * tp / (2 * tp + fp + fn)
    by_metric = {r["metric"]: r for r in report["results"]}
    assert by_metric["accuracy"]["value"] == pytest.approx(hand_acc, abs=1e-12)
    assert by_metric["f1"]["value"] == pytest.approx(hand_f1, abs=1e-12)
    assert by_metric["accuracy"]["settings"]["examples"] == len(ds) == N_ROWS
    for r in report["results"]:  # stable schema
        assert set(r) >= {"name", "metric", "value", "dataset", "config", "split", "model", "settings", "details"}
        assert r["model"] == "compressed" and r["split"] == "validation"


def test_generic_metric_hook(tiny_models, movies):
    import hfcompress

    bundle = hfcompress.load(tiny_models["bert"])
    rep = evaluate(bundle, [MetricConfig(metric="f1", dataset=movies, split="validation", text_column="sentence",
                                         max_samples=50, compute_kwargs={"average": "macro"})])
    (r,) = rep["results"]
    assert r["name"] == "f1" and r["metric"] == "f1" and 0 <= r["value"] <= 1
    assert r["settings"]["examples"] == 50 and r["settings"]["average"] == "macro"


# ------------------------------------------------------------------ bad input, before model work
def test_missing_column(tiny_models, movies, no_model_load):
    with pytest.raises(UsageError, match="no text column 'text'.*sentence"):
        evaluate(str(tiny_models["bert"]), [AccuracyConfig(dataset=movies, split="validation")])


def test_no_label_column(tiny_models, tmp_path, no_model_load):
    ds = _write_dataset(tmp_path / "ds", {"validation": {"text": ["a", "b"]}})
    with pytest.raises(UsageError, match="no label column 'label'"):
        evaluate(str(tiny_models["bert"]), [AccuracyConfig(dataset=ds)])


def test_unlabelled_split(tiny_models, tmp_path, no_model_load):
    ds = _write_dataset(tmp_path / "ds", {"test": {"text": ["a", "b"], "label": [-1, -1]}})
    with pytest.raises(UsageError, match="unlabelled .*labelled split"):
        evaluate(str(tiny_models["bert"]), [F1Config(dataset=ds, split="test")])


def test_empty_split(tiny_models, tmp_path, no_model_load):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
    ds = _write_dataset(tmp_path / "ds", {"validation": {"text": [], "label": []}, "train": {"text": ["x"],
                                                                                          "label": [0]}},
                        features=features)
    with pytest.raises(UsageError, match="empty"):
        evaluate(str(tiny_models["bert"]), [AccuracyConfig(dataset=ds)])
    with pytest.raises(UsageError):  # perplexity: no text at all
        evaluate(str(tiny_models["llama"]), [PerplexityConfig(dataset=ds, split="validation")])


def test_wrong_label_set(tmp_path, no_model_load):
    import datasets

    from hfcompress.testing.models import tiny_model, tiny_tokenizer

    model = tiny_model("bert")
    model.config.id2label = {0: "sports", 1: "politics"}
    model.config.label2id = {"sports": 0, "politics": 1}
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    ds = _write_dataset(tmp_path / "ds", {"validation": {"text": ["a", "b"], "label": [0, 1]}}, features)
    with pytest.raises(UsageError, match=r"labels \['negative', 'positive'\] do not match the model's labels"):
        evaluate(str(tmp_path / "m"), [AccuracyConfig(dataset=ds)])
    # Too many classes for a 2-label head (plain integer labels).
    ds3 = _write_dataset(tmp_path / "ds3", {"validation": {"text": ["a", "b", "c"], "label": [0, 1, 2]}})
    with pytest.raises(UsageError, match="3 classes .* 2 labels"):
        evaluate(str(tmp_path / "m"), [AccuracyConfig(dataset=ds3)])


def test_label_names_mapped_by_name(tmp_path):
    """Dataset names in another order than the model's are mapped by name, not index."""
    import datasets

    from hfcompress.evaluate.tasks import ClassificationData, bind_labels

    class Cfg:
        id2label = {0: "POSITIVE", 1: "NEGATIVE"}
        num_labels = 2

    data = ClassificationData(texts=["a", "b"], pairs=None, labels=[0, 1], label_names=["negative", "positive"])
    cfg = AccuracyConfig(dataset="x")
    assert bind_labels(cfg, data, Cfg, "sequence-classification") == [1, 0]
    with pytest.raises(UnsupportedError, match="sequence-classification"):
        bind_labels(cfg, data, Cfg, "causal-lm")
    del datasets


def test_task_mismatch_before_load(tiny_models, movies, no_model_load):
    with pytest.raises(UnsupportedError, match="perplexity needs a causal LM"):
        evaluate(str(tiny_models["bert"]), [PerplexityConfig(dataset=movies, split="validation",
                                                             text_column="sentence")])


def test_config_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="stride"):
        PerplexityConfig(seq_len=128, stride=256)
    with pytest.raises(ValidationError):
        EfficiencyConfig(runs=0)


# ------------------------------------------------------------------ perplexity
def test_tokenize_prefix_matches_full(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    texts = [f"line {i} " + "abc " * (i % 7) for i in range(3000)]
    full = tokenize_corpus(tok, texts, max_tokens=5000)
    assert torch.equal(tokenize_prefix(tok, texts, 5000), full)
    assert torch.equal(tokenize_prefix(tok, texts[:3], 5000), tokenize_corpus(tok, texts[:3]))


def test_perplexity_matches_direct_computation(tiny_models):
    import hfcompress

    bundle = hfcompress.load(tiny_models["llama"])
    ids = torch.randint(4, 256, (300,), generator=torch.Generator().manual_seed(0))
    res = perplexity_of_ids(bundle.model, ids, seq_len=100, batch_size=2)
    nll, n = 0.0, 0
    with torch.no_grad():
        for b in range(0, 300, 100):
            seg = ids[b:b + 100][None]
            logits = bundle.model(seg).logits[0, :-1]
            nll += float(torch.nn.functional.cross_entropy(logits, seg[0, 1:], reduction="sum"))
            n += seg.numel() - 1
    assert res["tokens"] == n == 297
    assert res["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    strided = perplexity_of_ids(bundle.model, ids, seq_len=100, stride=50)
    assert strided["tokens"] == 299  # every token after the first scored once


# ------------------------------------------------------------------ efficiency
def _prune_half(model) -> int:
    """Zero the 50% smallest-magnitude weights of every Linear; returns how many were zeroed."""
    zeroed = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                w = m.weight
                k = w.numel() // 2
                idx = w.abs().flatten().argsort()[:k]
                newly = int((w.flatten()[idx] != 0).sum())
                w.view(-1)[idx] = 0
                zeroed += newly
    return zeroed


def test_efficiency_pruned_vs_baseline(tiny_models, tmp_path):
    import hfcompress
    from hfcompress.pipeline import count_parameters

    base = hfcompress.load(tiny_models["llama"])
    pruned = hfcompress.load(tiny_models["llama"])
    zeroed = _prune_half(pruned.model)
    out = tmp_path / "eval" / "report.json"
    report = evaluate(pruned, [EfficiencyConfig(**FAST_EFF)], baseline=str(tiny_models["llama"]), output=out)
    rows = {r["metric"]: r for r in report["comparison"]}
    res = {(r["model"], r["metric"]): r["value"] for r in report["results"]}
    total = res["compressed", "parameters"]
    assert total == res["baseline", "parameters"] == count_parameters(base.model)["parameters"]
    # Non-zero count matches the sparsity we applied.
    assert res["compressed", "nonzero_parameters"] == res["baseline", "nonzero_parameters"] - zeroed
    assert res["compressed", "linear_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert res["baseline", "linear_sparsity"] < 0.01
    assert rows["nonzero_parameters"]["ratio"] == pytest.approx(
        res["compressed", "nonzero_parameters"] / res["baseline", "nonzero_parameters"])
    # Dense storage: same bytes in memory and on disk; bits per weight = 32 (float32).
    assert rows["memory_bytes"]["ratio"] == 1.0
    assert res["compressed", "bits_per_weight"] == pytest.approx(32.0)
    mem = next(r for r in report["results"] if r["metric"] == "memory_bytes" and r["model"] == "compressed")
    assert mem["details"]["parameter_bytes"] == 4 * total
    assert mem["value"] == mem["details"]["parameter_bytes"] + mem["details"]["buffer_bytes"]
    assert rows["disk_bytes"]["ratio"] == pytest.approx(1.0, abs=0.01)
    assert res["compressed", "disk_bytes"] == pytest.approx(4 * total, rel=0.02)
    assert res["baseline", "disk_bits_per_weight"] == pytest.approx(8 * res["baseline", "disk_bytes"] / total)
    for label in ("compressed", "baseline"):
        assert res[label, "latency_ms"] > 0 and res[label, "generate_tokens_per_s"] > 0
        assert res[label, "peak_rss_bytes"] > 0
    # Report files: JSON, Markdown, plots that open as PNG.
    from PIL import Image

    saved = json.loads(out.read_text())
    assert saved["schema_version"] == 1 and saved["models"]["baseline"]["task"] == "causal-lm"
    md = out.with_suffix(".md").read_text()
    assert "| Metric | Dataset | Baseline | Compressed | Δ | Ratio |" in md
    pngs = sorted(out.parent.glob("report_eval_*.png"))
    assert [p.name for p in pngs] == ["report_eval_sparsity.png"]  # no quality metric: no scatter
    with Image.open(pngs[0]) as img:
        assert img.format == "PNG" and img.size[0] > 100


def test_memory_bytes_counts_buffers_and_packed_storage():
    from hfcompress.evaluate.efficiency import logical_numel, size_figures, tensor_bytes

    m = torch.nn.Sequential(torch.nn.Linear(8, 4, bias=False), torch.nn.BatchNorm1d(4))
    fig = size_figures(m)
    assert fig["parameters"] == 32 + 8
    assert fig["parameter_bytes"] == 40 * 4
    assert fig["buffer_bytes"] == (4 + 4) * 4 + 8  # running mean / var + num_batches_tracked (int64)
    packed = torch.zeros(16, 1, dtype=torch.uint8)

    class QS:
        shape = torch.Size([8, 4])
        absmax = torch.zeros(2)

    packed.quant_state = QS()
    assert logical_numel(packed) == 32 and tensor_bytes(packed) == 16 + 8


# ------------------------------------------------------------------ report
def _fake_report() -> dict:
    from hfcompress.evaluate import make_result
    from hfcompress.evaluate.report import build_report

    results = []
    for model, ppl, size, sp in (("baseline", 20.0, 4000, 0.0), ("compressed", 25.0, 2000, 0.5)):
        results.append(make_result("perplexity", "perplexity", ppl, model=model, higher_is_better=False,
                                   dataset="d", config="c", split="test", settings={"seq_len": 8}))
        results.append(make_result("efficiency", "disk_bytes", size, model=model, unit="bytes",
                                   higher_is_better=False))
        results.append(make_result("efficiency", "linear_sparsity", sp, model=model,
                                   details={"layers": {f"model.layers.{i}.mlp.up_proj": sp for i in range(3)}}))
    return build_report(results, {})


def test_markdown_and_plots(tmp_path):
    from PIL import Image

    report = _fake_report()
    md = render_markdown(report)
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert lines[0] == "| Metric | Dataset | Baseline | Compressed | Δ | Ratio |"
    assert set(lines[1].replace("|", "")) <= {"-", ":"}
    assert all(ln.count("|") == 7 for ln in lines)
    ppl = next(ln for ln in lines if ln.startswith("| perplexity"))
    assert "20.00" in ppl and "25.00" in ppl and "+5.00 ✗" in ppl and "1.250×" in ppl
    disk = next(ln for ln in lines if ln.startswith("| disk_bytes"))
    assert "0.500×" in disk and "✓" in disk
    paths = make_plots(report, tmp_path)
    assert {p.name for p in paths} == {"eval_sparsity.png", "eval_quality_vs_size.png"}
    for p in paths:
        with Image.open(p) as img:
            img.verify()
            assert img.format == "PNG"
    # An hfcompress.json-shaped report (pipeline) renders too; without baseline: one value column.
    single = {"evaluation": [r for r in report["results"] if r["model"] == "compressed"]}
    md1 = render_markdown(single, title=None)
    assert md1.splitlines()[0] == "| Metric | Dataset | Value |"


# ------------------------------------------------------------------ pipeline stage + CLI
def test_recipe_stage_with_baseline(tiny_models, tmp_path, shared_datasets):
    import hfcompress
    from hfcompress.recipes import parse_recipe

    wiki = shared_datasets / "Salesforce" / "wikitext"
    recipe = parse_recipe(f"""
stages:
  - evaluate: {{method: perplexity, dataset: "{wiki}", max_tokens: 600, seq_len: 128, baseline: true}}
  - evaluate: {{method: efficiency, baseline: true, runs: 2, warmup: 1, gen_runs: 1, gen_new_tokens: 4,
                latency_seq_len: 16, peak_rss: inprocess}}
""")
    result = hfcompress.compress(str(tiny_models["llama"]), recipe, output=tmp_path / "out", progress=False)
    saved = json.loads((tmp_path / "out" / "hfcompress.json").read_text())
    ev = saved["evaluation"]
    ppl = {r["model"]: r["value"] for r in ev if r["metric"] == "perplexity"}
    assert set(ppl) == {"compressed", "baseline"} and ppl["compressed"] == pytest.approx(ppl["baseline"])
    assert ev[0]["config"] == "wikitext-2-raw-v1" and ev[0]["settings"]["corpus_tokens"] == 600
    assert (tmp_path / "out" / "eval_quality_vs_size.png").is_file()
    assert (tmp_path / "out" / "eval_sparsity.png").is_file()
    assert "perplexity" in result.report["stages"][0]["summary"]
    md = render_markdown(saved)
    assert "| perplexity ↓ |" in md and "wikitext / wikitext-2-raw-v1 / test" in md
    assert str(shared_datasets) not in md  # local paths are never published


def test_cli_bad_column_one_line(tiny_models, movies, capsys):
    from hfcompress.cli import main

    rc = main(["evaluate", str(tiny_models["bert"]), "--dataset", movies, "--metric", "accuracy"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no text column 'text'" in err


def test_cli_report(tiny_models, movies, tmp_path, capsys):
    from hfcompress.cli import main

    out = tmp_path / "r" / "report.json"
    rc = main(["evaluate", str(tiny_models["bert"]), "--baseline", str(tiny_models["bert"]), "--dataset", movies,
               "--split", "validation", "--text-column", "sentence", "--metric", "accuracy", "--max-samples", "64",
               "--metric", "efficiency", "--runs", "2", "--warmup", "1", "--latency-seq-len", "16",
               "--peak-rss", "off", "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    acc = {r["model"]: r["value"] for r in report["results"] if r["metric"] == "accuracy"}
    assert acc["compressed"] == acc["baseline"]
    assert out.with_suffix(".md").is_file() and (out.parent / "report_eval_quality_vs_size.png").is_file()
    assert "| accuracy ↑ |" in capsys.readouterr().out
    # Existing report: refused before any work unless --overwrite.
    rc = main(["evaluate", str(tiny_models["bert"]), "--metric", "efficiency", "--output", str(out)])
    assert rc == 1 and "--overwrite" in capsys.readouterr().err


def test_top_level_verb_is_callable(tiny_models):
    import hfcompress

    assert callable(hfcompress.evaluate)
    with pytest.raises(HFCompressError):
        hfcompress.evaluate(str(tiny_models["bert"]), ["accuracy"])
