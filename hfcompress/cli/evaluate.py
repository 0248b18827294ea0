"""CLI: ``hfcompress evaluate MODEL [--baseline BASE] --dataset ID --metric M ... --output report.json``.

Examples::

    hfcompress evaluate out/smol-wanda --baseline HuggingFaceTB/SmolLM2-135M-Instruct \\
        --dataset Salesforce/wikitext --config wikitext-2-raw-v1 --split test \\
        --metric perplexity --metric efficiency --max-tokens 16384 --output eval/report.json
    hfcompress evaluate my-classifier --dataset fixtures/movie-review-snippets --split validation \\
        --text-column sentence --metric accuracy --metric f1

Writes ``report.json`` plus ``report.md`` and ``report_eval_*.png`` beside it (each atomically)
and prints the Markdown table. Datasets are checked before any model is loaded.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_model_args, load_kwargs

_DATASET_METRICS = {"perplexity", "accuracy", "f1"}


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a model (and a baseline): perplexity, task metrics, efficiency",
        description="Evaluate MODEL (and --baseline) on a Hub dataset and measure size / speed; write "
                    "report.json, report.md and PNG plots.",
    )
    add_model_args(p)
    p.add_argument("--baseline", metavar="BASE_MODEL", default=None,
                   help="a second model (repo id or folder) measured the same way, for comparison")
    p.add_argument("--metric", action="append", default=None, metavar="METRIC",
                   help="perplexity, accuracy, f1, efficiency, or any evaluate metric module (a shipped "
                        "name, a local path, or a Hub metric with --hub-metrics); repeat for several "
                        "(default: perplexity + efficiency for causal LMs, accuracy + efficiency otherwise)")
    d = p.add_argument_group("dataset")
    d.add_argument("--dataset", default=None, help="Hub dataset repo id or local dataset folder")
    d.add_argument("--config", dest="dataset_config", default=None, help="dataset config name")
    d.add_argument("--split", default=None, help="split (default: test for perplexity, else validation)")
    d.add_argument("--dataset-revision", default=None)
    d.add_argument("--text-column", default=None, help="text column (default: text)")
    d.add_argument("--text-pair-column", default=None, help="second text column (sentence pairs)")
    d.add_argument("--label-column", default="label")
    d.add_argument("--max-samples", type=int, default=None, help="classification: first N rows only")
    d.add_argument("--hub-metrics", action="store_true",
                   help="load metric modules from the Hub instead of the copies shipped with hfcompress")
    q = p.add_argument_group("perplexity")
    q.add_argument("--max-tokens", type=int, default=16384, help="score the first N tokens (0: all; default 16384)")
    q.add_argument("--seq-len", type=int, default=512, help="window length in tokens (default 512)")
    q.add_argument("--stride", type=int, default=None, help="window stride (default: --seq-len)")
    q.add_argument("--add-bos", action=argparse.BooleanOptionalAction, default=None,
                   help="prepend BOS to every window (default: when the tokenizer adds BOS itself)")
    q.add_argument("--batch-size", type=int, default=None, help="windows / examples per forward pass")
    e = p.add_argument_group("efficiency")
    e.add_argument("--latency-batch-size", type=int, default=1)
    e.add_argument("--latency-seq-len", type=int, default=128)
    e.add_argument("--runs", type=int, default=10, help="timed forward passes (median reported)")
    e.add_argument("--warmup", type=int, default=3)
    e.add_argument("--gen-tokens", type=int, default=32, help="new tokens for the generation tokens/s figure")
    e.add_argument("--no-generate", action="store_true", help="skip the generation tokens/s figure")
    e.add_argument("--peak-rss", choices=["subprocess", "inprocess", "off"], default="subprocess")
    o = p.add_argument_group("output")
    o.add_argument("--output", "-o", default=None, help="report.json path (report.md and plots beside it)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing report")
    o.add_argument("--progress", action="store_true", help="show progress bars")
    o.add_argument("--json", action="store_true", help="print the report JSON instead of the Markdown table")
    p.set_defaults(func=_run)


def configs_from_args(args: argparse.Namespace, task: str | None) -> list[Any]:
    """Evaluation configs from the CLI flags (pydantic validates the values)."""
    from pydantic import ValidationError

    from ..errors import UsageError
    from ..evaluate import AccuracyConfig, EfficiencyConfig, F1Config, MetricConfig, PerplexityConfig

    metrics = args.metric or (["perplexity", "efficiency"] if task == "causal-lm" else ["accuracy", "efficiency"])
    out = []
    for m in dict.fromkeys(metrics):
        try:
            if m == "efficiency":
                out.append(EfficiencyConfig(latency_batch_size=args.latency_batch_size,
                                            latency_seq_len=args.latency_seq_len, runs=args.runs,
                                            warmup=args.warmup, gen_new_tokens=args.gen_tokens,
                                            generate=not args.no_generate, peak_rss=args.peak_rss))
                continue
            if not args.dataset and m != "perplexity":
                raise UsageError(f"--metric {m} needs --dataset (a Hub dataset repo id or local folder)")
            common = {"config": args.dataset_config, "revision": args.dataset_revision}
            if args.dataset:
                common["dataset"] = args.dataset
            if m == "perplexity":
                kw = dict(common, split=args.split or "test", text_column=args.text_column or "text",
                          max_tokens=args.max_tokens or None, seq_len=args.seq_len, stride=args.stride,
                          add_bos=args.add_bos)
                if args.batch_size:
                    kw["batch_size"] = args.batch_size
                out.append(PerplexityConfig(**kw))
                continue
            kw = dict(common, split=args.split or "validation", text_column=args.text_column or "text",
                      text_pair_column=args.text_pair_column, label_column=args.label_column,
                      max_samples=args.max_samples, hub_metrics=args.hub_metrics)
            if args.batch_size:
                kw["batch_size"] = args.batch_size
            if m == "accuracy":
                out.append(AccuracyConfig(**kw))
            elif m == "f1":
                out.append(F1Config(**kw))
            else:
                out.append(MetricConfig(metric=m, **kw))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][-1]).replace("_", "-") if err["loc"] else m
            raise UsageError(f"--{field}: {err['msg']} (metric {m})") from None
    return out


def _run(args: argparse.Namespace) -> int:
    import json

    from ..evaluate import evaluate
    from ..evaluate.core import _check_output, _peek
    from ..evaluate.report import render_markdown

    kwargs = load_kwargs(args)
    if args.output:
        _check_output(args.output, args.overwrite)
    task = args.task
    if not args.metric and task is None:
        _, task, _ = _peek(args.model, {k: v for k, v in kwargs.items() if v is not None})
    configs = configs_from_args(args, task)
    report = evaluate(args.model, configs, baseline=args.baseline, output=args.output, overwrite=args.overwrite,
                      progress=args.progress, load_kwargs=kwargs)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render_markdown(report))
    if args.output:
        print(f"wrote {args.output} (+ {', '.join(report_files(args.output))})")
    return 0


def report_files(output: str) -> list[str]:
    from pathlib import Path

    out = Path(output)
    return [p.name for p in sorted(out.parent.glob(f"{out.stem}*")) if p.suffix in (".md", ".png")]
