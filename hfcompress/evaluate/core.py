"""The ``evaluate`` verb and the ``evaluate`` recipe stage.

Every method is split in three steps so that bad input fails before any model work:

1. ``prepare(config)`` loads and checks the dataset (columns, labels, emptiness) and the
   metric module — no model needed;
2. ``check(config, prepared, model_config, task)`` checks it against the model's
   *config* (task, label names) — read from ``config.json``, weights not loaded;
3. ``measure(bundle, config, prepared, model_label)`` runs the model.

::

    from hfcompress.evaluate import evaluate, PerplexityConfig, EfficiencyConfig
    report = evaluate("out/smol-wanda", [PerplexityConfig(), EfficiencyConfig()],
                      baseline="HuggingFaceTB/SmolLM2-135M-Instruct", output="eval/report.json")
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HFCompressError, OutputError, UsageError
from ..loading import ModelBundle, detect_task, load
from ..loading.load import _resolve
from ..registry import get_method, register_method
from ..stage import StageContext, as_bundle, note
from .base import BASELINE, COMPRESSED, EvaluateConfig
from .report import build_report, plot_bytes, write_report


@dataclass(frozen=True)
class MethodSpec:
    """An evaluation method's three steps (see the module doc)."""

    prepare: Callable[[Any], Any]
    check: Callable[[Any, Any, Any, str], None]
    measure: Callable[..., list[dict[str, Any]]]
    #: Whether ``measure`` reads the model from a folder (bytes on disk, a fresh-process probe):
    #: in a recipe it then gets the stages' shared saved copy instead of saving its own.
    needs_folder: Callable[[Any], bool] | None = None
    #: Tasks the method can score (None: any); checked before the dataset is loaded.
    tasks: tuple[str, ...] | None = None


#: What to measure instead, by model task, when a metric does not fit the model.
_TASK_HINTS = {"speech-seq2seq": "use --metric wer (word error rate) with an audio dataset",
               "image-classification": "use --metric accuracy or f1 with an image dataset",
               "sequence-classification": "use --metric accuracy or f1 with a labelled text dataset",
               "causal-lm": "use --metric perplexity"}


def check_task(config: EvaluateConfig, task: str | None) -> None:
    """A one-line error when ``config``'s method cannot score a ``task`` model (before any data loads)."""
    tasks = spec_for(config).tasks
    if not task or tasks is None or task in tasks:
        return
    hint = _TASK_HINTS.get(task, "use --metric efficiency (size, latency, memory)")
    raise UsageError(f"--metric {config.method} scores {' / '.join(tasks)} models, and this model is {task!r}: {hint}")


def register_eval_method(name: str, config_cls: type[EvaluateConfig], spec: MethodSpec) -> None:
    """Register an evaluation method (prefer ``@register(Config, spec=MethodSpec(...))`` on
    :func:`apply_stage`, as the metric modules do)."""
    register_method("evaluate", name, config_cls, apply_stage, spec=spec)


def spec_for(config: EvaluateConfig) -> MethodSpec:
    """The prepare / check / measure hooks registered for ``config.method``."""
    return get_method("evaluate", config.method).extras["spec"]


# ------------------------------------------------------------------ recipe stage
def apply_stage(bundle: ModelBundle, config: EvaluateConfig, ctx: StageContext) -> dict[str, Any]:
    """The recipe stage: evaluate the compressed model (and the source with ``baseline``)."""
    spec = spec_for(config)
    check_task(config, bundle.task)
    prepared = spec.prepare(config)
    spec.check(config, prepared, bundle.model.config, bundle.task)
    work = ctx.work_dir
    progress = ctx.progress
    # The pipeline's model differs from bundle.path (the source) on disk: a method that reads a
    # folder gets the saved copy shared with the other stages (and linked into the output).
    folder = None
    if work is not None and spec.needs_folder is not None and spec.needs_folder(config):
        try:
            folder = ctx.saved_copy(bundle)
        except Exception:  # noqa: BLE001 - the method saves (and reports the failure) itself
            folder = None
    note(f"measuring the {COMPRESSED} model")
    results = spec.measure(bundle, config, prepared, model_label=COMPRESSED, folder=folder, work_dir=work,
                           progress=progress)
    if config.baseline:
        note(f"measuring the {BASELINE} model")
        base = _source_bundle(bundle, ctx)
        spec.check(config, prepared, base.model.config, base.task)
        results += spec.measure(base, config, prepared, model_label=BASELINE, folder=base.path,
                                work_dir=work, progress=progress)
    ctx.evaluations.extend(results)
    try:
        ctx.files.update(plot_bytes({"evaluation": ctx.evaluations}))
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the measurements
        warnings.warn(f"evaluation plots failed: {exc}", stacklevel=2)
    summary: dict[str, Any] = {}
    for r in results:
        key = r["metric"] if r["model"] == COMPRESSED else f"{r['metric']} (baseline)"
        if not isinstance(r["value"], (dict, list)):
            summary[key] = r["value"]
    return summary


