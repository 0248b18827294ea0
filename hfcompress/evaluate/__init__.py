"""Evaluation: perplexity, task metrics (via ``evaluate``), efficiency; reports with plots.

::

    from hfcompress.evaluate import evaluate, PerplexityConfig, AccuracyConfig, EfficiencyConfig
    report = evaluate("out/smol-wanda", [PerplexityConfig(max_tokens=16384), EfficiencyConfig()],
                      baseline="HuggingFaceTB/SmolLM2-135M-Instruct", output="eval/report.json")
    report["comparison"]

In a recipe, ``- evaluate: {method: perplexity, baseline: true}`` runs after the
compression stages; results land in ``hfcompress.json`` under ``"evaluation"``. The
Markdown table and plots come from :mod:`hfcompress.evaluate.report`
(``render_markdown(report)``, ``make_plots(report, folder)``).

Note: inside this package ``import evaluate`` is the Hugging Face library (absolute
imports); we import it as ``hf_evaluate`` to keep the names apart.
"""

from __future__ import annotations

from .base import BASELINE, COMPRESSED, EVAL_SCHEMA_VERSION, EvaluateConfig, make_result
from .core import evaluate
from .efficiency import EfficiencyConfig
from .lm_eval_tasks import LMEvalConfig
from .perplexity import PerplexityConfig, perplexity_of_ids, tokenize_corpus
from .report import make_plots, render_markdown, write_report
from .tasks import AccuracyConfig, F1Config, MetricConfig, load_metric

__all__ = [
    "BASELINE", "COMPRESSED", "EVAL_SCHEMA_VERSION", "AccuracyConfig", "EfficiencyConfig", "EvaluateConfig",
    "F1Config", "LMEvalConfig", "MetricConfig", "PerplexityConfig", "evaluate", "load_metric", "make_plots",
    "make_result", "perplexity_of_ids", "render_markdown", "tokenize_corpus", "write_report",
]


from .._verbs import make_package_callable  # noqa: E402
from ..registry import import_submodules  # noqa: E402

import_submodules(__name__)  # every method file registers itself: adding one needs no edit here
make_package_callable(__name__, "evaluate")
