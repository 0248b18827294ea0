"""Prune -> quantize in one recipe on SmolLM2-135M: recipes/wanda-50-nf4.yaml.

Runs the recipe through ``hfcompress.compress`` (Wanda 50%, calibrated on 32 x 512 windows of
fixtures/enwiki-sample, then bnb NF4), reloads the output with a plain ``from_pretrained``,
counts zeros in the dequantized Linear weights and measures perplexity (first 16,384
WikiText-2 test tokens, 512-token windows).

    .venv/bin/python benchmarks/quantize_wanda_nf4.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parent
DATA = local_datasets_dir()


def main() -> int:
    torch.set_num_threads(2)
    from transformers import AutoModelForCausalLM

    import hfcompress
    from hfcompress.assets import ensure_asset
    from hfcompress.data import load_texts
    from hfcompress.evaluate.perplexity import perplexity_of_ids, tokenize_corpus
    from hfcompress.pipeline import compress
    from hfcompress.quantize.base import safetensors_sizes, sparsity_of
    from hfcompress.quantize.bnb import harden_bnb4
    from hfcompress.recipes import parse_recipe

    text = (ROOT.parent / "recipes" / "wanda-50-nf4.yaml").read_text()
    # The benchmark names its calibration text explicitly (the recipe's default is the public id).
    text = text.replace("dataset: NeelNanda/pile-10k", f"dataset: {DATA / 'fixtures/enwiki-sample'}")
    recipe = parse_recipe(text)
    bundle = hfcompress.load(ensure_asset("HuggingFaceTB/SmolLM2-135M-Instruct"), dtype="float32")
    tok = bundle.tokenizer
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "out"
        t = time.perf_counter()
        result = compress(bundle, recipe, output=out, progress=False)
        seconds = time.perf_counter() - t
        model = AutoModelForCausalLM.from_pretrained(out)
        harden_bnb4(model)
        names = [n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"]
        ids = tokenize_corpus(tok, load_texts(str(DATA / "Salesforce/wikitext"), "wikitext-2-raw-v1", "test"),
                              max_tokens=16384)
        ppl = perplexity_of_ids(model, ids, seq_len=512)
        row = {
            "recipe": "recipes/wanda-50-nf4.yaml",
            "compress_seconds": round(seconds, 1),
            "prune_summary": {k: v for k, v in result.report["stages"][0]["summary"].items()
                              if isinstance(v, (int, float, str))},
            "quantize_summary": {k: v for k, v in result.report["stages"][1]["summary"].items()
                                 if k not in ("unquantized_linear_modules",)},
            "reloaded_sparsity_dequantized": round(sparsity_of(model, names), 4),
            "disk_bytes": sum(safetensors_sizes(out).values()),
            "perplexity": round(ppl["perplexity"], 3),
            "eval_tokens": ppl["tokens"],
        }
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "quantize_wanda_nf4.json").write_text(json.dumps(row, indent=2, default=str) + "\n")
    md = ("| recipe | sparsity (dequantized, after reload) | disk MB | perplexity (16k WikiText-2) |\n|---|---|---|---|\n"
          f"| wanda 50% → bnb-nf4 | {row['reloaded_sparsity_dequantized']:.4f} | {row['disk_bytes'] / 1e6:.1f} | "
          f"{row['perplexity']:.2f} |\n")
    (ROOT / "results" / "quantize_wanda_nf4.md").write_text(md)
    print(json.dumps(row, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
