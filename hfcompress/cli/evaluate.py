"""CLI: ``hfcompress evaluate MODEL [--baseline BASE] --dataset ID --metric M ... --output report.json``.

Examples::

    hfcompress evaluate out/smol-wanda --baseline HuggingFaceTB/SmolLM2-135M-Instruct \\
        --dataset Salesforce/wikitext --config wikitext-2-raw-v1 --split test \\
        --metric perplexity --metric efficiency --max-tokens 16384 --output eval/report.json
    hfcompress evaluate my-classifier --dataset fixtures/movie-review-snippets --split validation \\
        --text-column sentence --metric accuracy --metric f1
    hfcompress evaluate openai/whisper-tiny.en --dataset fixtures/espeak-sentences --metric wer
    hfcompress evaluate fixtures/vit-digits --dataset fixtures/digits --split test --metric accuracy

Writes ``report.json`` plus ``report.md`` and ``report_eval_*.png`` beside it (each atomically)
and prints the Markdown table. Datasets are checked before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import build_config
from ..errors import UsageError
from ..evaluate import evaluate
from ..evaluate.core import _check_output, _peek
from ..registry import methods
from ..reports import render_markdown
from .common import HelpFormatter, add_model_args, load_kwargs

#: CLI dest -> evaluation config field (where the names differ).
_FIELD_OF = {"dataset_config": "config", "dataset_revision": "revision", "gen_tokens": "gen_new_tokens",
             "no_generate": "generate"}
#: Flags that set evaluation config fields (checked against the chosen metrics' configs).
METRIC_FLAGS = ("dataset", "dataset_config", "split", "dataset_revision", "text_column", "text_pair_column",
                "image_column", "audio_column", "normalizer", "max_new_tokens", "num_beams", "label_column", "max_samples", "hub_metrics", "max_tokens", "seq_len", "stride", "add_bos",
                "batch_size", "latency_batch_size", "latency_seq_len", "runs", "warmup", "gen_tokens",
                "no_generate", "peak_rss")


def _metric_cls(name: str) -> tuple[type, dict[str, Any]]:
    """(config class, extra params) of a ``--metric`` name: a registered method, else an evaluate module."""
    registered = methods("evaluate")
    if name in registered and name not in ("metric", "lm-eval"):
        return registered[name].config_cls, {}
    return registered["metric"].config_cls, {"metric": name}


def _defaults(name: str) -> str:
    """The default of a field in the metrics that have it, for the help text."""
    shown = {}
    for metric, m in methods("evaluate").items():
        info = m.config_cls.model_fields.get(name)
        if info is not None and not info.is_required():
            shown.setdefault(str(info.get_default(call_default_factory=True)), []).append(metric)
    if len(shown) == 1:
        return next(iter(shown))
    return "; ".join(f"{', '.join(ms)}: {v}" for v, ms in shown.items())


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a model (and a baseline): perplexity, task metrics, efficiency",
        description="Evaluate MODEL (and --baseline) on a Hub dataset and measure size / speed; write "
                    "report.json, report.md and PNG plots.", formatter_class=HelpFormatter,
    )
    add_model_args(p, offload=False)  # evaluation runs on models in memory
    p.add_argument("--baseline", metavar="BASE_MODEL", default=None,
                   help="a second model (repo id or folder) measured the same way, for comparison (default: none)")
    named = ", ".join(n for n in methods("evaluate") if n not in ("metric", "lm-eval"))
    p.add_argument("--metric", action="append", default=None, metavar="METRIC",
                   help=f"{named}, or any evaluate metric module (a shipped "
                        "name, a local path, or a Hub metric with --hub-metrics); repeat for several "
                        "(default: perplexity + efficiency for causal LMs, accuracy + efficiency for "
                        "classifiers, wer + efficiency for speech recognition, efficiency otherwise)")
    d = p.add_argument_group("dataset")
    d.add_argument("--dataset", default=None,
                   help=f"Hub dataset repo id or local dataset folder (default: {_defaults('dataset')})")
    d.add_argument("--config", dest="dataset_config", default=None, help="dataset config name (default: none; "
                   "wikitext-2-raw-v1 for Salesforce/wikitext)")
    d.add_argument("--split", default=None, help=f"split (default: {_defaults('split')})")
    d.add_argument("--dataset-revision", default=None, help="branch, tag or commit of the dataset (default: main)")
    d.add_argument("--text-column", default=None, help="text column (default: text)")
    d.add_argument("--text-pair-column", default=None, help="second text column (sentence pairs; default: none)")
    d.add_argument("--image-column", default=None,
                   help="image column of an image-classification dataset (default: its Image column)")
    d.add_argument("--audio-column", default=None, help="audio column of a speech dataset (default: audio)")
    d.add_argument("--label-column", default=None, help=f"label column (default: {_defaults('label_column')})")
    d.add_argument("--max-samples", type=int, default=None,
                   help="classification: evaluate N rows only (default: all)")
    d.add_argument("--hub-metrics", action="store_true", default=None,
                   help="load metric modules from the Hub instead of the copies shipped with hfcompress")
    w = p.add_argument_group("speech recognition (wer)")
    w.add_argument("--normalizer", choices=["english", "basic", "none"], default=None,
                   help="text normalizer before WER/CER (default: english, Whisper's English normalizer)")
    w.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"tokens generated per clip at most (default: {_defaults('max_new_tokens')})")
    w.add_argument("--num-beams", type=int, default=None, help="beam search width (default: 1, greedy)")
    q = p.add_argument_group("perplexity")
    q.add_argument("--max-tokens", type=int, default=None,
                   help=f"score the first N tokens (0: all; default: {_defaults('max_tokens')})")
    q.add_argument("--seq-len", type=int, default=None, help=f"window length in tokens (default: {_defaults('seq_len')})")
    q.add_argument("--stride", type=int, default=None, help="window stride (default: --seq-len)")
    q.add_argument("--add-bos", action=argparse.BooleanOptionalAction, default=None,
                   help="prepend BOS to every window (default: when the tokenizer adds BOS itself)")
    q.add_argument("--batch-size", type=int, default=None, help=f"windows / examples per forward pass (default: {_defaults('batch_size')})")
    e = p.add_argument_group("efficiency")
    e.add_argument("--latency-batch-size", type=int, default=None,
                   help=f"sequences per timed forward pass (default: {_defaults('latency_batch_size')})")
    e.add_argument("--latency-seq-len", type=int, default=None,
                   help=f"tokens per sequence of the timed batch (default: {_defaults('latency_seq_len')})")
    e.add_argument("--runs", type=int, default=None,
                   help=f"timed forward passes, median reported (default: {_defaults('runs')})")
    e.add_argument("--warmup", type=int, default=None,
                   help=f"untimed forward passes first (default: {_defaults('warmup')})")
    e.add_argument("--gen-tokens", type=int, default=None,
                   help=f"new tokens for the generation tokens/s figure (default: {_defaults('gen_new_tokens')})")
    e.add_argument("--no-generate", action="store_true", default=None,
                   help="skip the generation tokens/s figure (measured by default)")
    e.add_argument("--peak-rss", choices=["subprocess", "inprocess", "off"], default=None,
                   help=f"how peak memory is measured (default: {_defaults('peak_rss')})")
    o = p.add_argument_group("output")
    o.add_argument("--output", "-o", default=None,
                   help="report.json path (report.md and plots beside it; default: print only)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing report (off by default)")
    o.add_argument("--no-progress", action="store_true", help="hide progress bars (shown by default)")
    o.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)  # the earlier opt-in spelling
    o.add_argument("--json", action="store_true", help="print the report JSON instead of the Markdown table")
    p.set_defaults(func=_run)


def _value(dest: str, value: Any) -> Any:
    if dest == "no_generate":
        return not value
    if dest == "max_tokens":
        return value or None  # 0: all tokens
    return value


#: The metrics ``evaluate`` runs without --metric, by model task (others: efficiency only).
DEFAULT_METRICS = {"causal-lm": ["perplexity", "efficiency"], "sequence-classification": ["accuracy", "efficiency"],
                   "image-classification": ["accuracy", "efficiency"], "speech-seq2seq": ["wer", "efficiency"]}


def configs_from_args(args: argparse.Namespace, task: str | None) -> list[Any]:
    """Evaluation configs from the CLI flags (pydantic validates the values).

    A flag that sets a field none of the chosen metrics has is refused (never ignored).
    """
    metrics = list(dict.fromkeys(args.metric or DEFAULT_METRICS.get(task or "", ["efficiency"])))
    given = {dest: getattr(args, dest) for dest in METRIC_FLAGS if getattr(args, dest, None) is not None}
    classes = {m: _metric_cls(m) for m in metrics}
    for dest in given:
        field = _FIELD_OF.get(dest, dest)
        if not any(field in cls.model_fields for cls, _ in classes.values()):
            takers = sorted(n for n, m in methods("evaluate").items() if field in m.config_cls.model_fields)
            raise UsageError(f"--{dest.replace('_', '-')} does not apply to --metric {', '.join(metrics)} "
                             f"(it applies to {', '.join(takers)})")
    out = []
    for m in metrics:
        cls, extra = classes[m]
        fields = cls.model_fields
        if "dataset" in fields and fields["dataset"].is_required() and "dataset" not in given:
            raise UsageError(f"--metric {m} needs --dataset (a Hub dataset repo id or local folder)")
        params = {**extra, **{_FIELD_OF.get(d, d): _value(d, v) for d, v in given.items()
                              if _FIELD_OF.get(d, d) in fields}}
        out.append(build_config(cls, params, flags=True, context=f"metric {m}"))
    return out


def _run(args: argparse.Namespace) -> int:
    kwargs = load_kwargs(args)
    if args.output:
        _check_output(args.output, args.overwrite)
    task = args.task
    if not args.metric and task is None:
        _, task, _ = _peek(args.model, {k: v for k, v in kwargs.items() if v is not None})
    configs = configs_from_args(args, task)
    report = evaluate(args.model, configs, baseline=args.baseline, output=args.output, overwrite=args.overwrite,
                      progress=not args.no_progress, load_kwargs=kwargs)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render_markdown(report))
    if args.output:
        print(f"wrote {args.output} (+ {', '.join(report_files(args.output))})")
    return 0


def report_files(output: str) -> list[str]:
    out = Path(output)
    return [p.name for p in sorted(out.parent.glob(f"{out.stem}*")) if p.suffix in (".md", ".png")]
