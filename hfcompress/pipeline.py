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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .io import (
    RECIPE_NAME,
    REPORT_NAME,
    REPORT_SCHEMA_VERSION,
    atomic_folder,
    check_output,
    library_versions,
    weight_bytes,
    write_json,
)
from .loading import ModelBundle, load
from .recipes import Recipe, dump_recipe
from .registry import get_method
from .secrets import scrub
from .stage import PICKLE_SUFFIXES, StageContext, as_bundle, refuse_pickles, run_stage, save_bundle

# Re-exported: the stage contract lives in hfcompress.stage.
__all__ = ["PICKLE_SUFFIXES", "CompressResult", "StageContext", "as_bundle", "compress", "count_parameters",
           "refuse_pickles", "run_stage", "save_bundle"]


@dataclass
class CompressResult:
    bundle: ModelBundle
    report: dict[str, Any]
    output: Path | None = None


def count_parameters(model: Any) -> dict[str, int]:
    """Total and non-zero parameter counts (tied weights once; packed 4-bit weights unpacked)."""
    from .evaluate.efficiency import size_figures

    figures = size_figures(model)
    return {"parameters": figures["parameters"], "nonzero_parameters": figures["nonzero_parameters"]}


def build_report(bundle: ModelBundle, recipe: Recipe | None, ctx: StageContext,
                 params_before: dict[str, int] | None, bytes_before: int | None,
                 output: Path | None) -> dict[str, Any]:
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
    if output is not None:  # which library loads the folder (the card says it in one line)
        from .formats import folder_format

        report["format"] = folder_format(output)
    report["total_seconds"] = round(sum(r["seconds"] for r in ctx.records), 3)
    return report


def compress(
    model: str | os.PathLike | ModelBundle,
    recipe: Recipe,
    output: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    load_kwargs: dict[str, Any] | None = None,
) -> CompressResult:
    """Run ``recipe`` on ``model`` (repo id, folder or bundle); save to ``output`` if given.

    The output folder is checked before anything is loaded and written atomically:
    model + tokenizer, ``recipe.yaml`` and ``hfcompress.json``.
    """
    if not isinstance(recipe, Recipe):
        raise UsageError("compress() needs a Recipe: build one with Recipe(stages=[...]) or load_recipe(path)")
    for stage in recipe.stages:  # fail on unknown methods before loading anything
        get_method(stage.family, stage.method)
    if output is not None and isinstance(model, (str, os.PathLike)) and os.path.isdir(model):
        check_output(output, source=Path(model), overwrite=overwrite)
    elif output is not None:
        check_output(output, overwrite=overwrite)
    bundle = model if isinstance(model, ModelBundle) else load(model, **(load_kwargs or {}))
    if output is not None and bundle.path is not None:
        check_output(output, source=bundle.path, overwrite=overwrite)

    params_before = count_parameters(bundle.model)
    bytes_before = weight_bytes(bundle.path) if bundle.path is not None else None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hfcompress-work-") as work:
        ctx = StageContext(work_dir=Path(work), progress=progress)
        for stage in recipe.stages:
            run_stage(bundle, stage, ctx)
        if output is None:
            report = build_report(bundle, recipe, ctx, params_before, bytes_before, None)
            return CompressResult(bundle=bundle, report=report)
        with atomic_folder(output, overwrite=overwrite) as tmp:
            save_bundle(bundle, tmp)
            for name, data in ctx.files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            refuse_pickles(tmp)  # extra files too: only safetensors
            # Published files carry no local paths or tokens (secrets.scrub).
            (tmp / RECIPE_NAME).write_text(dump_recipe(Recipe.model_validate(scrub(recipe.to_dict()))))
            report = scrub(build_report(bundle, recipe, ctx, params_before, bytes_before, tmp))
            write_json(tmp / REPORT_NAME, report)
            _write_card_if_available(tmp, Path(output).name)
    return CompressResult(bundle=bundle, report=report, output=Path(output).resolve())


def _write_card_if_available(folder: Path, name: str) -> None:
    """Render README.md (the model card) from the report just written."""
    from .cards import write_card

    write_card(folder, name=name)
