"""Dense baselines for evaluation: SmolLM2-135M-Instruct perplexity (wikitext-2 test, first
16,384 tokens, 512-token windows, stride 512, no BOS) and efficiency figures of SmolLM2 and
all-MiniLM-L6-v2, on CPU with 2 threads.

    .venv/bin/python benchmarks/evaluate_baselines.py

Writes benchmarks/results/evaluate_baselines.json (+ .md, + plots) and prints the table.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "hub" / "datasets"


def main() -> int:
    torch.set_num_threads(2)
    from hfcompress.assets import MINILM, SMOLLM2, ensure_asset
    from hfcompress.evaluate import EfficiencyConfig, PerplexityConfig, evaluate
    from hfcompress.evaluate.report import render_markdown, write_report

    start = time.perf_counter()
    smol = ensure_asset(SMOLLM2)
    smol_report = evaluate(str(smol), [
        PerplexityConfig(dataset=str(DATASETS / "Salesforce" / "wikitext"), config="wikitext-2-raw-v1",
                         split="test", max_tokens=16384, seq_len=512, stride=512, batch_size=4),
        EfficiencyConfig(latency_batch_size=1, latency_seq_len=128, warmup=3, runs=10,
                         gen_prompt_tokens=32, gen_new_tokens=32, gen_runs=3),
    ])
    minilm = ensure_asset(MINILM)
    minilm_report = evaluate(str(minilm), [EfficiencyConfig(latency_batch_size=8, latency_seq_len=128,
                                                            warmup=3, runs=10)])

    def label(report: dict, name: str) -> list[dict]:
        return [dict(r, model=name) for r in report["results"]]

    from hfcompress.evaluate.report import build_report

    results = label(smol_report, SMOLLM2) + label(minilm_report, MINILM)
    report = build_report(results, {SMOLLM2: smol_report["models"]["compressed"],
                                    MINILM: minilm_report["models"]["compressed"]},
                          benchmark="evaluate_baselines", seconds=round(time.perf_counter() - start, 1))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "evaluate_baselines.json"
    write_report(report, out)
    md = ["# Evaluation baselines (dense models, CPU, 2 threads)", ""]
    for name, rep in ((SMOLLM2, smol_report), (MINILM, minilm_report)):
        md.append(render_markdown(rep, title=name))
    md.append(f"Total {report['seconds']} s. Methodology: docs/EVALUATION.md.")
    (RESULTS / "evaluate_baselines.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    ppl = next(r["value"] for r in results if r["metric"] == "perplexity")
    print(json.dumps({"smollm2_wikitext_ppl_16k": ppl}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
