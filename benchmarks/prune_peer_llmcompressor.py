"""Side by side with llm-compressor: the same pruning, the same windows, one machine, one run.

The peer lives in its own venv (it must never share hfcompress's environment)::

    python3 -m venv ~/.cache/hfcompress/peer-llmc
    ~/.cache/hfcompress/peer-llmc/bin/pip install torch==2.13.0 "llmcompressor==0.14.*"
    .venv/bin/python benchmarks/prune_peer_llmcompressor.py [--install] [wanda-50 sparsegpt-50 ...]  # default: all

(``--install`` runs those two commands when the venv is missing; ``HFCOMPRESS_PEER_VENV``
points elsewhere.) Both tools get the identical 32 x 512 calibration windows of
``fixtures/enwiki-sample`` (tokenized once here and handed to the peer as token ids), fp32
SmolLM2-135M, 2 intra-op threads, and are scored on the same first 16,384 WikiText-2 test
tokens. Each run is its own process; peer and hfcompress alternate per configuration. Wall
time covers the pruning call only (``oneshot`` / ``run_stage``), not model loading or
evaluation. Writes benchmarks/results/prune_peer.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hfcompress.assets import SMOLLM2, asset_path
from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import prune_unstructured  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VENV = Path(os.environ.get("HFCOMPRESS_PEER_VENV", Path.home() / ".cache/hfcompress/peer-llmc"))
#: name -> (method, pattern, our prune_unstructured.py configurations to compare)
CONFIGS = {
    "wanda-50": ("wanda", "none", ["wanda-50", "wanda-50-bf16"]),
    "sparsegpt-50": ("sparsegpt", "none", ["sparsegpt-50", "sparsegpt-50-bf16"]),
    "wanda-2:4": ("wanda", "2:4", ["wanda-2:4"]),
    "sparsegpt-2:4": ("sparsegpt", "2:4", ["sparsegpt-2:4", "sparsegpt-2:4-bf16"]),
}


def ensure_peer(install: bool) -> Path:
    py = VENV / "bin" / "python"
    if py.exists():
        return py
    if not install:
        sys.exit(f"llm-compressor venv not found at {VENV}: rerun with --install (or set HFCOMPRESS_PEER_VENV)")
    subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin/pip"), "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(VENV / "bin/pip"), "install", "-q", "llmcompressor==0.14.*"], check=True)
    return py


def write_tokens(path: Path) -> None:
    """The calibration windows hfcompress uses (seed 0) and the evaluation tokens."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from hfcompress.config import CalibrationConfig
    from hfcompress.data import calibration_ids, load_texts
    from hfcompress.evaluate.perplexity import tokenize_corpus

    tok = AutoTokenizer.from_pretrained(asset_path(SMOLLM2))
    data = str(local_datasets_dir())
    cal = CalibrationConfig(dataset=f"{data}/fixtures/enwiki-sample", samples=32, seq_len=512)
    ids = calibration_ids(tok, cal, texts=load_texts(cal.dataset, cal.config, cal.split, cal.text_column))
    ev = tokenize_corpus(tok, load_texts(f"{data}/Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
                         max_tokens=16384)
    save_file({"calibration": ids.to(torch.int64).contiguous(), "eval": ev.to(torch.int64).contiguous()}, str(path))


def run_json(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_results(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prune_peer.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Side by side with llm-compressor (same machine, same run, same calibration windows)", "",
             "SmolLM2-135M fp32, fixtures/enwiki-sample 32 x 512 (identical token windows for both), 2 threads; "
             "WikiText-2 test, first 16,384 tokens, 512-token windows. Wall = the pruning call only. Peak RSS "
             "in MiB (the whole process). The calibrated quantizer rows (ours only, for their peak RSS) ran "
             "after the peer comparison; they are compared with nothing, and their times were taken while "
             "other jobs may have shared the cores.", "",
             "| config | tool | ppl | prune wall s | prune CPU s | wall vs peer | peak RSS MiB (prune / quantize) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['seconds'] / r['peer_seconds']:.2f}x" if r.get("peer_seconds") else ""
        lines.append(f"| {r['config']} | {r['tool']} | {r['perplexity']} | {r['seconds']} | {r['cpu_seconds']} | "
                     f"{ratio} | {r['peak_rss_mb_during_prune']} |")
    (RESULTS / "prune_peer.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", help=f"some of {', '.join(CONFIGS)} (default: all)")
    p.add_argument("--install", action="store_true", help="create the peer venv when it is missing")
    p.add_argument("--fp32-only", action="store_true", help="skip our bfloat16-autocast variants")
    p.add_argument("--quantizers", action="store_true",
                   help="also run calibrated-nf4 / calibrated-int4 (ours only: peak RSS in the same table)")
    p.add_argument("--rewrite-md", action="store_true", help="only regenerate prune_peer.md from prune_peer.json")
    args = p.parse_args(argv)
    if args.rewrite_md:
        write_results(json.loads((RESULTS / "prune_peer.json").read_text()))
        return 0
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration {unknown[0]!r}: choose from {', '.join(CONFIGS)}")
    py = ensure_peer(args.install)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.safetensors"
        write_tokens(tokens)
        for name in args.configs or list(CONFIGS):
            method, pattern, ours = CONFIGS[name]
            peer = run_json([str(py), str(ROOT / "benchmarks/_peer_llmcompressor_worker.py"),
                             str(asset_path(SMOLLM2)), str(tokens), method, pattern])
            peer.update(config=name, tool=f"llm-compressor {peer['llmcompressor']}")
            print(json.dumps(peer), flush=True)
            rows.append(peer)
            for our in [o for o in ours if not (args.fp32_only and "bf16" in o)]:
                r = run_json([sys.executable, str(ROOT / "benchmarks/prune_unstructured.py"), our])
                prune_unstructured.record(r)
                row = {"config": name, "tool": f"hfcompress ({our})", "seconds": r["seconds"],
                       "cpu_seconds": r["cpu_seconds"], "peak_rss_mb_during_prune": r["peak_rss_mb_during_prune"],
                       "perplexity": r["perplexity"], "peer_seconds": peer["seconds"],
                       "calibration_dtype": r.get("summary", {}).get("calibration_dtype", "float32")}
                print(json.dumps(row), flush=True)
                rows.append(row)
            write_results(rows)
        for our in (["calibrated-nf4", "calibrated-int4"] if args.quantizers else []):
            r = run_json([sys.executable, str(ROOT / "benchmarks/prune_unstructured.py"), our])
            prune_unstructured.record(r)
            rows.append({"config": our, "tool": f"hfcompress ({our})", "seconds": r["seconds"],
                         "cpu_seconds": r["cpu_seconds"], "perplexity": r["perplexity"],
                         "peak_rss_mb_during_prune": r["peak_rss_mb_during_prune"]})
            print(json.dumps(rows[-1]), flush=True)
            write_results(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
