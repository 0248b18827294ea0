"""Build the model card of an output folder (see :mod:`hfcompress.cards`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..formats import folder_format
from ..io import RECIPE_NAME, read_report
from ..loading import TASKS
from ..loading.load import PROCESSOR_FILES, read_config_json
from ..reports import render_markdown

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.j2"
CARD_NAME = "README.md"
_RELATION = {"quantize": "quantized", "distill": "finetune", "finetune": "finetune"}


def _human_bytes(n: int | None) -> str:
    if not n:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{b / a:.3f}×" if a and b is not None else "n/a"


def _public(value: Any) -> str:
    """A dataset / model reference safe to publish: Hub ids as-is, local paths by name only."""
    text = str(value)
    if os.path.isabs(text) or text.startswith(("~", ".")):
        return f"local:{Path(text).name}"
    return text


def _settings(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        if key == "method" or value in (None, [], {}, ""):
            continue
        if isinstance(value, dict):
            if "dataset" in value:
                parts.append(f"{key}=`{_public(value['dataset'])}`")
            continue
        if isinstance(value, list):
            value = ",".join(map(str, value))[:40]
        parts.append(f"{key}={value}")
    return ", ".join(parts[:8]) or "defaults"


def _bnb_format(method: str, bits: Any) -> str:
    """The bitsandbytes format a stage wrote, in words: "4-bit NF4", "8-bit (LLM.int8)", ..."""
    for key, words in (("nf4", "4-bit NF4"), ("fp4", "4-bit FP4"), ("int8", "8-bit (LLM.int8)")):
        if key in method:
            return words
    return f"{bits}-bit" if bits else "quantized"


def _stage_facts(report: dict[str, Any]) -> tuple[list[str], str | None, list[str], list[str]]:
    """tags, base_model_relation, datasets, limitations from the stage records."""
    tags = ["hfcompress"]
    datasets: list[str] = []
    limitations: list[str] = []
    relation = None
    for rec in report.get("stages", []):
        family, method, params = rec["family"], rec["method"], rec.get("params", {})
        summary = rec.get("summary") or {}
        if family != "evaluate":
            tags.append(method)
        calib = params.get("calibration") or {}
        if isinstance(calib, dict) and calib.get("dataset"):
            datasets.append(calib["dataset"])
        if params.get("dataset"):
            datasets.append(params["dataset"])
        relation = _RELATION.get(family, relation)
        if family == "prune":
            tags.append("pruned")
            if params.get("structured") or summary.get("structured"):
                tags.append("structured-pruning")
                limitations.append("Structured pruning removed whole channels / heads / layers: without "
                                   "recovery fine-tuning the quality loss can be large (see the evaluation).")
            else:
                tags.append("sparse")
                limitations.append("Unstructured / N:M sparsity zeroes weights but dense kernels do not skip "
                                   "zeros: expect no speed-up from it on CPU or GPU dense matmul.")
        elif family == "quantize":
            tags.append("quantized")
            bits = summary.get("bits") or params.get("bits")
            text = f"{method} {bits or ''}"
            if "int8" in text or bits == 8:
                tags.append("8-bit")
            if any(k in text for k in ("nf4", "fp4", "int4")) or bits == 4:
                tags.append("4-bit")
            if method.startswith("bnb"):
                tags.append("bitsandbytes")
                limitations.append("bitsandbytes weights need the `bitsandbytes` package to load; on CPU "
                                   f"{_bnb_format(method, bits)} inference is slower than fp32 (the weights are "
                                   "dequantized on the fly).")
            if method.startswith("quanto"):
                tags.append("quanto")
        elif family in ("distill", "finetune"):
            tags.append("distillation" if family == "distill" else "recovery-finetune")
    if not report.get("evaluation"):
        limitations.append("No evaluation ran: the quality cost of this compression was not measured.")
    datasets += [e["dataset"] for e in report.get("evaluation", []) if e.get("dataset")]
    public_ds = list(dict.fromkeys(d for d in datasets if not os.path.isabs(str(d)) and "/" in str(d)))
    return list(dict.fromkeys(tags)), relation, public_ds, limitations


def _eval_results(report: dict[str, Any], pipeline_tag: str) -> list[Any]:
    from huggingface_hub import EvalResult

    results = []
    for e in report.get("evaluation", []):
        if e.get("model", "compressed") != "compressed" or not isinstance(e.get("value"), (int, float)):
            continue
        if e.get("name") == "efficiency" or not e.get("dataset"):  # model-index is for quality results
            continue
        dataset = _public(e.get("dataset") or "unknown")
        results.append(EvalResult(
            task_type=pipeline_tag, dataset_type=dataset, dataset_name=dataset,
            dataset_config=e.get("config"), dataset_split=e.get("split"),
            metric_type=str(e.get("metric")), metric_name=str(e.get("metric")),
            metric_value=round(float(e["value"]), 4),
        ))
    return results


def _evaluation_table(report: dict[str, Any]) -> str:
    if not report.get("evaluation"):
        return ""
    return render_markdown(report, title=None)


def _processor_class(folder: Path) -> str | None:
    """The Auto class that loads the folder's tokenizer / processor; None when it ships neither
    (the card then does not tell users to load one)."""
    names = {p.name for p in folder.iterdir()}
    if names & {"preprocessor_config.json", "processor_config.json"}:
        return "AutoProcessor"
    return "AutoTokenizer" if names & set(PROCESSOR_FILES) else None


def _load_snippet(config: dict[str, Any], task_auto: str, repo: str,
                  processor: str | None = "AutoTokenizer") -> tuple[str, bool]:
    quant = (config.get("quantization_config") or {}).get("quant_method", "")
    needs_import = str(quant).startswith("hfcompress")
    lines = []
    if needs_import:
        lines.append("import hfcompress  # registers this checkpoint format with transformers")
    lines.append(f"from transformers import {task_auto}" + (f", {processor}" if processor else ""))
    lines.append("")
    lines.append(f'model = {task_auto}.from_pretrained("{repo}")')
    if processor:
        name = "tokenizer" if processor == "AutoTokenizer" else "processor"
        lines.append(f'{name} = {processor}.from_pretrained("{repo}")')
    return "\n".join(lines), needs_import


def build_card(folder: str | os.PathLike, repo_id: str | None = None, name: str | None = None) -> Any:
    """The :class:`huggingface_hub.ModelCard` for an output folder with ``hfcompress.json``.

    ``name`` is the model name shown when there is no ``repo_id`` (default: the folder name).
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    report = read_report(folder)
    if report is None:
        raise UsageError(f"{folder} has no hfcompress.json: it was not written by hfcompress "
                         "(run `hfcompress compress` / `prune` / `quantize` to produce one)")
    config = read_config_json(folder) if (folder / "config.json").is_file() else {}
    source = report.get("source", {})
    base_model = source.get("repo_id")
    pipeline_tag = report.get("pipeline_tag")
    task_auto = TASKS.get(report.get("task", ""), ("AutoModel",))[0]
    tags, relation, datasets, limitations = _stage_facts(report)
    snippet, needs_import = _load_snippet(config, task_auto, repo_id or "REPO_ID", _processor_class(folder))

    fmt = report.get("format") or folder_format(folder)
    if needs_import:
        limitations.append("This checkpoint uses an hfcompress format: `import hfcompress` before "
                           "`from_pretrained` (the snippet above does).")
    card_data = ModelCardData(
        base_model=base_model,
        license=source.get("license"),
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=datasets or None,
        model_name=(repo_id or name or folder.name).split("/")[-1],
        eval_results=_eval_results(report, pipeline_tag) or None,
    )
    if base_model and relation:
        card_data.base_model_relation = relation
    size = report.get("size", {})
    before, after = size.get("before", {}), size.get("after", {})
    recipe_file = folder / RECIPE_NAME
    stages = [{"family": r["family"], "method": r["method"], "seconds": r.get("seconds", 0.0),
               "settings": _settings(r.get("params", {}))} for r in report.get("stages", [])]
    methods = " → ".join(f"{s['family']} `{s['method']}`" for s in stages) or "no stage"
    title = (repo_id or name or folder.name).split("/")[-1]
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE.read_text(),
        title=title,
        summary=f"A compressed version of {f'`{base_model}`' if base_model else 'a local model'}: {methods}.",
        base_model=base_model,
        base_revision=source.get("revision"),
        base_commit=source.get("commit"),
        local_name=source.get("local_name", "unnamed"),
        hfcompress_version=report.get("libraries", {}).get("hfcompress", ""),
        stages=stages,
        recipe_yaml=recipe_file.read_text() if recipe_file.is_file() else "# recipe not recorded\n",
        size={
            "params_before": f"{before.get('parameters', 0):,}", "params_after": f"{after.get('parameters', 0):,}",
            "params_ratio": _ratio(before.get("parameters"), after.get("parameters")),
            "nonzero_before": f"{before.get('nonzero_parameters', 0):,}",
            "nonzero_after": f"{after.get('nonzero_parameters', 0):,}",
            "nonzero_ratio": _ratio(before.get("nonzero_parameters"), after.get("nonzero_parameters")),
            "bytes_before": _human_bytes(before.get("weight_bytes")),
            "bytes_after": _human_bytes(after.get("weight_bytes")),
            "bytes_ratio": _ratio(before.get("weight_bytes"), after.get("weight_bytes")),
        },
        evaluation_table=_evaluation_table(report),
        plots=sorted(p.name for p in folder.glob("*.png")),
        load_snippet=snippet,
        loads_with=fmt.get("loads_with"), loads_pip=fmt.get("pip"), format_name=fmt.get("name"),
        repo_id=repo_id,
        limitations=limitations or ["None recorded beyond the figures above."],
        card_sections=_card_sections(report),
    )