def _source_bundle(bundle: ModelBundle, ctx: StageContext) -> ModelBundle:
    """The uncompressed source model, re-loaded from where the pipeline read it (cached on ctx)."""
    cached = ctx.source_bundle
    if cached is not None:
        return cached
    if bundle.path is not None and Path(bundle.path).is_dir():
        base = load(bundle.path, task=bundle.task)
    elif bundle.source.repo_id:
        base = load(bundle.source.repo_id, revision=bundle.source.commit or bundle.source.revision, task=bundle.task)
    else:
        raise UsageError("baseline: true needs the source model, but this model was not loaded from a folder "
                         "or repo: pass the baseline explicitly (evaluate(..., baseline=...))")
    ctx.source_bundle = base
    return base


# ------------------------------------------------------------------ verb
#: Metrics that can be named alone (their configs need no dataset); the default of evaluate().
NAMED_METRICS = ("perplexity", "efficiency")


def _as_configs(metrics: Any) -> list[EvaluateConfig]:
    if metrics is None:
        metrics = list(NAMED_METRICS)
    if isinstance(metrics, (EvaluateConfig, str)):
        metrics = [metrics]
    out = []
    for m in metrics:
        if isinstance(m, str):
            if m not in NAMED_METRICS:
                raise UsageError(f"metric {m!r} needs a config with its dataset: pass e.g. "
                                 "AccuracyConfig(dataset=...) instead of a name")
            m = get_method("evaluate", m).config_cls()
        if not isinstance(m, EvaluateConfig):
            raise UsageError(f"evaluate() takes evaluation configs, got {type(m).__name__}")
        out.append(m)
    return out


def _peek(model: Any, load_kwargs: dict[str, Any]) -> tuple[Any, str, str | None]:
    """(model config, task, display name) without loading weights."""
    if isinstance(model, ModelBundle):
        return model.model.config, model.task, _display(model)
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig

        folder, source = _resolve(os.fspath(model), load_kwargs.get("revision"), load_kwargs.get("token"))
        try:
            config = AutoConfig.from_pretrained(folder, trust_remote_code=load_kwargs.get("trust_remote_code", False))
        except Exception:  # noqa: BLE001 - let load() produce its own one-line error
            return None, load_kwargs.get("task") or "", os.fspath(model)
        return config, load_kwargs.get("task") or detect_task(config), os.fspath(model)
    return model.config, detect_task(model.config), type(model).__name__


def _display(bundle: ModelBundle) -> str:
    src = bundle.source
    return src.repo_id or src.local_name or (Path(bundle.path).name if bundle.path else type(bundle.model).__name__)


def _model_info(bundle: ModelBundle, name: str | None) -> dict[str, Any]:
    cfg = bundle.model.config
    return {"name": name or _display(bundle), "source": bundle.source.to_dict(), "task": bundle.task,
            "architecture": (getattr(cfg, "architectures", None) or [type(bundle.model).__name__])[0],
            "dtype": str(getattr(bundle.model, "dtype", "")).replace("torch.", "")}


