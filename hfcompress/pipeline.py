"""Run a recipe: load → stages in order → save atomically with recipe.yaml + hfcompress.json.

::

    import hfcompress
    from hfcompress.recipes import load_recipe

    result = hfcompress.compress("HuggingFaceTB/SmolLM2-135M-Instruct",
                                 load_recipe("recipes/wanda-50.yaml"), output="out/smol-wanda")
    result.report["stages"][0]["summary"]

Each stage calls the ``apply(bundle, config, ctx)`` function registered for its
method; it changes ``bundle.model`` in place (or replaces it) and returns a summary
dict recorded in the report.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cards import write_card
from .errors import UsageError
from .formats import folder_format
from .io import (
    RECIPE_NAME,
    REPORT_NAME,
    REPORT_SCHEMA_VERSION,
    atomic_folder,
    check_output,
    library_versions,
    read_report,
    weight_bytes,
    write_json,
)
from .loading import ModelBundle, load
from .recipes import Recipe, dump_recipe
from .registry import Method, get_method
from .secrets import scrub
from .sizes import count_parameters
from .stage import (
    PICKLE_SUFFIXES,
    StageContext,
    as_bundle,
    check_offload,
    refuse_pickles,
    run_stage,
    save_bundle,
)

# Re-exported: the stage contract lives in hfcompress.stage, size accounting in hfcompress.sizes.
__all__ = ["PICKLE_SUFFIXES", "CompressResult", "StageContext", "as_bundle", "compress", "count_parameters",
           "refuse_pickles", "run_stage", "save_bundle"]


@dataclass
class CompressResult:
    bundle: ModelBundle
    report: dict[str, Any]
    output: Path | None = None


def parent_report(bundle: ModelBundle) -> dict[str, Any] | None:
    """The ``hfcompress.json`` of the folder ``bundle`` was read from (an earlier hfcompress output), if any."""
    if bundle.path is None:
        return None
    try:
        report = read_report(bundle.path)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("stages"), list) else None


def _chained_recipe(parent: dict[str, Any], recipe: Recipe | None) -> dict[str, Any] | None:
    """The recipe that re-runs the whole lineage from the base model: the parent's stages, then ours."""
    ours = recipe.to_dict() if recipe is not None else None
    before = (parent.get("recipe") or {}).get("stages")
    if ours is None or not before:
        return ours
    try:
        return Recipe.model_validate({**ours, "stages": list(before) + list(ours["stages"])}).to_dict()
    except (ValueError, TypeError):  # an older / scrubbed parent recipe: keep ours alone
        return ours