def _card_sections(report: dict[str, Any]) -> list[dict[str, str]]:
    """Sections a tool recorded in ``hfcompress.json`` (``card_sections``: title + markdown body, e.g.
    ``hfcompress search``'s searched profile): kept in the lineage record, so every re-render (a push)
    shows them again."""
    out = []
    for s in report.get("card_sections") or []:
        if isinstance(s, dict) and isinstance(s.get("title"), str) and isinstance(s.get("body"), str):
            out.append({"title": s["title"].strip(), "body": s["body"].strip()})
    return out


#: A line every card rendered from the template has (a README.md without it is the user's own).
GENERATED_MARK = "Compressed with [hfcompress]("


def is_generated_card(folder: str | os.PathLike) -> bool:
    """Whether ``folder/README.md`` is a card hfcompress rendered (so a push may re-render it)."""
    path = Path(folder) / CARD_NAME
    try:
        return GENERATED_MARK in path.read_text(errors="replace")
    except OSError:
        return False


def write_card(folder: str | os.PathLike, repo_id: str | None = None, name: str | None = None) -> Path:
    """Render the card into ``folder/README.md`` (replacing an earlier one); returns its path."""
    card = build_card(folder, repo_id=repo_id, name=name)
    path = Path(folder) / CARD_NAME
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(str(card))
    os.replace(tmp, path)
    return path
