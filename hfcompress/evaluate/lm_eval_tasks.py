"""lm-evaluation-harness tasks, when ``lm_eval`` is installed (optional; not a dependency).

``LMEvalConfig(tasks=["hellaswag"], limit=200)`` runs the tasks through
``lm_eval.simple_evaluate`` on the in-memory model (``HFLM(pretrained=model)``); every
numeric metric of every task becomes a result (``name`` = task, ``metric`` = e.g.
``acc,none``). Without ``lm_eval`` the stage fails at once with an install hint.
Note: task data is fetched by lm-eval itself (the Hub / ``HF_ENDPOINT``).
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any, Literal

from pydantic import Field

from ..errors import UnsupportedError
from ..registry import register
from .base import EvaluateConfig, make_result
from .core import MethodSpec, apply_stage


class LMEvalConfig(EvaluateConfig):
    """lm-evaluation-harness tasks on a causal LM (needs ``pip install lm-eval``)."""

    method: Literal["lm-eval"] = "lm-eval"
    tasks: list[str] = Field(min_length=1)
    num_fewshot: int | None = Field(None, ge=0)
    limit: int | None = Field(None, ge=1, description="examples per task")
    batch_size: int = Field(8, ge=1)


def _prepare(cfg: LMEvalConfig) -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise UnsupportedError("lm-eval tasks need lm-evaluation-harness: pip install lm-eval "
                               "(or use --metric perplexity / accuracy)")


def _check(cfg: LMEvalConfig, prepared: Any, model_config: Any, task: str) -> None:
    if task != "causal-lm":
        raise UnsupportedError(f"lm-eval tasks need a causal LM; this model is {task!r}")


def _measure(bundle: Any, cfg: LMEvalConfig, prepared: Any, *, model_label: str, folder: Any = None,
             work_dir: Any = None, progress: bool = False) -> list[dict[str, Any]]:  # pragma: no cover
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    start = time.perf_counter()
    lm = HFLM(pretrained=bundle.model, tokenizer=bundle.tokenizer, batch_size=cfg.batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(cfg.tasks), num_fewshot=cfg.num_fewshot, limit=cfg.limit)
    seconds = time.perf_counter() - start
    results = []
    settings = {"num_fewshot": cfg.num_fewshot, "limit": cfg.limit, "batch_size": cfg.batch_size,
                "lm_eval": getattr(lm_eval, "__version__", None)}
    for task, metrics in (out.get("results") or {}).items():
        for key, value in metrics.items():
            if "stderr" in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            results.append(make_result(task, key, float(value), model=model_label, higher_is_better=None,
                                       dataset=task, settings=settings,
                                       details={"stderr": metrics.get(key.replace(",", "_stderr,", 1))},
                                       seconds=seconds))
    return results


register(LMEvalConfig, spec=MethodSpec(_prepare, _check, _measure))(apply_stage)
