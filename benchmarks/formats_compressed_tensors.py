"""Output formats on the real models: sizes, int4 quality (GPTQ vs round-to-nearest), plain reloads.

SmolLM2-135M-Instruct and all-MiniLM-L6-v2 (see hfcompress/assets.py):

* sizes — Wanda 50 % and SparseGPT 2:4 (SmolLM2, fp16): bytes of the pruned Linear weights in
  hfcompress-sparse vs dense fp16, next to the bitmask layout's physical limit (1 bit + 16 bits per
  non-zero = 0.5625x at 50 %; compressed-tensors no longer writes it); int4 g128 pack-quantized:
  bytes of the quantized Linear weights (codes + scales) vs fp32 (limit 0.125x plus scales);
* quality — int4, group 128, symmetric, compressed-tensors pack-quantized, our GPTQ vs RTN:
  SmolLM2 perplexity on the first 16,384 WikiText-2 test tokens (512-token windows), MiniLM
  mean-pooled embedding cosine to fp32 on 256 movie-review sentences; plus 2:4 + int4;
* embeddings — ``quantize_embeddings`` (the embeddings and tied / untied head on the same grid):
  whole-model size and the quality cost, int8 and int4;
* reload — every compressed-tensors folder is loaded in a fresh interpreter with plain
  transformers (no ``import hfcompress``) and its logits / hidden states compared with the
  in-memory model's; with ``--hub`` also after a push / pull through a local Hub server.

    .venv/bin/python benchmarks/formats_compressed_tensors.py [--hub] [--samples 32]

Writes benchmarks/results/formats.md and formats.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from quantize_minilm import embed  # same mean-pooled embedding as the quantization benchmark

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PROBE = [[1, 504, 3458, 282, 4649, 314, 2213, 30, 378, 1345, 2254, 314]]

RELOAD = """
import json, sys, torch, transformers
folder, cls, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = getattr(transformers, cls).from_pretrained(folder)
with torch.no_grad():
    o = model(input_ids=torch.tensor(ids))
t = o.logits if hasattr(o, "logits") else o.last_hidden_state
torch.save(t, sys.argv[4])
print("HFCOMPRESS_IMPORTED", "hfcompress" in sys.modules)
"""


def outputs(model) -> torch.Tensor:
    with torch.no_grad():
        o = model(input_ids=torch.tensor(PROBE))
    return o.logits if hasattr(o, "logits") else o.last_hidden_state


def plain_reload(folder: Path, cls: str, want: torch.Tensor, env: dict | None = None) -> dict:
    """Load ``folder`` (or a repo id) in a fresh interpreter without hfcompress; compare with ``want``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o.pt"
        proc = subprocess.run([sys.executable, "-c", RELOAD, str(folder), cls, json.dumps(PROBE), str(out)],
                              capture_output=True, text=True, timeout=900, env=env)
        if proc.returncode != 0:
            return {"ok": False, "error": proc.stderr.strip().splitlines()[-1][:300]}
        got = torch.load(out)
    return {"ok": bool(torch.equal(got, want)), "max_abs_diff": float((got - want).abs().max()),
            "hfcompress_imported": "HFCOMPRESS_IMPORTED True" in proc.stdout}


def linear_bytes(folder: Path, names: list[str]) -> int:
    from hfcompress.quantize.base import safetensors_sizes

    total = 0
    for key, n in safetensors_sizes(folder).items():
        module = key.rsplit(".", 1)[0]
        if module in names:
            total += n
    return total


def sparse_sizes(bundle, names: list[str]) -> dict:
    """Bytes of the pruned Linear weights: dense fp16 vs hfcompress-sparse (fp16 values)."""
    from hfcompress.prune.sparse_format import compress_tensor

    dense = ours = nnz = numel = 0
    for n in names:
        w = bundle.model.get_submodule(n).weight.detach().half()
        dense += w.numel() * 2
        parts = compress_tensor(w)
        ours += sum(t.numel() * t.element_size() for t in parts.values())
        nnz += int((w != 0).sum())
        numel += w.numel()
    bitmask = numel / 8 + nnz * 2
    return {"dense_fp16_bytes": dense, "hfcompress_sparse_bytes": ours, "bitmask_layout_bytes": int(bitmask),
            "hfcompress_sparse_vs_fp16": round(ours / dense, 4), "bitmask_layout_vs_fp16": round(bitmask / dense, 4),
            "sparsity": round(1 - nnz / numel, 4)}