def build_report(bundle: ModelBundle, recipe: Recipe | None, ctx: StageContext,
                 params_before: dict[str, int] | None, bytes_before: int | None,
                 output: Path | None, parent: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``hfcompress.json`` of a run. With ``parent`` (the input was an hfcompress output) the
    lineage continues: base-model source and license, earlier stages first, sizes "before" of the
    base model, the recipe of the whole chain, and the input itself under ``parent``."""
    after = count_parameters(bundle.model)
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": bundle.source.to_dict(),
        "task": bundle.task,
        "pipeline_tag": bundle.pipeline_tag,
        "architecture": (getattr(bundle.model.config, "architectures", None) or [type(bundle.model).__name__])[0],
        "recipe": recipe.to_dict() if recipe is not None else None,
        "stages": ctx.records,
        "size": {
            "before": {**(params_before or {}), "weight_bytes": bytes_before},
            "after": {**after, "weight_bytes": weight_bytes(output) if output else None},
        },
        "evaluation": ctx.evaluations,
        "libraries": library_versions(),
    }
    if parent is not None:
        source = dict(parent.get("source") or {})
        if not source.get("license") and bundle.source.license:
            source["license"] = bundle.source.license
        report["source"] = source
        report["parent"] = bundle.source.to_dict()
        report["stages"] = list(parent["stages"]) + ctx.records
        report["recipe"] = _chained_recipe(parent, recipe)
        report["size"]["before"] = (parent.get("size") or {}).get("before") or report["size"]["before"]
        report["lineage"] = list(parent.get("lineage") or []) + [{
            "created": parent.get("created"), "stages": len(parent["stages"]),
            "evaluation": parent.get("evaluation") or []}]
    if output is not None:  # which library loads the folder (the card says it in one line)

        report["format"] = folder_format(output)
    report["total_seconds"] = round(sum(r.get("seconds", 0.0) for r in report["stages"]), 3)
    return report


def _source_folder(model: str | os.PathLike | ModelBundle) -> Path | None:
    """The input's folder when it is known without loading (a local folder or a bundle)."""
    if isinstance(model, ModelBundle):
        return model.path
    return Path(model) if os.path.isdir(model) else None


def _write_model(bundle: ModelBundle, ctx: StageContext, folder: Path) -> None:
    """The model files: linked from the stages' saved copy when one is current, else saved now."""
    if ctx.saved is None or not ctx.saved.is_dir():
        save_bundle(bundle, folder)
        return
    for src in sorted(ctx.saved.rglob("*")):
        if src.is_file():
            dst = folder / src.relative_to(ctx.saved)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # another file system: copy
                shutil.copy2(src, dst)


def compress(
    model: str | os.PathLike | ModelBundle,
    recipe: Recipe,
    output: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    load_kwargs: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> CompressResult:
    """Run ``recipe`` on ``model`` (repo id, folder or bundle); save to ``output`` if given.

    The output folder is checked before anything is loaded and written atomically:
    model + tokenizer, ``recipe.yaml``, ``hfcompress.json`` and the model card
    (``README.md``, whose loading snippet names ``repo_id`` when the folder will be pushed there).
    """
    if not isinstance(recipe, Recipe):
        raise UsageError("compress() needs a Recipe: build one with Recipe(stages=[...]) or load_recipe(path)")
    # Each stage's method resolved once, before anything is loaded (unknown methods fail here).
    resolved: list[tuple[Any, Method]] = [(stage, get_method(stage.family, stage.method)) for stage in recipe.stages]
    source = _source_folder(model)
    out = check_output(output, source=source, overwrite=overwrite) if output is not None else None
    bundle = model if isinstance(model, ModelBundle) else load(model, **(load_kwargs or {}))
    if out is not None and source is None and bundle.path is not None:
        # A Hub repo's folder is known only once loaded: only the containment part can fail here.
        check_output(output, source=bundle.path, overwrite=True)

    for stage, method in resolved:  # an offloaded model (max_memory): every stage must run on it
        check_offload(bundle, stage if isinstance(stage, method.config_cls)
                      else method.config_cls.model_validate(stage.model_dump()))
    params_before = count_parameters(bundle.model)
    bytes_before = weight_bytes(bundle.path) if bundle.path is not None else None
    parent = parent_report(bundle)  # an earlier hfcompress output: its lineage continues here
    with tempfile.TemporaryDirectory(prefix="hfcompress-work-") as work:
        ctx = StageContext(work_dir=Path(work), progress=progress, stage_total=len(resolved))
        for stage, method in resolved:
            run_stage(bundle, stage, ctx, method=method)
        if output is None:
            report = build_report(bundle, recipe, ctx, params_before, bytes_before, None, parent)
            return CompressResult(bundle=bundle, report=report)
        with atomic_folder(output, overwrite=overwrite) as tmp:
            _write_model(bundle, ctx, tmp)
            for name, data in ctx.files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            refuse_pickles(tmp)  # extra files too: only safetensors
            # Published files carry no local paths or tokens (secrets.scrub).
            report = scrub(build_report(bundle, recipe, ctx, params_before, bytes_before, tmp, parent))
            # The recipe of the whole lineage (earlier steps' stages first): re-runs from the base model.
            (tmp / RECIPE_NAME).write_text(dump_recipe(Recipe.model_validate(report["recipe"])))
            write_json(tmp / REPORT_NAME, report)
            write_card(tmp, repo_id=repo_id, name=Path(output).name)
    return CompressResult(bundle=bundle, report=report, output=Path(output).resolve())
