"""Quantization benchmark on all-MiniLM-L6-v2: size, bits/weight, embedding cosine similarity to fp32, latency.

Quality: mean-pooled sentence embeddings of the first 256 sentences of
fixtures/movie-review-snippets (validation); cosine similarity of each quantized
embedding to the fp32 one (mean and minimum). MiniLM has genuine full-precision
weights (unlike SmolLM2, dequantized from Q4_1), so it is the fairer 4-bit judge.
Calibrated methods use 32 x 128-token windows of fixtures/enwiki-sample.

    .venv/bin/python benchmarks/quantize_minilm.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATA = local_datasets_dir()
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
METHODS = ["fp32", "bnb-int8", "bnb-nf4", "bnb-fp4", "quanto-int8", "quanto-int4", "quanto-int2", "gptq",
           "calibrated-nf4", "calibrated-int4"]


@torch.no_grad()
def embed(model, tok, sentences, batch=64):
    out = []
    for i in range(0, len(sentences), batch):
        enc = tok(sentences[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    torch.set_num_threads(2)
    from transformers import AutoModel

    import hfcompress
    from hfcompress.assets import ensure_asset
    from hfcompress.config import CalibrationConfig
    from hfcompress.data import load_texts
    from hfcompress.pipeline import StageContext, run_stage
    from hfcompress.quantize.base import memory_bytes, safetensors_sizes
    from hfcompress.quantize.bnb import harden_bnb4
    from hfcompress.quantize.gptq import GPTQ_MISSING, gptq_available
    from hfcompress.registry import get_method

    sentences = load_texts(str(DATA / "fixtures/movie-review-snippets"), None, "validation", "sentence")[:256]
    path = RESULTS / "quantize_minilm.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    ref = None
    for method in args.methods.split(","):
        if method == "gptq" and not gptq_available():
            rows["gptq"] = {"method": "gptq", "unavailable": GPTQ_MISSING}
            continue
        bundle = hfcompress.load(ensure_asset(MODEL), dtype="float32")
        if ref is None:
            ref = embed(bundle.model, bundle.tokenizer, sentences)
        row: dict = {"method": method}
        with tempfile.TemporaryDirectory() as work:
            if method != "fp32":
                cls = get_method("quantize", method).config_cls
                kw = {}
                if "calibration" in cls.model_fields:
                    kw["calibration"] = CalibrationConfig(dataset=str(DATA / "fixtures/enwiki-sample"),
                                                          samples=32, seq_len=128)
                if method in ("quanto-int4", "quanto-int2"):
                    kw["group_size"] = 64
                t = time.perf_counter()
                s = run_stage(bundle, cls(**kw), StageContext(work_dir=Path(work), progress=False))["summary"]
                row["quantize_seconds"] = round(time.perf_counter() - t, 1)
                row.update({k: s.get(k) for k in ("kind", "quantized_linear_ratio_vs_fp32",
                                                   "bits_per_weight_quantized_linears", "bits_per_weight_model",
                                                   "unquantized_linear_modules")})
            model = bundle.model
            out = Path(work) / "saved"
            model.save_pretrained(out)
            row["disk_bytes"] = sum(safetensors_sizes(out).values())
            row["memory_bytes"] = memory_bytes(model)
            e = embed(model, bundle.tokenizer, sentences)
            cos = (e * ref).sum(-1)
            row["cosine_mean"] = round(float(cos.mean()), 5)
            row["cosine_min"] = round(float(cos.min()), 5)
            enc = bundle.tokenizer(sentences[:32], padding=True, truncation=True, max_length=128, return_tensors="pt")
            times = []
            with torch.no_grad():
                for _ in range(3):
                    t = time.perf_counter()
                    model(**enc)
                    times.append(time.perf_counter() - t)
                row["latency_32_sentences_s"] = round(statistics.median(times), 3)
                r = AutoModel.from_pretrained(out)
                harden_bnb4(r)
                row["reload_max_abs_diff"] = float((model(**enc).last_hidden_state - r(**enc).last_hidden_state)
                                                   .abs().max())
        rows[method] = row
        print(json.dumps(row), flush=True)
        write(rows)
    write(rows)
    return 0


def write(rows: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    fp_bytes = rows.get("fp32", {}).get("disk_bytes")
    for r in rows.values():  # whole-model bits/weight = 32 x disk bytes / fp32 disk bytes
        if fp_bytes and r.get("disk_bytes"):
            r["bits_per_weight_model"] = round(32 * r["disk_bytes"] / fp_bytes, 3)
    (RESULTS / "quantize_minilm.json").write_text(json.dumps(rows, indent=2) + "\n")
    fp = rows.get("fp32", {}).get("disk_bytes")
    lines = ["| method | kind | disk MB | × fp32 disk | quantized Linear × fp32 | bits/w (Linear) | bits/w (model) "
             "| cosine mean | cosine min | latency 32 sent. (s) | reload |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in METHODS + [k for k in rows if k not in METHODS]:
        r = rows.get(m)
        if r is None:
            continue
        if r.get("unavailable"):
            lines.append(f"| {m} | | | | | | | unavailable: {r['unavailable']} | | | |")
            continue
        lines.append(f"| {m} | {r.get('kind') or 'fp32'} | {r['disk_bytes'] / 1e6:.1f} | "
                     f"{r['disk_bytes'] / fp:.3f} | {r.get('quantized_linear_ratio_vs_fp32') or ''} | "
                     f"{r.get('bits_per_weight_quantized_linears') or 32} | {32 * r['disk_bytes'] / fp:.2f} | "
                     f"{r['cosine_mean']:.4f} | {r['cosine_min']:.4f} | {r['latency_32_sentences_s']} | "
                     f"{'exact' if r['reload_max_abs_diff'] == 0 else r['reload_max_abs_diff']} |")
    (RESULTS / "quantize_minilm.md").write_text(
        "all-MiniLM-L6-v2, CPU (2 threads); cosine similarity of mean-pooled embeddings to fp32 on 256 "
        "movie-review-snippets validation sentences.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