#: calibration window length for MiniLM (sentence-length: its inputs are single sentences)
MINILM_SEQ_LEN = 32


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=16, help="calibration windows (Wanda, SparseGPT, GPTQ)")
    p.add_argument("--hub", action="store_true", help="also push / pull each compressed-tensors folder via a local Hub")
    p.add_argument("--models", default="smollm2,minilm")
    p.add_argument("--out", default="formats", help="results file stem under benchmarks/results")
    p.add_argument("--rows", default="all", help="SmolLM2 rows to run (comma-separated labels; default all)")
    args = p.parse_args()
    torch.set_num_threads(2)

    import hfcompress
    from hfcompress.assets import MINILM, SMOLLM2, ensure_asset
    from hfcompress.config import CalibrationConfig
    from hfcompress.data import load_texts, local_datasets_dir
    from hfcompress.evaluate.perplexity import perplexity_of_ids, tokenize_corpus
    from hfcompress.prune import SparseGPTConfig, WandaConfig
    from hfcompress.quantize import GPTQConfig, RTNConfig
    from hfcompress.quantize.base import select_linears
    from hfcompress.recipes import Recipe

    data = local_datasets_dir()
    # rows of an earlier run are kept (a run of some --rows / --models updates only those)
    old = RESULTS / f"{args.out}.json"
    results: dict = json.loads(old.read_text()) if old.exists() else {}
    results = {"smollm2": {}, "minilm": {}, "notes": [], **results}
    work = Path(tempfile.mkdtemp(prefix="formats-bench-"))
    hub = None
    if args.hub:
        from hfcompress.testing.hub import start_hub_server

        hub = start_hub_server(work / "hub-data")

    def calib(seq_len: int) -> CalibrationConfig:  # the same number of tokens for both models
        return CalibrationConfig(dataset=str(data / "fixtures/enwiki-sample"), samples=args.samples * 512 // seq_len,
                                 seq_len=seq_len)

    def run(src: Path, stages: list, name: str):
        t = time.time()
        res = hfcompress.compress(str(src), Recipe(stages=stages), output=work / name, progress=False)
        return res, round(time.time() - t, 1)

    def save() -> None:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / f"{args.out}.md").write_text(render(results))

    def check_reload(res, name: str, cls: str, row: dict) -> None:
        want = outputs(res.bundle.model)
        row["reload_plain_transformers"] = plain_reload(res.output, cls, want)
        if hub is not None:
            repo = f"{hub.user}/bench-{re.sub(r'[^A-Za-z0-9._-]', '-', name)}"
            env = dict(hub.env)
            subprocess.run([sys.executable, "-c", f"import hfcompress; hfcompress.push({str(res.output)!r}, {repo!r})"],
                           env=env, check=True, capture_output=True, timeout=900)
            env["HF_HOME"] = str(work / f"fresh-{name}")
            row["reload_after_hub_pull"] = plain_reload(repo, cls, want, env=env)

    if "minilm" in args.models:
        src = ensure_asset(MINILM)
        out = results["minilm"]
        sentences = load_texts(str(data / "fixtures/movie-review-snippets"), split="validation",
                               column="sentence")[:256]
        dense = hfcompress.load(src, task="feature-extraction")
        ref = embed(dense.model, dense.tokenizer, sentences)
        fp32_disk = sum(p.numel() * 4 for p in dense.model.parameters())
        tok = dense.tokenizer
        del dense
        # A sentence encoder is calibrated on windows as long as its inputs (sentences), not on
        # 128-token windows of running text: GPTQ's error feedback fits the long-window statistics
        # and then loses to round-to-nearest on short inputs (cosine 0.9269 at 128 vs 0.9730 at 32,
        # the same 8,192 enwiki tokens; docs/QUANTIZATION.md).
        short = calib(MINILM_SEQ_LEN)
        for label, stages in {"rtn-int4-g128": [RTNConfig(bits=4, group_size=128)],
                              "gptq-int4-g128": [GPTQConfig(bits=4, group_size=128, calibration=short)],
                              "sparsegpt-2:4+gptq-int4-g128": [SparseGPTConfig(pattern="2:4", calibration=short),
                                                               GPTQConfig(bits=4, group_size=128, calibration=short)],
                              "rtn-int8-g128+embeddings": [RTNConfig(bits=8, group_size=128,
                                                                     quantize_embeddings=True)],
                              "rtn-int4-g128+embeddings": [RTNConfig(bits=4, group_size=128,
                                                                     quantize_embeddings=True)]}.items():
            res, secs = run(src, stages, f"minilm-{label}")
            s = res.report["stages"][-1]["summary"]
            cos = (embed(res.bundle.model, tok, sentences) * ref).sum(-1)
            row = {"seconds": secs, "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5),
                   "quantized_linear_vs_fp32": s["quantized_linear_ratio_vs_fp32"],
                   "disk_vs_fp32": round(s["disk_bytes"] / fp32_disk, 4)}
            check_reload(res, f"minilm-{label}", "AutoModel", row)
            out[label] = row
            print("minilm", label, row, flush=True)
            save()
            del res
        r, g = 1 - out["rtn-int4-g128"]["cosine_mean"], 1 - out["gptq-int4-g128"]["cosine_mean"]
        out["gptq_gap_closed"] = round((r - g) / r, 3) if r > 0 else None
        save()

    if "smollm2" in args.models:
        src = ensure_asset(SMOLLM2)
        out = results["smollm2"]
        texts = load_texts(str(data / "Salesforce/wikitext"), "wikitext-2-raw-v1", split="test")
        dense = hfcompress.load(src)
        ids = tokenize_corpus(dense.tokenizer, texts, max_tokens=16384)
        names = list(select_linears(dense.model, [])[0])
        fp32_disk = sum(p.numel() * 4 for p in dense.model.parameters())  # tied embedding once
        out["dense_fp32"] = {"perplexity": round(perplexity_of_ids(dense.model, ids, seq_len=512)["perplexity"], 3)}
        print("dense", out["dense_fp32"], flush=True)
        del dense
        save()

        def wanted(label: str) -> bool:
            return args.rows == "all" or label in args.rows.split(",")

        for label, cfg in {"wanda-50": WandaConfig(sparsity=0.5, calibration=calib(512)),
                           "sparsegpt-2:4": SparseGPTConfig(pattern="2:4", calibration=calib(512))}.items():
            if not wanted(label) and not (label == "sparsegpt-2:4" and wanted("sparsegpt-2:4+gptq-int4-g128")):
                continue
            res, secs = run(src, [cfg], label)
            row = sparse_sizes(res.bundle, names)
            row["seconds"] = secs
            out[label] = row
            print(label, row, flush=True)
            save()
            save()
        for label, (start, stages) in {
                "rtn-int4-g128": (src, [RTNConfig(bits=4, group_size=128)]),
                "gptq-int4-g128": (src, [GPTQConfig(bits=4, group_size=128, calibration=calib(512))]),
                # ablations of the default (act-order + clip search): which part closes the gap
                "gptq-no-clip-int4-g128": (src, [GPTQConfig(bits=4, group_size=128, clip_search=False,
                                                            calibration=calib(512))]),
                "gptq-in-order-no-clip-int4-g128": (src, [GPTQConfig(bits=4, group_size=128, act_order=False,
                                                                     clip_search=False, calibration=calib(512))]),
                "sparsegpt-2:4+gptq-int4-g128": (work / "sparsegpt-2:4",
                                                 [GPTQConfig(bits=4, group_size=128, calibration=calib(512))]),
                "rtn-int4-g128+embeddings": (src, [RTNConfig(bits=4, group_size=128, quantize_embeddings=True)]),
                "rtn-int8-g128+embeddings": (src, [RTNConfig(bits=8, group_size=128, quantize_embeddings=True)]),
        }.items():
            if not wanted(label):
                continue
            res, secs = run(start, stages, label)
            s = res.report["stages"][-1]["summary"]
            row = {"seconds": secs, "perplexity": round(perplexity_of_ids(res.bundle.model, ids, seq_len=512)
                                                        ["perplexity"], 3),
                   "quantized_linear_bytes": s["quantized_linear_bytes"],
                   "quantized_linear_vs_fp32": s["quantized_linear_ratio_vs_fp32"],
                   "disk_bytes": s["disk_bytes"], "disk_vs_fp32": round(s["disk_bytes"] / fp32_disk, 4),
                   "modules_per_group_size": s["modules_per_group_size"]}
            if "sparsity_after_dequantization" in s:
                row["sparsity_after_int4"] = s["sparsity_after_dequantization"]
            check_reload(res, label, "AutoModelForCausalLM", row)
            out[label] = row
            print(label, row, flush=True)
            save()
            del res
            if label == "gptq-int4-g128":
                rtn, gptq, fp = out["rtn-int4-g128"]["perplexity"], row["perplexity"], out["dense_fp32"]["perplexity"]
                out["gptq_gap_closed"] = round((rtn - gptq) / (rtn - fp), 3) if rtn > fp else None
                save()

    if hub is not None:
        hub.stop()
    save()
    print((RESULTS / f"{args.out}.md").read_text())
    return 0


