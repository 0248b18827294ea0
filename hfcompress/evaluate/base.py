"""Base of the evaluate family, the shared result schema and dataset fields.

Every evaluation method produces a list of *results* (dicts) with one stable schema,
built by :func:`make_result`::

    {"name": "perplexity", "metric": "perplexity", "value": 28.13, "unit": "",
     "higher_is_better": False, "model": "compressed",   # or "baseline"
     "dataset": "Salesforce/wikitext", "config": "wikitext-2-raw-v1", "split": "test",
     "settings": {...how it was measured...}, "details": {...}, "seconds": 41.2}

They are appended to ``ctx.evaluations`` in a recipe (``hfcompress.json`` →
``"evaluation"``) and listed under ``"results"`` in an evaluation ``report.json``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from ..config import StageConfig
from ..reports import BASELINE, COMPRESSED

__all__ = ["BASELINE", "COMPRESSED", "EVAL_SCHEMA_VERSION", "DatasetEvalConfig", "EvaluateConfig", "make_result"]

#: Version of the result / report schema written by this package.
EVAL_SCHEMA_VERSION = 1


class EvaluateConfig(StageConfig):
    """Base of every evaluation method config.

    ``baseline: true`` also measures the source model (re-loaded from the folder or repo
    the pipeline started from) the same way, so the report can compare the two.
    """

    family: ClassVar[str] = "evaluate"
    baseline: bool = Field(False, description="also evaluate the source (uncompressed) model")


class DatasetEvalConfig(EvaluateConfig):
    """Fields shared by the methods that read a Hub dataset (repo id or local folder)."""

    dataset: str = Field(description="Hub dataset repo id or local dataset folder")
    config: str | None = Field(None, description="dataset config name")
    split: str = Field("validation", description="dataset split")
    revision: str | None = Field(None, description="branch, tag or commit of the dataset repo")


def make_result(
    name: str,
    metric: str,
    value: Any,
    *,
    model: str,
    unit: str = "",
    higher_is_better: bool | None = None,
    dataset: str | None = None,
    config: str | None = None,
    split: str | None = None,
    settings: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One result in the stable schema (every key always present)."""
    return {
        "name": name,
        "metric": metric,
        "value": value,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "model": model,
        "dataset": dataset,
        "config": config,
        "split": split,
        "settings": dict(settings or {}),
        "details": dict(details or {}),
        "seconds": None if seconds is None else round(float(seconds), 3),
    }
