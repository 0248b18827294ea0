"""Quantization benchmark on SmolLM2-135M-Instruct: size, bits/weight, perplexity, CPU latency.

Perplexity: first 16,384 tokens of WikiText-2-raw-v1 test, 512-token windows (no overlap).
Latency: median of 3 forward passes over one 512-token window (batch 1), 2 threads.
Each method is quantized from the fp32 model, measured in memory, saved, reloaded with
plain ``from_pretrained`` (after ``import hfcompress``) and checked to give the same logits.

    .venv/bin/python benchmarks/quantize_smollm2.py --methods fp32,bnb-nf4,calibrated-nf4

Results are merged into benchmarks/results/quantize_smollm2.json (+ .md).
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
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
METHODS = ["fp32", "bnb-int8", "bnb-nf4", "bnb-nf4-dq", "bnb-fp4", "quanto-int8", "quanto-int4", "quanto-int2", "gptq",
           "calibrated-nf4", "calibrated-nf4-dq", "calibrated-int4"]


#: calibrated method -> the round-to-nearest method with the same storage layout
BASELINE = {"calibrated-nf4": "bnb-nf4", "calibrated-nf4-dq": "bnb-nf4-dq", "calibrated-int4": "quanto-int4"}


def make_config(method: str, samples: int):
    from hfcompress.config import CalibrationConfig
    from hfcompress.registry import get_method

    kwargs = {}
    if method.endswith("-dq"):  # e.g. bnb-nf4-dq: with double quantization of the absmax
        method = method[:-3]
        kwargs["double_quant"] = True
    cls = get_method("quantize", method).config_cls
    if "calibration" in cls.model_fields:
        kwargs["calibration"] = CalibrationConfig(dataset=str(DATA / "fixtures/enwiki-sample"), samples=samples,
                                                  seq_len=512)
    if method == "quanto-int4" or method == "quanto-int2":
        kwargs["group_size"] = 64
    return cls(**kwargs)


@torch.no_grad()
def latency(model, ids) -> float:
    window = ids[:512].unsqueeze(0)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model(input_ids=window)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(method: str, samples: int, max_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM

    import hfcompress
    from hfcompress.assets import ensure_asset
    from hfcompress.data import load_texts
    from hfcompress.evaluate.perplexity import perplexity_of_ids, tokenize_corpus
    from hfcompress.pipeline import StageContext, run_stage
    from hfcompress.quantize.bnb import harden_bnb4

    bundle = hfcompress.load(ensure_asset(MODEL), dtype="float32")
    texts = load_texts(str(DATA / "Salesforce/wikitext"), "wikitext-2-raw-v1", "test")
    ids = tokenize_corpus(bundle.tokenizer, texts, max_tokens=max_tokens)
    row: dict = {"method": method}
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        if method != "fp32":
            rec = run_stage(bundle, make_config(method, samples), StageContext(work_dir=Path(work), progress=False))
            row["quantize_seconds"] = round(time.perf_counter() - t, 1)
            s = rec["summary"]
            row.update({k: s.get(k) for k in ("kind", "disk_bytes", "memory_bytes", "quantized_linear_ratio_vs_fp32",
                                               "bits_per_weight_quantized_linears", "bits_per_weight_model",
                                               "unquantized_linear_modules")})
        model = bundle.model
        out = Path(work) / "saved"
        model.save_pretrained(out)
        from hfcompress.quantize.base import memory_bytes, safetensors_sizes

        row["disk_bytes"] = sum(safetensors_sizes(out).values())
        row["memory_bytes"] = memory_bytes(model)
        t = time.perf_counter()
        ppl = perplexity_of_ids(model, ids, seq_len=512)
        row["perplexity"] = round(ppl["perplexity"], 3)
        row["eval_tokens"] = ppl["tokens"]
        row["eval_seconds"] = round(time.perf_counter() - t, 1)
        row["latency_512_s"] = round(latency(model, ids), 3)
        probe = ids[:64].unsqueeze(0)
        with torch.no_grad():
            before = model(input_ids=probe).logits
            reloaded = AutoModelForCausalLM.from_pretrained(out)
            harden_bnb4(reloaded)
            after = reloaded(input_ids=probe).logits
        row["reload_max_abs_logit_diff"] = float((before - after).abs().max())
    return row


def measure_latency(method: str) -> float:
    """Latency on an otherwise idle machine; calibrated-* run the kernels of the format they are stored in."""
    import hfcompress
    from hfcompress.assets import ensure_asset
    from hfcompress.data import load_texts
    from hfcompress.evaluate.perplexity import tokenize_corpus
    from hfcompress.pipeline import StageContext, run_stage

    stored_as = BASELINE
    bundle = hfcompress.load(ensure_asset(MODEL), dtype="float32")
    ids = tokenize_corpus(bundle.tokenizer, load_texts(str(DATA / "Salesforce/wikitext"), "wikitext-2-raw-v1",
                                                       "test"), max_tokens=1024)
    with tempfile.TemporaryDirectory() as work:
        if method != "fp32":
            run_stage(bundle, make_config(stored_as.get(method, method), 1),
                      StageContext(work_dir=Path(work), progress=False))
        latency(bundle.model, ids)  # warm-up
        return round(latency(bundle.model, ids), 3)


def write(rows: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    fp_bytes = rows.get("fp32", {}).get("disk_bytes")
    for r in rows.values():  # whole-model bits/weight = 32 x disk bytes / fp32 disk bytes
        if fp_bytes and r.get("disk_bytes"):
            r["bits_per_weight_model"] = round(32 * r["disk_bytes"] / fp_bytes, 3)
    (RESULTS / "quantize_smollm2.json").write_text(json.dumps(rows, indent=2) + "\n")
    fp = rows.get("fp32", {})
    fp_disk, fp_ppl = fp.get("disk_bytes"), fp.get("perplexity")
    lines = ["| method | kind | disk MB | × fp32 disk | quantized Linear × fp32 | bits/w (Linear) | bits/w (model) "
             "| perplexity | vs fp32 | gap to fp32 closed | latency 512 tok (s) | reload |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in METHODS + [k for k in rows if k not in METHODS]:
        r = rows.get(m)
        if r is None:
            continue
        if r.get("unavailable"):
            lines.append(f"| {m} | | | | | | | unavailable: {r['unavailable']} | | | | |")
            continue
        ratio = f"{r['disk_bytes'] / fp_disk:.3f}" if fp_disk else ""
        gap = ""
        base = rows.get(BASELINE.get(m, ""), {}).get("perplexity")
        if fp_ppl and base and base > fp_ppl and r.get("perplexity"):
            gap = f"{(base - r['perplexity']) / (base - fp_ppl):.0%} of {BASELINE[m]}'s"
        lines.append(
            f"| {m} | {r.get('kind') or 'fp32'} | {r['disk_bytes'] / 1e6:.1f} | {ratio} | "
            f"{r.get('quantized_linear_ratio_vs_fp32') or ''} | {r.get('bits_per_weight_quantized_linears') or 32} | "
            f"{32 * r['disk_bytes'] / fp_disk:.2f} | {r['perplexity']:.2f} | {(r['perplexity'] / fp_ppl - 1):+.1%} | {gap} | {r['latency_512_s']} | "
            f"{'exact' if r['reload_max_abs_logit_diff'] == 0 else r['reload_max_abs_logit_diff']:} |")
    (RESULTS / "quantize_smollm2.md").write_text(
        "SmolLM2-135M-Instruct, CPU (2 threads), perplexity on the first 16,384 WikiText-2 test tokens "
        "(512-token windows). Latency: median of 3 forward passes over one 512-token window, measured in one "
        "run after the others on a shared 2-core machine (noisy; only the order of magnitude is meaningful). "
        "quanto-int4/int2 and calibrated-int4 use group size 64 (SmolLM2 came from Q4_1, group 32 would look "
        "lossless). 'reload exact' = logits of the reloaded checkpoint equal the in-memory model's "
        "(torch.equal; bnb reloads pass through harden_bnb4, see docs/QUANTIZATION.md).\n\n"
        + "\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=16384)
    p.add_argument("--latency-only", action="store_true",
                   help="re-measure only latency (calibrated-* share bnb-nf4 / quanto-int4 kernels and use them)")
    args = p.parse_args()
    torch.set_num_threads(2)
    path = RESULTS / "quantize_smollm2.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    if args.latency_only:
        for method in args.methods.split(","):
            if method in rows and not rows[method].get("unavailable"):
                rows[method]["latency_512_s"] = measure_latency(method)
                print(method, rows[method]["latency_512_s"], flush=True)
        write(rows)
        return 0
    for method in args.methods.split(","):
        if method == "gptq":
            from hfcompress.quantize.gptq import GPTQ_MISSING, gptq_available

            if not gptq_available():
                rows["gptq"] = {"method": "gptq", "unavailable": GPTQ_MISSING}
                write(rows)
                print("gptq: unavailable")
                continue
        t = time.perf_counter()
        row = run(method, args.samples, args.max_tokens)
        row["total_seconds"] = round(time.perf_counter() - t, 1)
        rows[method] = row
        print(json.dumps(row), flush=True)
        write(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
