"""Reading reports, for whoever shows them: the baseline-vs-compressed comparison and the
Markdown table of evaluation results. No model, no measurement: the evaluation family writes
results, the model card and the CLI read them here::

    from hfcompress.reports import compare, render_markdown
    md = render_markdown(report)   # an evaluation report.json or an hfcompress.json

A result is one dict in the schema of :func:`hfcompress.evaluate.base.make_result`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

#: Model labels used in results.
COMPRESSED, BASELINE = "compressed", "baseline"
#: Metrics that are fractions (of zeros...): their ratio means nothing, only the difference is shown.
NO_RATIO_METRICS = ("linear_sparsity",)


def results_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The result list of an evaluation report or of an ``hfcompress.json``."""
    if "results" in report:
        return list(report["results"] or [])
    return list(report.get("evaluation") or [])


def _key(r: dict[str, Any]) -> tuple:
    settings = {k: v for k, v in (r.get("settings") or {}).items()}
    return (r.get("name"), r.get("metric"), r.get("dataset"), r.get("config"), r.get("split"),
            json.dumps(settings, sort_keys=True, default=str))


def compare(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair each compressed result with the baseline result measured the same way.

    Efficiency results are paired on (name, metric) alone: their settings record the
    model's own dtype, which legitimately differs between the two.
    """
    rows = []
    base: dict[tuple, dict] = {}
    for r in results:
        if r.get("model") == BASELINE:
            base[_pair_key(r)] = r
    seen = set()
    for r in results:
        if r.get("model") != COMPRESSED:
            continue
        k = _pair_key(r)
        if k in seen:
            continue
        seen.add(k)
        b = base.get(k)
        c_val = r.get("value")
        b_val = b.get("value") if b else None
        delta = ratio = None
        if isinstance(c_val, (int, float)) and isinstance(b_val, (int, float)):
            delta = c_val - b_val
            ratio = c_val / b_val if b_val and r.get("metric") not in NO_RATIO_METRICS else None
        better = None
        if delta is not None and r.get("higher_is_better") is not None and delta != 0:
            better = (delta > 0) == bool(r["higher_is_better"])
        rows.append({"name": r.get("name"), "metric": r.get("metric"), "unit": r.get("unit", ""),
                     "dataset": r.get("dataset"), "config": r.get("config"), "split": r.get("split"),
                     "baseline": b_val, "compressed": c_val, "delta": delta, "ratio": ratio,
                     "higher_is_better": r.get("higher_is_better"), "improved": better})
    return rows


def _pair_key(r: dict[str, Any]) -> tuple:
    if r.get("name") == "efficiency":
        return ("efficiency", r.get("metric"))
    return _key(r)


# ------------------------------------------------------------------ Markdown
def format_value(value: Any, unit: str = "", metric: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if unit == "bytes":
        return _bytes(value)
    if unit == "params":
        return f"{value / 1e6:.2f} M" if abs(value) >= 1e5 else f"{int(value):,}"
    if isinstance(value, float):
        if metric in ("linear_sparsity",) or unit == "":
            if metric in ("accuracy", "f1", "linear_sparsity") or abs(value) <= 1:
                return f"{value:.4f}"
        if abs(value) >= 1000:
            return f"{value:,.0f}" + (f" {unit}" if unit else "")
        return f"{value:.2f}" + (f" {unit}" if unit else "")
    return f"{value:,}" + (f" {unit}" if unit else "")


def _bytes(n: float) -> str:
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.2f} {unit}"
        n /= 1024
    return f"{sign}{n:.2f} GiB"  # pragma: no cover


def _where(r: dict[str, Any]) -> str:
    if not r.get("dataset"):
        return ""
    parts = [public_dataset(str(r["dataset"]))]
    if r.get("config"):
        parts.append(str(r["config"]))
    if r.get("split"):
        parts.append(str(r["split"]))
    return " / ".join(parts)


def public_dataset(name: str) -> str:
    """A dataset name fit to publish: a local folder is shown as its last two path parts
    (``.../hub/datasets/Salesforce/wikitext`` -> ``Salesforce/wikitext``), never the full path."""
    if os.path.isabs(name) or name.startswith(("~", "./", "../")):
        parts = [p for p in Path(name).parts if p not in ("/", "~", ".", "..")]
        return "/".join(parts[-2:])
    return name


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any], title: str | None = "Evaluation") -> str:
    """A Markdown table: baseline vs compressed with delta and ratio (or values alone)."""
    results = results_of(report)
    lines: list[str] = []
    if title:
        lines += [f"## {title}", ""]
    if not results:
        return "\n".join(lines + ["No evaluation results.", ""])
    rows = report.get("comparison") if "results" in report else None
    rows = rows if rows is not None else compare(results)
    has_baseline = any(r.get("model") == BASELINE for r in results)
    if has_baseline:
        lines += ["| Metric | Dataset | Baseline | Compressed | Δ | Ratio |", "|---|---|---:|---:|---:|---:|"]
        for row in rows:
            delta = row["delta"]
            d = "—" if delta is None else (("+" if delta > 0 else "") + format_value(delta, row["unit"], row["metric"]))
            if row.get("improved") is not None and delta:
                d += " ✓" if row["improved"] else " ✗"
            ratio = "—" if row["ratio"] is None else f"{row['ratio']:.3f}×"
            lines.append("| " + " | ".join(_cell(x) for x in (
                _label(row), _where(row), format_value(row["baseline"], row["unit"], row["metric"]),
                format_value(row["compressed"], row["unit"], row["metric"]), d, ratio)) + " |")
    else:
        lines += ["| Metric | Dataset | Value |", "|---|---|---:|"]
        for r in results:
            lines.append("| " + " | ".join(_cell(x) for x in (
                _label(r), _where(r), format_value(r.get("value"), r.get("unit", ""), r.get("metric", "")))) + " |")
    lines.append("")
    notes = _notes(results)
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _label(r: dict[str, Any]) -> str:
    arrow = {True: " ↑", False: " ↓"}.get(r.get("higher_is_better"), "")
    name, metric = r.get("name"), r.get("metric")
    return (metric if name in (metric, "efficiency") else f"{name}: {metric}") + arrow


def _notes(results: list[dict[str, Any]]) -> list[str]:
    notes = []
    for r in results:
        s = r.get("settings") or {}
        if r.get("metric") == "perplexity" and r.get("model") == COMPRESSED:
            notes.append(f"Perplexity: {s.get('corpus_tokens')} tokens, {s.get('seq_len')}-token windows, "
                         f"stride {s.get('stride')}, BOS {'prepended' if s.get('add_bos') else 'not prepended'}.")
        if r.get("metric") == "latency_ms" and r.get("model") == COMPRESSED:
            notes.append(f"Latency: median of {s.get('runs')} forward passes after {s.get('warmup')} warm-up, "
                         f"batch {s.get('latency_batch_size')} × {s.get('latency_seq_len')} tokens, "
                         f"{s.get('device')}, {s.get('torch_threads')} threads.")
        if r.get("metric") == "peak_rss_bytes" and r.get("model") == COMPRESSED:
            notes.append(f"Peak RSS: {(r.get('details') or {}).get('method', '')}.")
    return list(dict.fromkeys(notes))


def block_sparsity(layers: dict[str, float]) -> dict[str, float]:
    """Per-block mean sparsity (modules grouped by their first numeric index)."""
    groups: dict[str, list[float]] = {}
    for name, value in layers.items():
        m = re.search(r"^(.*?\.\d+)\.", name)
        groups.setdefault(m.group(1) if m else name, []).append(value)
    return {k: sum(v) / len(v) for k, v in groups.items()}
