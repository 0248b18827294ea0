"""Evaluation reports: ``report.json`` structure, the baseline-vs-compressed comparison,
the Markdown table and the PNG plots (matplotlib, Agg backend).

Functions here take a report dict and never touch a model, so the model card can embed
them::

    from hfcompress.evaluate.report import render_markdown, make_plots, plot_bytes
    md = render_markdown(report)              # an evaluation report.json or an hfcompress.json
    paths = make_plots(report, folder)        # [folder/eval_sparsity.png, folder/eval_quality_vs_size.png]

A report is ``{"schema_version", "kind": "hfcompress-evaluation", "created", "models",
"results": [...], "comparison": [...], "environment", "libraries"}``; an ``hfcompress.json``
(pipeline report) works too: its ``"evaluation"`` list is used as the results.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from ..io import library_versions
from ..reports import (
    COMPRESSED,
    block_sparsity,
    compare,
    format_value,
    public_dataset,
    render_markdown,
    results_of,
)
from .base import EVAL_SCHEMA_VERSION

# Re-exported: the comparison and Markdown rendering live in hfcompress.reports (the card reads them).
__all__ = ["build_report", "compare", "format_value", "make_plots", "plot_bytes", "public_dataset",
           "render_markdown", "results_of", "write_report"]

SPARSITY_PLOT = "eval_sparsity.png"
QUALITY_SIZE_PLOT = "eval_quality_vs_size.png"
#: Metrics that measure quality (the y axis of the quality-vs-size plot), best first.
QUALITY_METRICS = ("perplexity", "accuracy", "f1")
#: Size figures for the x axis, preferred first.
SIZE_METRICS = ("disk_bytes", "memory_bytes")


def build_report(results: list[dict[str, Any]], models: dict[str, dict[str, Any]] | None = None,
                 **extra: Any) -> dict[str, Any]:
    """An evaluation report dict (``report.json``) from results."""
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    report = {
        "schema_version": EVAL_SCHEMA_VERSION,
        "kind": "hfcompress-evaluation",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": models or {},
        "results": results,
        "comparison": compare(results),
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": threads},
        "libraries": library_versions(),
    }
    report.update(extra)
    return report


# ------------------------------------------------------------------ plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fig_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def sparsity_plot(report: dict[str, Any]) -> bytes | None:
    """Per-layer sparsity bar chart of the compressed model (per block when there are many)."""
    series = {}
    for r in results_of(report):
        if r.get("metric") == "linear_sparsity" and (r.get("details") or {}).get("layers"):
            series[r.get("model")] = r["details"]["layers"]
    layers = series.get(COMPRESSED) or next(iter(series.values()), None)
    if not layers:
        return None
    label = "module"
    if len(layers) > 48:
        layers, label = block_sparsity(layers), "block (mean over its Linear modules)"
    plt = _pyplot()
    names = list(layers)
    fig, ax = plt.subplots(figsize=(max(6.0, min(18.0, 0.18 * len(names) + 3)), 3.6))
    ax.bar(range(len(names)), [layers[n] for n in names], color="#3b7dd8")
    ax.set_ylim(0, 1)
    ax.set_ylabel("sparsity (fraction of zeros)")
    ax.set_xlabel(f"Linear weights per {label}")
    ax.set_title("Per-layer sparsity")
    step = max(1, len(names) // 30)
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels([_short(names[i]) for i in range(0, len(names), step)], rotation=90, fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _fig_bytes(fig)


def _short(name: str) -> str:
    return name if len(name) <= 28 else "…" + name[-27:]


def quality_size_plot(report: dict[str, Any]) -> bytes | None:
    """Scatter of quality (one panel per quality metric) vs size, one point per variant."""
    results = results_of(report)
    sizes: dict[str, tuple[float, str]] = {}
    for metric in reversed(SIZE_METRICS):  # preferred last, so it wins
        for r in results:
            if r.get("name") == "efficiency" and r.get("metric") == metric and r.get("value"):
                sizes[r["model"]] = (float(r["value"]), metric)
    quality: dict[str, dict[str, float]] = {}
    for r in results:
        if r.get("metric") in QUALITY_METRICS and isinstance(r.get("value"), (int, float)):
            quality.setdefault(r["metric"], {})[r["model"]] = float(r["value"])
            if r["model"] not in sizes and (r.get("details") or {}).get("model_bytes"):
                sizes[r["model"]] = (float(r["details"]["model_bytes"]), "memory_bytes")
    panels = [(m, quality[m]) for m in QUALITY_METRICS if m in quality]
    panels = [(m, {k: v for k, v in pts.items() if k in sizes}) for m, pts in panels]
    panels = [(m, pts) for m, pts in panels if pts]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (metric, pts) in zip(axes[0], panels, strict=True):
        size_kind = {sizes[k][1] for k in pts}
        for model, y in pts.items():
            x = sizes[model][0] / 2**20
            ax.scatter([x], [y], s=60, color="#d8573b" if model == COMPRESSED else "#3b7dd8", zorder=3)
            ax.annotate(model, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xlabel(("weights on disk" if size_kind == {"disk_bytes"} else "size") + " (MiB)")
        ax.set_ylabel(metric + (" (lower is better)" if metric == "perplexity" else " (higher is better)"))
        ax.set_title(f"{metric} vs size")
        ax.grid(alpha=0.3)
        ax.margins(0.25)
    return _fig_bytes(fig)


def plot_bytes(report: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of every plot the report supports: {file name: bytes}."""
    out = {}
    for name, fn in ((SPARSITY_PLOT, sparsity_plot), (QUALITY_SIZE_PLOT, quality_size_plot)):
        data = fn(report)
        if data:
            out[name] = data
    return out


def make_plots(report: dict[str, Any], folder: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Write the report's plots into ``folder`` (``{prefix}eval_sparsity.png``, ...), atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in plot_bytes(report).items():
        path = folder / f"{prefix}{name}"
        atomic_write(path, data)
        paths.append(path)
    return paths


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` via a temporary sibling and one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(report: dict[str, Any], output: str | os.PathLike) -> list[Path]:
    """Write ``output`` (JSON), the Markdown beside it (``.md``) and the plots
    (``<stem>_eval_*.png``), each atomically. Returns the paths written."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = plot_bytes(report)
    names = {name: f"{out.stem}_{name}" for name in plots}
    report = dict(report, files={"markdown": out.with_suffix(".md").name, "plots": list(names.values())})
    md = render_markdown(report)
    if names:
        md += "\n" + "\n".join(f"![{n}]({f})" for n, f in names.items()) + "\n"
    written = []
    for name, data in plots.items():
        atomic_write(out.parent / names[name], data)
        written.append(out.parent / names[name])
    atomic_write(out.with_suffix(".md"), md)
    atomic_write(out, json.dumps(report, indent=2, default=_json_default) + "\n")
    return [out, out.with_suffix(".md"), *written]


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    return str(o)
