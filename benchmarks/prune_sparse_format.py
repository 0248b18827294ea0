"""Sparse checkpoint format on SmolLM2-135M-Instruct: file sizes and bit-exact reload.

Magnitude pruning (the size does not depend on the method) at 50 % and 2:4, saved dense and in
the hfcompress-sparse bitmask format, for the model loaded in float32 (as published) and in
float16 (``--dtype float16``; the apples-to-apples comparison with the dense fp16 file).
Reload with plain ``AutoModelForCausalLM.from_pretrained`` after ``import hfcompress`` and
compare every tensor bit for bit::

    .venv/bin/python benchmarks/prune_sparse_format.py

Writes benchmarks/results/prune_sparse_format.json and .md.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from hfcompress.assets import SMOLLM2, asset_path

ROOT = Path(__file__).resolve().parents[1]
MODEL = asset_path(SMOLLM2)
RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    import torch

    torch.set_num_threads(2)
    from transformers import AutoModelForCausalLM

    import hfcompress
    from hfcompress.pipeline import StageContext, run_stage, save_bundle
    from hfcompress.prune import MagnitudeConfig

    rows = []
    dense_fp16 = None
    for dtype in ("float16", "float32"):
        for label, cfg in (("50%", MagnitudeConfig(sparsity=0.5, sparse_format=True)),
                           ("2:4", MagnitudeConfig(pattern="2:4", sparse_format=True))):
            bundle = hfcompress.load(str(MODEL), dtype=dtype)
            with tempfile.TemporaryDirectory() as d:
                d = Path(d)
                if dense_fp16 is None and dtype == "float16":
                    bundle.model.save_pretrained(d / "dense16")
                    dense_fp16 = (d / "dense16" / "model.safetensors").stat().st_size
                run_stage(bundle, cfg, StageContext(progress=False))
                bundle.model.save_pretrained(d / "dense")
                (d / "sparse").mkdir()
                t = time.perf_counter()
                save_bundle(bundle, d / "sparse")
                save_s = time.perf_counter() - t
                t = time.perf_counter()
                re = AutoModelForCausalLM.from_pretrained(d / "sparse", dtype="auto")
                load_s = time.perf_counter() - t
                ref, got = bundle.model.state_dict(), re.state_dict()
                exact = set(ref) == set(got) and all(torch.equal(v.view(torch.uint8), got[k].view(torch.uint8))
                                                     for k, v in ref.items())
                sparse = (d / "sparse" / "model.safetensors").stat().st_size
                dense = (d / "dense" / "model.safetensors").stat().st_size
                row = {"dtype": dtype, "sparsity": label, "dense_bytes": dense, "sparse_bytes": sparse,
                       "sparse_vs_dense_same_dtype": round(sparse / dense, 3),
                       "sparse_vs_dense_fp16": round(sparse / dense_fp16, 3), "reload_bit_exact": exact,
                       "save_seconds": round(save_s, 1), "load_seconds": round(load_s, 1),
                       "format_version": json.loads((d / "sparse" / "config.json").read_text())
                       ["quantization_config"]["version"]}
                print(json.dumps(row), flush=True)
                rows.append(row)
            del bundle, re
    # what the never-pruned tensors (embeddings: tied, 28.3 M params; norms) cost
    from safetensors import safe_open

    with safe_open(str(MODEL / "model.safetensors"), "pt") as f:
        total = sum(f.get_slice(k).get_shape()[0] * (f.get_slice(k).get_shape()[1:] or [1])[0] for k in f.keys())
        emb = sum(f.get_slice(k).get_shape()[0] * f.get_slice(k).get_shape()[1] for k in f.keys() if "embed" in k)
    note = {"dense_fp16_bytes": dense_fp16, "parameters": total, "embedding_parameters": emb,
            "bound_fp16_50pct": round((emb * 2 + (total - emb) * (0.5 * 2 + 1 / 8)) / (total * 2), 3)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prune_sparse_format.json").write_text(json.dumps({"rows": rows, "note": note}, indent=2) + "\n")
    lines = ["| dtype | sparsity | dense MB | sparse MB | sparse/dense (same dtype) | sparse/dense fp16 | "
             "reload bit-exact |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['sparsity']} | {r['dense_bytes'] / 1e6:.1f} | {r['sparse_bytes'] / 1e6:.1f} "
                     f"| {r['sparse_vs_dense_same_dtype']} | {r['sparse_vs_dense_fp16']} | {r['reload_bit_exact']} |")
    lines.append("")
    lines.append(f"Format v1 (raw values) bottomed out at {note['bound_fp16_50pct']}x for fp16 at 50 % (bitmask + raw "
                 "values + the never-pruned tied embedding); v2 Huffman-codes the values' high byte (lossless).")
    (RESULTS / "prune_sparse_format.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
