"""Benchmark: SmolLM2-135M -> 15-layer student (every other layer), KD vs plain LM loss.

Same student init, data order, steps, batch, sequence length and learning rate for
both runs; only the loss differs (KD: alpha·T²·KL + (1-alpha)·CE; LM: CE). Perplexity:
first 16,384 tokens of WikiText-2 (raw) test, 512-token windows.

    python benchmarks/distill_smollm2.py --steps 40 --batch 4 --seq-len 128

Writes benchmarks/results/distill_smollm2.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hfcompress.assets import SMOLLM2, asset_path
from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
TEACHER = str(asset_path(SMOLLM2))
WIKITEXT = str(local_datasets_dir() / "Salesforce/wikitext")
ENWIKI = str(local_datasets_dir() / "fixtures/enwiki-sample")
TEACHER_PPL = 28.13  # measured by the evaluate work with the same protocol (docs/CONTRIBUTING-HELPERS.md)


def ppl(model, ids) -> float:
    from hfcompress.evaluate.perplexity import perplexity_of_ids

    return round(perplexity_of_ids(model, ids, seq_len=512)["perplexity"], 2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--work", default="/tmp/distill-bench")
    p.add_argument("--untrained-ppl", type=float, default=None,
                   help="reuse a measured untrained-student perplexity (skips that evaluation)")
    args = p.parse_args()
    torch.set_num_threads(2)

    import distill_smollm2

    import hfcompress
    from hfcompress.data import load_texts
    from hfcompress.distill.student import student_from_layers
    from hfcompress.evaluate.perplexity import tokenize_corpus

    teacher = hfcompress.load(TEACHER, dtype="float32")
    ids = tokenize_corpus(teacher.tokenizer, load_texts(WIKITEXT, "wikitext-2-raw-v1", "test", "text"),
                          max_tokens=16384)
    results: dict = {"teacher": TEACHER_PPL, "config": vars(args), "runs": {}}
    if args.untrained_ppl is None:
        student, _ = student_from_layers(teacher.model, 15)
        results["untrained_student"] = ppl(student, ids)
        del student
    else:
        results["untrained_student"] = args.untrained_ppl
    print("untrained student", results["untrained_student"], flush=True)
    del teacher
    for loss in ("kd", "lm"):
        out = Path(args.work) / f"smol-15l-{loss}"
        t = time.time()
        distill_smollm2.main(["--output", str(out), "--steps", str(args.steps), "--batch", str(args.batch),
                              "--seq-len", str(args.seq_len), "--lr", str(args.lr), "--loss", loss,
                              "--alpha", str(args.alpha), "--temperature", str(args.temperature),
                              "--logging-steps", "4", "--save-steps", "1000", "--overwrite", "--no-progress",
                              "--dataset", ENWIKI])
        train_s = time.time() - t
        model = hfcompress.load(str(out)).model
        report = json.loads((out / "hfcompress.json").read_text())
        summary = report["stages"][0]["summary"]
        results["runs"][loss] = {
            "perplexity": ppl(model, ids),
            "steps": summary["steps"],
            "train_runtime_s": summary["train_runtime_s"],
            "s_per_step": round(summary["train_runtime_s"] / max(1, summary["steps"]), 1),
            "wall_s": round(train_s, 1),
            "first_log": summary["first_log"],
            "last_log": summary["last_log"],
            "student_parameters": summary["student_parameters"],
        }
        print(loss, results["runs"][loss], flush=True)
    results["kd_beats_lm"] = results["runs"]["kd"]["perplexity"] < results["runs"]["lm"]["perplexity"]
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "distill_smollm2.json").write_text(json.dumps(results, indent=2) + "\n")
    c = args
    lines = [
        "# SmolLM2-135M -> 15-layer student (every other layer)",
        "",
        f"{c.steps} steps x batch {c.batch} x seq {c.seq_len} on enwiki-sample, lr {c.lr} (cosine), "
        f"KD alpha={c.alpha} T={c.temperature}; CPU (2 shared cores), float32. "
        "WikiText-2 test perplexity, first 16,384 tokens, 512-token windows.",
        "",
        "| model | params | WikiText-2 ppl | s/step |",
        "|---|---:|---:|---:|",
        f"| teacher (30 layers) | 134.5M | {TEACHER_PPL} | |",
        f"| student, untrained (15 layers) | {results['runs']['kd']['student_parameters'] / 1e6:.1f}M | "
        f"{results['untrained_student']} | |",
        f"| student + LM loss | | {results['runs']['lm']['perplexity']} | {results['runs']['lm']['s_per_step']} |",
        f"| student + KD | | {results['runs']['kd']['perplexity']} | {results['runs']['kd']['s_per_step']} |",
        "",
    ]
    if args.untrained_ppl is not None:
        lines += ["The untrained-student perplexity was measured by this script (same protocol) in an earlier "
                  "invocation and passed with --untrained-ppl.", ""]
    (res / "distill_smollm2.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
