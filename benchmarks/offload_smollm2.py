"""SmolLM2-135M (fp32, 538 MB of weights) pruned with Wanda 50% twice: in memory, and offloaded with
``max_memory`` far below the model's size (weights on disk, one block in memory at a time, written
shard by shard). Each run is a fresh child process (``python -m hfcompress prune ...``, the path a
user takes); its peak RSS is the kernel's ``VmHWM`` read by the parent while the child runs (the
child's ``ru_maxrss`` after it ends as a cross-check), as ``benchmarks/prune_unstructured.py`` does in a
child. A third child measures the runtime's floor: the same imports, tokenizer and calibration
windows with no weights at all. The two outputs are compared tensor by tensor (bit-exact)::

    .venv/bin/python benchmarks/offload_smollm2.py                   # cpu=100MB, 8 x 512 calibration
    .venv/bin/python benchmarks/offload_smollm2.py --max-memory cpu=50MB --samples 16

Writes benchmarks/results/offload.json and offload.md. Timings on a shared machine are not quotable.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hfcompress.assets import SMOLLM2, asset_path
from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL = asset_path(SMOLLM2)
DATA = local_datasets_dir()

#: the runtime floor child: imports, tokenizer and calibration windows, no weights
FLOOR = """
import sys, torch, transformers, accelerate, datasets
import hfcompress
from transformers import AutoTokenizer, AutoConfig, AutoModelForCausalLM
from hfcompress.config import CalibrationConfig
from hfcompress.calibration import calibration_windows
folder, ds, samples, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
tok = AutoTokenizer.from_pretrained(folder)
calibration_windows(tok, model, CalibrationConfig(dataset=ds, samples=samples, seq_len=seq))
"""


def run_child(argv: list[str]) -> dict:
    """Run ``argv``; its own peak RSS (``ru_maxrss`` from ``wait4``: the kernel's high-water mark of
    that process alone) and wall time."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv[:6])} failed:\n{stderr[-3000:]}")
    return {"peak_rss_bytes": usage.ru_maxrss * 1024, "seconds_under_load": round(time.perf_counter() - t, 1),
            "stdout_tail": stdout.strip().splitlines()[-3:]}


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-memory", default="cpu=100MB")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    args = ap.parse_args(argv)
    ds = str(DATA / "fixtures" / "enwiki-sample")
    model_bytes = sum(p.stat().st_size for p in MODEL.glob("*.safetensors"))
    prune = [sys.executable, "-m", "hfcompress", "prune", str(MODEL), "--method", "wanda", "--sparsity", "0.5",
             "--dtype", "float32", "--calibration", ds, "--samples", str(args.samples), "--seq-len",
             str(args.seq_len), "--no-progress"]
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as work:
        w = Path(work)
        floor = run_child([sys.executable, "-c", FLOOR, str(MODEL), ds, str(args.samples), str(args.seq_len)])
        print(f"floor: {floor['peak_rss_bytes'] >> 20} MiB", flush=True)
        mem = run_child([*prune, "-o", str(w / "mem")])
        print(f"in memory: {mem['peak_rss_bytes'] >> 20} MiB", flush=True)
        off = run_child([*prune, "-o", str(w / "off"), "--max-memory", args.max_memory,
                         "--offload-folder", str(w / "offload")])
        print(f"offloaded: {off['peak_rss_bytes'] >> 20} MiB", flush=True)
        a, b = weights(w / "mem"), weights(w / "off")
        identical = sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype and bool((a[k] == b[k]).all())
                                                   for k in a)
        differing = [k for k in a if k not in b or not bool((a[k] == b[k]).all())][:5]
        shards = sorted(p.name for p in (w / "off").glob("*.safetensors"))
        report = json.loads((w / "off" / "hfcompress.json").read_text())
    row = {
        "model": SMOLLM2, "dtype": "float32", "model_weight_bytes": model_bytes, "method": "wanda",
        "sparsity": 0.5, "calibration": f"fixtures/enwiki-sample {args.samples} x {args.seq_len}",
        "max_memory": args.max_memory,
        "runtime_floor_peak_rss_bytes": floor["peak_rss_bytes"],
        "in_memory_peak_rss_bytes": mem["peak_rss_bytes"],
        "offloaded_peak_rss_bytes": off["peak_rss_bytes"],
        "in_memory_peak_above_floor_bytes": mem["peak_rss_bytes"] - floor["peak_rss_bytes"],
        "offloaded_peak_above_floor_bytes": off["peak_rss_bytes"] - floor["peak_rss_bytes"],
        "output_identical": identical, "differing_tensors": differing, "offloaded_output_shards": len(shards),
        "target_sparsity_actual": report["stages"][0]["summary"].get("target_sparsity_actual"),
        "seconds_under_load": {"in_memory": mem["seconds_under_load"], "offloaded": off["seconds_under_load"]},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "offload.json").write_text(json.dumps(row, indent=2) + "\n")
    mb = lambda n: f"{n / 1e6:.0f}"  # noqa: E731
    lines = [
        f"# Offloaded pruning: SmolLM2-135M fp32 ({mb(model_bytes)} MB of weights), Wanda 50%, "
        f"--max-memory {args.max_memory}", "",
        f"Calibration {row['calibration']}; each run a fresh `hfcompress prune` process; peak RSS = the process's ru_maxrss (MB).",
        "", "| run | peak RSS MB | above the runtime floor MB | output |", "|---|---:|---:|---|",
        f"| runtime floor (imports + tokenizer + calibration windows, no weights) | "
        f"{mb(floor['peak_rss_bytes'])} | 0 | |",
        f"| in memory | {mb(mem['peak_rss_bytes'])} | {mb(row['in_memory_peak_above_floor_bytes'])} | "
        "1 shard |",
        f"| offloaded (`--max-memory {args.max_memory}`) | {mb(off['peak_rss_bytes'])} | "
        f"{mb(row['offloaded_peak_above_floor_bytes'])} | {len(shards)} shards, "
        f"{'bit-identical to the in-memory output' if identical else 'DIFFERS: ' + ', '.join(differing)} |",
        "", f"Sparsity of the targets: {row['target_sparsity_actual']}. Wall times on a shared machine "
        f"(not quotable): in memory {mem['seconds_under_load']} s, offloaded {off['seconds_under_load']} s.",
    ]
    (RESULTS / "offload.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