def evaluate(
    model: Any,
    metrics: Any = None,
    *,
    baseline: Any = None,
    tokenizer: Any = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    load_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (repo id, folder, :class:`ModelBundle` or ``PreTrainedModel``).

    Args:
        metrics: evaluation configs (``PerplexityConfig``, ``AccuracyConfig``, ``F1Config``,
            ``MetricConfig``, ``EfficiencyConfig``, ...) or the names ``"perplexity"`` /
            ``"efficiency"``; default: both.
        baseline: a second model measured the same way (same kinds as ``model``). When
            omitted, configs with ``baseline=True`` re-load the source of ``model``.
        output: ``report.json`` path; ``report.md`` and ``report_eval_*.png`` go beside it.
    Returns the report dict (see :mod:`hfcompress.evaluate.report`).

    All datasets are loaded and checked (and the models' configs read) before any
    weights are loaded.
    """
    load_kwargs = {k: v for k, v in (load_kwargs or {}).items() if v is not None}
    configs = _as_configs(metrics)
    out_path = _check_output(output, overwrite) if output is not None else None
    # 1. datasets and metric modules; a metric that cannot score this kind of model fails first
    #    (when the model's config can be read; a model that cannot is reported after the datasets).
    try:
        peeked: tuple[Any, str, str | None] | None = _peek(model, load_kwargs)
    except HFCompressError:
        peeked = None
    for c in configs:
        check_task(c, peeked[1] if peeked else None)
    prepared = [spec_for(c).prepare(c) for c in configs]
    # 2. model configs (no weights).
    model_cfg, task, name = peeked if peeked is not None else _peek(model, load_kwargs)
    want_baseline = baseline is not None or any(c.baseline for c in configs)
    base_cfg = base_task = base_name = None
    if baseline is not None:
        base_cfg, base_task, base_name = _peek(baseline, load_kwargs)
    for c, p in zip(configs, prepared, strict=True):
        if model_cfg is not None:
            spec_for(c).check(c, p, model_cfg, task)
        if base_cfg is not None:
            spec_for(c).check(c, p, base_cfg, base_task)
    # 3. models.
    loaded_here = isinstance(model, (str, os.PathLike))
    bundle = load(model, **load_kwargs) if loaded_here else as_bundle(model, tokenizer)
    base_bundle = None
    base_loaded_here = False
    if baseline is not None:
        base_loaded_here = isinstance(baseline, (str, os.PathLike))
        base_bundle = load(baseline, **load_kwargs) if base_loaded_here else as_bundle(baseline, tokenizer)
    elif want_baseline:
        if bundle.path is None and not bundle.source.repo_id:
            raise UsageError("baseline=True needs the source model: pass baseline=... (a repo id, folder or model)")
        base_bundle = load(bundle.path or bundle.source.repo_id, task=bundle.task,
                           **{k: v for k, v in load_kwargs.items() if k != "task"})
        base_loaded_here = True
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hfcompress-eval-") as work:
        for c, p in zip(configs, prepared, strict=True):
            spec = spec_for(c)
            if model_cfg is None:  # config could not be peeked: check now
                spec.check(c, p, bundle.model.config, bundle.task)
            results += spec.measure(bundle, c, p, model_label=COMPRESSED,
                                    folder=bundle.path if loaded_here else None, work_dir=Path(work),
                                    progress=progress)
            if base_bundle is not None and (baseline is not None or c.baseline):
                results += spec.measure(base_bundle, c, p, model_label=BASELINE,
                                        folder=base_bundle.path if base_loaded_here else None,
                                        work_dir=Path(work), progress=progress)
    models = {COMPRESSED: _model_info(bundle, name if loaded_here else None)}
    if base_bundle is not None:
        models[BASELINE] = _model_info(base_bundle, base_name if base_loaded_here and base_name else None)
    report = build_report(results, models)
    if out_path is not None:
        write_report(report, out_path)
    return report


def _check_output(output: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(output).expanduser()
    if out.suffix != ".json":
        raise UsageError(f"--output {output} must be a .json file (report.md and plots are written beside it)")
    if out.is_dir():
        raise OutputError(f"--output {output} is a folder: give a file path such as {out / 'report.json'}")
    if out.exists() and not overwrite:
        raise OutputError(f"{output} already exists: pass --overwrite to replace it")
    parent = out.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise OutputError(f"cannot write to {probe}: choose a writable --output")
    return out
