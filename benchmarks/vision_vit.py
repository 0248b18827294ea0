"""Vision benchmark: the ViT digits teacher (trained here by `hfcompress assets`) on the
fixtures/digits test split: accuracy and macro F1 of fp32, bitsandbytes int8 and NF4 (CPU),
size, and batch-1 latency.

    .venv/bin/python benchmarks/vision_vit.py [--methods fp32,bnb-int8,bnb-nf4]

Writes benchmarks/results/vision_vit.{json,md}. Timings are measured under the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
METHODS = ["fp32", "bnb-int8", "bnb-nf4"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    torch.set_num_threads(2)
    import hfcompress
    from hfcompress.assets import DIGITS_DATASET, VIT_DIGITS, ensure_asset
    from hfcompress.evaluate import AccuracyConfig, EfficiencyConfig, F1Config, evaluate
    from hfcompress.pipeline import StageContext, run_stage
    from hfcompress.quantize.base import memory_bytes, safetensors_sizes
    from hfcompress.registry import get_method

    model = ensure_asset(VIT_DIGITS)
    data = str(ensure_asset(DIGITS_DATASET))
    path = RESULTS / "vision_vit.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    rows["setup"] = {"model": VIT_DIGITS, "dataset": f"{DIGITS_DATASET} (test)",
                     "training": json.loads((model / "training.json").read_text()), "threads": 2}
    for method in args.methods.split(","):
        bundle = hfcompress.load(model, dtype="float32")
        row: dict = {"method": method}
        with tempfile.TemporaryDirectory() as work:
            if method != "fp32":
                cls = get_method("quantize", method).config_cls
                t = time.perf_counter()
                s = run_stage(bundle, cls(), StageContext(work_dir=Path(work), progress=False))["summary"]
                row["quantize_seconds"] = round(time.perf_counter() - t, 1)
                row["kind"] = s.get("kind")
            out = Path(work) / "saved"
            bundle.model.save_pretrained(out)
            row["disk_bytes"] = sum(safetensors_sizes(out).values())
            row["memory_bytes"] = memory_bytes(bundle.model)
            rep = evaluate(bundle, [AccuracyConfig(dataset=data, split="test"), F1Config(dataset=data, split="test"),
                                    EfficiencyConfig(warmup=3, runs=20, peak_rss="inprocess", measure_disk=False)])
            by = {r["metric"]: r["value"] for r in rep["results"]}
            row.update({"accuracy": round(by["accuracy"], 4), "f1_macro": round(by["f1"], 4),
                        "latency_ms_batch1": round(by["latency_ms"], 2), "parameters": by["parameters"]})
        rows[method] = row
        print(json.dumps(row), flush=True)
        write(rows)
    return 0


def write(rows: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vision_vit.json").write_text(json.dumps(rows, indent=2) + "\n")
    tr = rows.get("setup", {}).get("training", {})
    lines = [f"ViT digits teacher (fixtures/vit-digits: {tr.get('parameters', 0) / 1e6:.2f} M parameters, trained "
             f"here for {tr.get('epochs')} epochs) on the fixtures/digits test split (359 images), CPU (2 threads). "
             "Latency: one 32×32 image, median of 20, measured under load.", "",
             "| model | accuracy | macro F1 | disk MB | memory MB | latency ms |", "|---|---|---|---|---|---|"]
    for key in METHODS:
        r = rows.get(key)
        if r:
            lines.append(f"| {key} | {r['accuracy']:.4f} | {r['f1_macro']:.4f} | {r['disk_bytes'] / 1e6:.2f} | "
                         f"{r['memory_bytes'] / 1e6:.2f} | {r['latency_ms_batch1']} |")
    fp, i8 = rows.get("fp32"), rows.get("bnb-int8")
    if fp and i8:
        lines += ["", f"int8 − fp32: {100 * (i8['accuracy'] - fp['accuracy']):+.2f} accuracy points."]
    (RESULTS / "vision_vit.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
