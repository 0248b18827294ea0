"""Structured pruning of SmolLM2-135M-Instruct: rebuilt model size, CPU latency, perplexity, reload.

For each configuration: prune (calibration fixtures/enwiki-sample 32 x 512 where needed),
save, reload with plain ``AutoModelForCausalLM.from_pretrained`` (no hfcompress), check that
the config matches the tensors and that the reloaded logits equal the in-memory rebuilt
model's, generate a few tokens, count parameters, time a 1 x 256-token forward on CPU (median
of 5, 2 threads) and measure perplexity (first 16,384 wikitext-2 test tokens, 512 windows)::

    .venv/bin/python benchmarks/prune_structured.py [name ...]
    PRUNE_BENCH_NO_PPL=1 .venv/bin/python benchmarks/prune_structured.py   # skip perplexity

Writes benchmarks/results/prune_structured.json and .md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hfcompress.assets import SMOLLM2, asset_path
from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parents[1]
MODEL = asset_path(SMOLLM2)
DATA = str(local_datasets_dir())
RESULTS = ROOT / "benchmarks" / "results"

CONFIGS = {
    "dense": (None, {}),
    "ffn-30-activations": ("wanda", {"structured": "ffn", "sparsity": 0.3}),
    "ffn-30-magnitude": ("magnitude", {"structured": "ffn", "sparsity": 0.3}),
    "heads-33-activations": ("wanda", {"structured": "heads", "sparsity": 0.33}),
    "heads-33-magnitude": ("magnitude", {"structured": "heads", "sparsity": 0.33}),
    "layers-10-angular": ("magnitude", {"structured": "layers", "sparsity": 0.1}),
}


def latency_ms(model, n=5) -> tuple[float, float]:
    """Median wall and CPU (process time) ms of a 1 x 256 forward on ONE thread (on a shared,
    busy machine the CPU time is the robust figure; multi-thread wall time is dominated by
    thread-synchronisation stalls)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.randint(100, 1000, (1, 256))
    wall, cpu = [], []
    with torch.no_grad():
        model(x)
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            model(x)
            wall.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
    torch.set_num_threads(threads)
    return round(statistics.median(wall), 1), round(statistics.median(cpu), 1)


def run_one(name: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from transformers import AutoModelForCausalLM

    import hfcompress
    from hfcompress.config import CalibrationConfig
    from hfcompress.data import load_texts
    from hfcompress.evaluate.perplexity import perplexity_of_ids, tokenize_corpus
    from hfcompress.pipeline import StageContext, run_stage
    from hfcompress.registry import get_method

    method, kw = CONFIGS[name]
    bundle = hfcompress.load(str(MODEL), dtype="float32")
    out: dict = {"name": name, "method": method, **kw}
    if method:
        cal = CalibrationConfig(dataset=f"{DATA}/fixtures/enwiki-sample", samples=32, seq_len=512)
        cfg = get_method("prune", method).config_cls(**kw, calibration=cal)
        t = time.perf_counter()
        c0 = os.times()
        rec = run_stage(bundle, cfg, StageContext(progress=False))
        c1 = os.times()
        out["seconds"] = round(time.perf_counter() - t, 1)
        out["cpu_seconds"] = round(c1.user - c0.user + c1.system - c0.system, 1)
        out["summary"] = {k: v for k, v in rec["summary"].items() if k != "angular_distance"}
    model = bundle.model
    c = model.config
    out["config"] = {k: getattr(c, k) for k in ("intermediate_size", "num_attention_heads", "num_key_value_heads",
                                                "head_dim", "num_hidden_layers")}
    out["parameters"] = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        bundle.tokenizer.save_pretrained(d)
        out["weights_bytes"] = (Path(d) / "model.safetensors").stat().st_size
        re = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        x = torch.randint(100, 1000, (2, 64))
        with torch.no_grad():
            out["reload_logits_identical"] = bool(torch.equal(model(x).logits, re(x).logits))
        out["reload_config_matches"] = all(getattr(re.config, k) == v for k, v in out["config"].items())
        prompt = bundle.tokenizer("The capital of France is", return_tensors="pt")
        gen = re.generate(**prompt, max_new_tokens=12, do_sample=False)
        out["generated"] = bundle.tokenizer.decode(gen[0], skip_special_tokens=True)
        del re
    out["latency_ms_1x256"], out["cpu_ms_1x256"] = latency_ms(model)
    if os.environ.get("PRUNE_BENCH_NO_PPL"):
        out["perplexity"] = None
        return out
    texts = load_texts(f"{DATA}/Salesforce/wikitext", "wikitext-2-raw-v1", "test")
    ids = tokenize_corpus(bundle.tokenizer, texts, max_tokens=16384)
    out["perplexity"] = round(perplexity_of_ids(model, ids, seq_len=512)["perplexity"], 2)
    return out


def write_results(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prune_structured.json").write_text(json.dumps(rows, indent=2) + "\n")
    dense = next((r for r in rows if r["name"] == "dense"), None)
    lines = ["| config | params | params vs dense | forward CPU ms (1x256, 1 thread) | CPU vs dense | "
             "wall ms | ppl | reload identical | config matches | prune wall s | prune CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pr = f"{r['parameters'] / dense['parameters']:.3f}" if dense else ""
        lr = f"{r['cpu_ms_1x256'] / dense['cpu_ms_1x256']:.3f}" if dense and r.get("cpu_ms_1x256") else ""
        lines.append(f"| {r['name']} | {r['parameters']:,} | {pr} | {r.get('cpu_ms_1x256')} | {lr} | "
                     f"{r['latency_ms_1x256']} | {r['perplexity']} | {r['reload_logits_identical']} | "
                     f"{r['reload_config_matches']} | {r.get('seconds', '')} | {r.get('cpu_seconds', '')} |")
    (RESULTS / "prune_structured.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) == 1 and argv[0] in CONFIGS:
        print(json.dumps(run_one(argv[0])))
        return 0
    path = RESULTS / "prune_structured.json"
    rows = {r["name"]: r for r in (json.loads(path.read_text()) if path.exists() else [])}
    for name in argv or list(CONFIGS):
        proc = subprocess.run([sys.executable, __file__, name], capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows[name] = row
        write_results([rows[n] for n in CONFIGS if n in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
