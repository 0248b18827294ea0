"""The search report: ``search_report.json`` / ``.md``, plots, the card section, the Pareto points.

Every finished search appends its points (searched and baselines, with their budget) to
``points.json`` next to its level database, so the report of any later search on the same
database shows the front over every budget evaluated so far.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..cards import write_card
from ..io import REPORT_NAME, read_report, write_json

REPORT_JSON = "search_report.json"
REPORT_MD = "search_report.md"
CARD = "README.md"


def record_points(path: Path, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Add this search's comparison points to ``path``; returns every point recorded there."""
    try:
        points = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        points = []
    for row in report["comparison"]:
        point = {"budget": report["budget"], "profile": row["name"], "kl": row["kl"]}
        for key in ("sparsity", "average_bits", "average_bits_with_scales", "bytes"):
            if key in row:
                point[key] = row[key]
        points = [p for p in points if (p["budget"], p["profile"]) != (point["budget"], point["profile"])]
        points.append(point)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(points, indent=1))
    os.replace(tmp, path)
    return points


def _public(value: Any) -> str:
    text = str(value)
    return f"local:{Path(text).name}" if os.path.isabs(text) or text.startswith(("~", ".")) else text


def markdown(report: dict[str, Any]) -> str:
    cal, fit, srch = report["calibration"], report["fitness"], report["search"]
    lines = [f"# Searched profile: {report['method']} at {report['budget']}", "",
             f"- calibration / fitness data: `{_public(cal['dataset'])}` ({cal['samples']} x {cal['seq_len']} tokens "
             f"for the level database; fitness windows drawn with seed {fit['windows']['seed']})",
             f"- fitness: {fit['metric']}, selection steps on {' / '.join(map(str, fit['tokens_scored']))} tokens",
             f"- search: {srch['generations']} generations x {srch['offspring']} offspring "
             f"(survivors {srch['survivors']}), seed {srch['seed']}, {srch['evaluations']} evaluations, "
             f"{srch['accepted']} accepted" + (f", resumed at generation(s) {srch['resumed_from']}"
                                                if srch["resumed_from"] else "")
             + (f"; stopped by the {srch['time_limit_minutes']:g}-minute time limit ({srch['generations_asked']} "
                f"asked)" if srch.get("stopped_at_time_limit") else ""),
             f"- budget check: {json.dumps(report['budget_check'])}"]
    scoring = report.get("scoring", {})
    if scoring.get("blocks_whole"):
        lines.append(f"- candidates run from their first changed block on kept block inputs: "
                     f"{scoring['blocks_run']} of {scoring['blocks_whole']} block forwards run in this process "
                     f"({scoring['fraction_run']:.0%})")
    db = report["database"]
    if "level_bytes" in db:
        lines.append(f"- level database `{db['key']}`: {db['level_bytes'] / 1e6:.1f} MB of levels + "
                     f"{db['stats_bytes'] / 1e6:.1f} MB of calibration statistics, each entry calibrated on the "
                     + ("start profile's inputs (computed block by block)" if db.get("inputs") == "sequential"
                        else "dense model's inputs"))
    if report.get("finalize") == "sequential":
        lines.append("- output: the searched levels recomputed block by block on the compressed model's inputs "
                     "(`finalize: sequential`); the database weights the search scored are the second row below")
    if "reproduced" in report:
        lines.append(f"- recipe reproduces the searched weights exactly: {report['reproduced']['exact']}")
    lines += ["", "## Comparison at the same budget (KL to the dense model, lower is better)", "",
              "| profile | KL | detail |", "|---|---:|---|"]
    for row in report["comparison"]:
        if "zeros" in row:
            detail = f"sparsity {row['sparsity']:.5f} ({row['zeros']} zeros)"
        elif "average_bits" in row:
            detail = f"{row['average_bits']:.4f} bits per weight, {row['bytes']} bytes (weights + scales)"
        else:
            detail = f"dropped {row.get('dropped')}"
        lines.append(f"| {row['name']} | {row['kl']:.5f} | {detail} |")
    lines += ["", "## Search curve (parent fitness by generation)", "", "| generation | KL | accepted |",
              "|---:|---:|---|"]
    curve = report["curve"]
    shown = curve if len(curve) <= 30 else curve[:: max(1, len(curve) // 30)] + [curve[-1]]
    for c in shown:
        lines.append(f"| {c['generation']} | {c['fitness']:.5f} | {c['accepted']} |")
    lines += ["", "## Per-layer levels", ""]
    if report["kind"] == "sparsity":
        lines += ["| layer | sparsity | level |", "|---|---:|---:|"]
        lines += [f"| {r['name']} | {r['sparsity']:.4f} | {r['level']:+d} |" for r in report["layers"]]
    elif report["kind"] == "bits":
        lines += ["| layer | bits | group size | bytes |", "|---|---:|---:|---:|"]  # group size: as stored
        lines += [f"| {r['name']} | {r['bits']} | {r['group_size']} | {r['bytes']} |" for r in report["layers"]]
    else:
        lines.append(f"dropped blocks: {report['dropped']}")
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], folder: Path) -> list[str]:
    """search_curve.png, search_levels.png and search_pareto.png (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["generation"] for c in report["curve"]], [c["fitness"] for c in report["curve"]], marker=".")
    ax.set_xlabel("generation")
    ax.set_ylabel("KL to dense (parent)")
    ax.set_title(f"search curve: {report['method']} {report['budget']}")
    fig.tight_layout()
    fig.savefig(folder / "search_curve.png", dpi=100)
    plt.close(fig)
    written.append("search_curve.png")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if report["kind"] == "sparsity":
        ax.bar(range(len(report["layers"])), [r["sparsity"] for r in report["layers"]])
        ax.set_ylabel("sparsity")
    elif report["kind"] == "bits":
        ax.bar(range(len(report["layers"])), [r["bits"] for r in report["layers"]])
        ax.set_ylabel("bits")
    else:
        ax.bar(range(len(report["layers"])), [1 if r["dropped"] else 0 for r in report["layers"]])
        ax.set_ylabel("dropped")
    ax.set_xlabel("unit (execution order)")
    ax.set_title("per-unit levels")
    fig.tight_layout()
    fig.savefig(folder / "search_levels.png", dpi=100)
    plt.close(fig)
    written.append("search_levels.png")
    xkey = "sparsity"
    if report["kind"] == "bits":  # levels costed in bytes (own group sizes): the scales count too
        xkey = "average_bits_with_scales" if report["grid"].get("costed_in") == "bytes" else "average_bits"
    pts = [p for p in report.get("pareto", []) if xkey in p]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in sorted({p["profile"] for p in pts}):
            sel = sorted((p[xkey], p["kl"]) for p in pts if p["profile"] == name)
            ax.plot([s for s, _ in sel], [k for _, k in sel], marker="o", label=name)
        ax.set_xlabel({"sparsity": "sparsity (targeted layers)", "average_bits": "average bits per weight",
                       "average_bits_with_scales": "average bits per weight, scales included"}[xkey])
        ax.set_ylabel("KL to dense")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title("quality vs size, every budget searched on this database")
        fig.tight_layout()
        fig.savefig(folder / "search_pareto.png", dpi=100)
        plt.close(fig)
        written.append("search_pareto.png")
    return written


SECTION_TITLE = "Searched compression profile"


def card_section(report: dict[str, Any]) -> str:
    """The card section's markdown body (its title is :data:`SECTION_TITLE`)."""
    cal, fit = report["calibration"], report["fitness"]
    rows = "\n".join(f"| {r['name']} | {r['kl']:.5f} |" for r in report["comparison"])
    unit = {"sparsity": "layer sparsity", "bits": "layer bit width"}.get(report["kind"], "block keep / drop")
    met = "met exactly" if report["budget_check"].get("exact", True) else \
        "met as closely as the levels allow without exceeding it"
    return (f"The per-{unit} profile of this "
            f"model was **searched** by `hfcompress search` (EvoPress-style evolutionary search, "
            f"{report['search']['generations']} generations) for the budget `{report['budget']}` with "
            f"`{report['method']}` levels, {met}. Candidates were scored by their {fit['metric']} on "
            f"`{_public(cal['dataset'])}` text (the calibration data; never the evaluation text), "
            f"{fit['tokens_scored'][-1]} tokens in the last selection step. Against the alternatives at the same "
            f"budget:\n\n| profile | KL to the dense model |\n|---|---:|\n{rows}\n\n"
            f"`recipe.yaml` holds the searched profile; `{REPORT_MD}` the search curve and per-layer levels.")


def append_card(folder: Path, report: dict[str, Any], name: str | None = None) -> None:
    """Record the section in the folder's ``hfcompress.json`` (``card_sections``) and re-render the card:
    the section lives in the lineage record, so a push (which re-renders the card) keeps it."""
    lineage = read_report(folder)
    if lineage is None:
        return
    sections = [s for s in lineage.get("card_sections") or [] if s.get("title") != SECTION_TITLE]
    lineage["card_sections"] = [*sections, {"title": SECTION_TITLE, "body": card_section(report)}]
    write_json(folder / REPORT_NAME, lineage)
    write_card(folder, name=name)
