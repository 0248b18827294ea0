"""Unstructured / N:M pruning of SmolLM2-135M-Instruct: perplexity, wall time, peak RSS.

Setup (same as the peer figures): fp32 model, calibration fixtures/enwiki-sample 32 x 512
tokens (seed 0), evaluation = first 16,384 tokens of wikitext-2-raw-v1 test in 512-token
windows. Each configuration runs in its own process (clean RSS), one after another, with
torch.set_num_threads(2)::

    .venv/bin/python benchmarks/prune_unstructured.py            # all configurations
    .venv/bin/python benchmarks/prune_unstructured.py wanda-50   # one (prints its JSON)

Writes benchmarks/results/prune_unstructured.json and .md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from hfcompress.assets import SMOLLM2, asset_path
from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parents[1]
MODEL = asset_path(SMOLLM2)
DATA = str(local_datasets_dir())
RESULTS = ROOT / "benchmarks" / "results"

#: name -> (method, kwargs)
CONFIGS = {
    "dense": (None, {}),
    "magnitude-50": ("magnitude", {"sparsity": 0.5}),
    "wanda-50": ("wanda", {"sparsity": 0.5}),
    "sparsegpt-50": ("sparsegpt", {"sparsity": 0.5}),
    "magnitude-2:4": ("magnitude", {"pattern": "2:4"}),
    "wanda-2:4": ("wanda", {"pattern": "2:4"}),
    "sparsegpt-2:4": ("sparsegpt", {"pattern": "2:4"}),
    "wanda-4:8": ("wanda", {"pattern": "4:8"}),
    "sparsegpt-4:8": ("sparsegpt", {"pattern": "4:8"}),
    "wanda-50-owl": ("wanda", {"sparsity": 0.5, "owl": True}),
    "sparsegpt-50-owl": ("sparsegpt", {"sparsity": 0.5, "owl": True}),
    "sparsegpt-50-128cal": ("sparsegpt", {"sparsity": 0.5, "calibration": {"samples": 128}}),
    "wanda-50-128cal": ("wanda", {"sparsity": 0.5, "calibration": {"samples": 128}}),
    "sparsegpt-50-onebatch": ("sparsegpt", {"sparsity": 0.5, "batch_size": 32}),
    "wanda-50-bf16": ("wanda", {"sparsity": 0.5, "calibration_dtype": "bfloat16"}),
    "sparsegpt-50-bf16": ("sparsegpt", {"sparsity": 0.5, "calibration_dtype": "bfloat16"}),
    "sparsegpt-2:4-bf16": ("sparsegpt", {"pattern": "2:4", "calibration_dtype": "bfloat16"}),
    "wanda-50-onebatch": ("wanda", {"sparsity": 0.5, "batch_size": 32}),
    "wanda-50-lowmem": ("wanda", {"sparsity": 0.5, "low_memory": True}),
    "sparsegpt-50-lowmem": ("sparsegpt", {"sparsity": 0.5, "low_memory": True}),
    "wanda-50-lowmem-bf16": ("wanda", {"sparsity": 0.5, "low_memory": True, "calibration_dtype": "bfloat16"}),
    "wanda-50-lowmem-bf16-bs1": ("wanda", {"sparsity": 0.5, "low_memory": True, "calibration_dtype": "bfloat16",
                                           "batch_size": 1}),
    # calibrated quantizers on the same calibration layer (peak RSS reported next to pruning's)
    "calibrated-nf4": ("quantize:calibrated-nf4", {}),
    "calibrated-int4": ("quantize:calibrated-int4", {}),
}
#: llm-compressor 0.14 as quoted in the issue (its own data pipeline, busy machine). The peer on the
#: SAME calibration windows, side by side: benchmarks/prune_peer_llmcompressor.py -> prune_peer.md
PEER = {"dense": 28.1, "sparsegpt-50": 75.8, "wanda-50": 85.1, "sparsegpt-2:4": 177.9, "wanda-2:4": 669.6}


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class PeakRSS:
    """Samples the process RSS every 20 ms in a thread; ``peak`` in MiB."""

    def __init__(self):
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb())


def run_one(name: str) -> dict:
    import torch

    torch.set_num_threads(2)
    torch_rss = rss_mb()
    import hfcompress
    from hfcompress.config import CalibrationConfig
    from hfcompress.data import load_texts
    from hfcompress.evaluate.perplexity import perplexity_of_ids, tokenize_corpus
    from hfcompress.pipeline import StageContext, run_stage
    from hfcompress.registry import get_method

    method, kw = CONFIGS[name]
    bundle = hfcompress.load(str(MODEL), dtype="float32")
    loaded_rss = rss_mb()
    out = {"name": name, "method": method, **{k: v for k, v in kw.items() if k != "calibration"}}
    if method is not None:
        cal = {"dataset": f"{DATA}/fixtures/enwiki-sample", "samples": 32, "seq_len": 512}
        cal.update(kw.get("calibration", {}))
        params = {**kw, "calibration": CalibrationConfig(**cal)}
        family, _, mname = method.rpartition(":")
        cfg = get_method(family or "prune", mname).config_cls(**params)
        if method in ("magnitude", "threshold"):
            cfg.calibration = None
        # load + tokenize the calibration text before timing (the peer's figure excludes it too)
        from hfcompress.prune.engine import calibration_ids

        calibration_ids(bundle, cfg.calibration) if cfg.calibration else None
        with PeakRSS() as peak:
            t = time.perf_counter()
            c0 = os.times()
            rec = run_stage(bundle, cfg, StageContext(progress=False))
            c1 = os.times()
            out["seconds"] = round(time.perf_counter() - t, 1)
            # CPU seconds (user + sys, all threads): robust to other processes sharing the cores
            out["cpu_seconds"] = round((c1.user - c0.user) + (c1.system - c0.system), 1)
        out["peak_rss_mb_during_prune"] = round(peak.peak)
        out["calibration_samples"] = cal["samples"] if method not in ("magnitude", "threshold") else 0
        out["summary"] = rec["summary"]
    out["rss_mb_torch_imported"] = round(torch_rss)
    out["rss_mb_after_load"] = round(loaded_rss)
    texts = load_texts(f"{DATA}/Salesforce/wikitext", "wikitext-2-raw-v1", "test")
    ids = tokenize_corpus(bundle.tokenizer, texts, max_tokens=16384)
    t = time.perf_counter()
    out["perplexity"] = round(perplexity_of_ids(bundle.model, ids, seq_len=512)["perplexity"], 2)
    out["eval_seconds"] = round(time.perf_counter() - t, 1)
    out["peer_perplexity_issue"] = PEER.get(name)
    return out


def write_results(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prune_unstructured.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Unstructured / N:M pruning of SmolLM2-135M (fp32, 32 x 512 calibration, 2 threads)", "",
             "| config | ppl | peer ppl (issue) | prune wall s | prune CPU s | peak RSS MB (prune) | RSS after load |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['perplexity']} | {r.get('peer_perplexity_issue') or ''} | "
                     f"{r.get('seconds', '')} | {r.get('cpu_seconds', '')} | "
                     f"{r.get('peak_rss_mb_during_prune', '')} | {r['rss_mb_after_load']} |")
    lines += ["", "Peer (issue) = llm-compressor 0.14 as quoted in the issue, with its own calibration data "
              "pipeline. Given the same calibration windows it scores like hfcompress: see prune_peer.md."]
    (RESULTS / "prune_unstructured.md").write_text("\n".join(lines) + "\n")


def record(row: dict) -> None:
    """Merge one configuration's row into prune_unstructured.json / .md."""
    path = RESULTS / "prune_unstructured.json"
    rows = {r["name"]: r for r in (json.loads(path.read_text()) if path.exists() else [])}
    rows[row["name"]] = row
    write_results([rows[n] for n in CONFIGS if n in rows])


def main(argv: list[str]) -> int:
    if len(argv) == 1 and argv[0] in CONFIGS:
        print(json.dumps(run_one(argv[0])))
        return 0
    names = argv or list(CONFIGS)
    for name in names:
        proc = subprocess.run([sys.executable, __file__, name], capture_output=True, text=True,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps({k: v for k, v in row.items() if k != "summary"}), flush=True)
        record(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