def _reload(row: dict) -> str:
    parts = []
    for key, label in (("reload_plain_transformers", "local"), ("reload_after_hub_pull", "Hub")):
        r = row.get(key)
        if r is not None:
            parts.append(f"{label}: {'exact' if r['ok'] else r.get('error') or r['max_abs_diff']}")
    return "; ".join(parts)


def render(r: dict) -> str:
    lines = ["# Output formats: sizes, int4 quality, plain reloads", "",
             "Generated by `benchmarks/formats_compressed_tensors.py`. CPU, 2 threads, shared machine.", ""]
    s = r.get("smollm2") or {}
    if s and any(k in s for k in ("wanda-50", "sparsegpt-2:4")):
        lines += ["## SmolLM2-135M-Instruct: sparse sizes (pruned Linear weights, fp16)", "",
                  "| prune | sparsity | dense fp16 MB | hfcompress-sparse MB | × fp16 | bitmask layout × fp16 (limit) |",
                  "|---|---|---|---|---|---|"]
        for k in ("wanda-50", "sparsegpt-2:4"):
            if k in s:
                x = s[k]
                lines.append(f"| {k} | {x['sparsity']:.2%} | {x['dense_fp16_bytes'] / 1e6:.1f} | "
                             f"{x['hfcompress_sparse_bytes'] / 1e6:.1f} | {x['hfcompress_sparse_vs_fp16']:.4f} | "
                             f"{x['bitmask_layout_vs_fp16']:.4f} |")
        lines += ["", "compressed-tensors 0.20 has no sparse format (sparse-bitmask / sparse-24-bitmask were removed "
                  "in 0.15, and from transformers and vLLM); the bitmask column is that layout's size "
                  "(1 bit per weight + 2 bytes per non-zero).", ""]
    if s and "dense_fp32" in s:
        lines += ["## SmolLM2-135M-Instruct: int4 group 128 symmetric, compressed-tensors pack-quantized", "",
                  f"Dense fp32 perplexity: {s['dense_fp32']['perplexity']:.3f} (first 16,384 WikiText-2 test tokens, "
                  "512-token windows).", "",
                  "| method | perplexity | quantized Linear × fp32 | whole model on disk × fp32 | group sizes "
                  "| reload (plain transformers) | s |",
                  "|---|---|---|---|---|---|---|"]
        for k in ("rtn-int4-g128", "gptq-int4-g128", "gptq-no-clip-int4-g128", "gptq-in-order-no-clip-int4-g128",
                  "sparsegpt-2:4+gptq-int4-g128",
                  "rtn-int4-g128+embeddings",
                  "rtn-int8-g128", "rtn-int8-g128+embeddings"):
            if k in s:
                x = s[k]
                lines.append(f"| {k} | {x['perplexity']:.3f} | {x['quantized_linear_vs_fp32']:.4f} | "
                             f"{x['disk_vs_fp32']:.4f} | {x['modules_per_group_size']} | {_reload(x)} | "
                             f"{x['seconds']} |")
        lines += ["", f"GPTQ closes {s.get('gptq_gap_closed') or 0:.0%} of round-to-nearest's perplexity gap to fp32. "
                  "SmolLM2's 576-wide inputs are not divisible by 128: those Linears use groups of 64 "
                  "(compressed-tensors needs whole groups); with `+embeddings` every module uses 64 (one scheme: those "
                  "checkpoints are dequantized at load). Its weights were dequantized from Q4_1 (groups of 32). "
                  "`+embeddings`: the tied input embedding / output head (28 M of 135 M parameters) is quantized too.", ""]
    m = r.get("minilm") or {}
    if m:
        lines += ["## all-MiniLM-L6-v2: int4 group 128 symmetric (embedding cosine to fp32, 256 sentences)", "",
                  "| method | cosine mean | cosine min | quantized Linear × fp32 | whole model on disk × fp32 "
                  "| reload (plain transformers) | s |",
                  "|---|---|---|---|---|---|---|"]
        for k in ("rtn-int4-g128", "gptq-int4-g128", "sparsegpt-2:4+gptq-int4-g128", "rtn-int8-g128+embeddings",
                  "rtn-int4-g128+embeddings"):
            if k in m:
                x = m[k]
                lines.append(f"| {k} | {x['cosine_mean']:.5f} | {x['cosine_min']:.5f} | "
                             f"{x['quantized_linear_vs_fp32']:.4f} | {x['disk_vs_fp32']:.4f} | {_reload(x)} | "
                             f"{x['seconds']} |")
        lines += ["", f"GPTQ closes {m.get('gptq_gap_closed') or 0:.0%} of round-to-nearest's (1 - cosine) gap. "
                  f"Calibration: fixtures/enwiki-sample in {MINILM_SEQ_LEN}-token windows (sentence length: "
                  "128-token windows of running text make GPTQ lose to RTN on short inputs).", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
