"""Task metrics through the ``evaluate`` library: accuracy / F1 / any metric module for
sequence classification and image classification on a Hub dataset (text or image and label
columns selectable; an image column is used when the dataset has no text column and one of its
columns is a ``datasets.Image``, or when ``image_column`` names it).

The dataset is checked before any model work: columns exist, the split is not empty,
every row is labelled (no ``-1`` / missing labels), and its label names match the
model's ``config.id2label`` (see :func:`bind_labels`). Metrics are the ``evaluate``
modules shipped in :mod:`hfcompress.metrics` (loaded by path, offline) unless
``hub_metrics`` asks for the Hub's module::

    from hfcompress.evaluate import AccuracyConfig, evaluate
    report = evaluate(bundle, [AccuracyConfig(dataset="fixtures/movie-review-snippets",
                                              text_column="sentence")])
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from ..data import load_split
from ..errors import UnsupportedError, UsageError
from ..metrics import local_metric_path, local_metrics
from ..registry import register
from ..sizes import memory_bytes
from .base import DatasetEvalConfig, make_result
from .core import MethodSpec, apply_stage

_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


class ClassificationEvalConfig(DatasetEvalConfig):
    """Shared fields of the classification metrics."""

    text_column: str = "text"
    text_pair_column: str | None = None
    image_column: str | None = Field(None, description="image column (image classifiers; default: the "
                                                       "dataset's Image column when it has no text column)")
    label_column: str = "label"
    max_samples: int | None = Field(None, ge=1, description="evaluate the first N rows only")
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int = Field(512, ge=8, le=131_072, description="tokens per example (truncation)")
    hub_metrics: bool = Field(False, description="load the metric module from the Hub instead of the "
                                                 "copy shipped with hfcompress")


class AccuracyConfig(ClassificationEvalConfig):
    """Accuracy of a sequence classifier on a labelled dataset split."""

    method: Literal["accuracy"] = "accuracy"


class F1Config(ClassificationEvalConfig):
    """F1 of a sequence classifier (binary for 2 labels, else macro unless ``average`` says)."""

    method: Literal["f1"] = "f1"
    average: Literal["binary", "micro", "macro", "weighted"] | None = None
    pos_label: int = 1


class MetricConfig(ClassificationEvalConfig):
    """Any ``evaluate`` metric module on classification predictions (generic hook).

    ``metric`` is a shipped name (see :func:`hfcompress.metrics.local_metrics`), a path
    to a local module folder / script, or (with ``hub_metrics: true``) a Hub metric id.
    ``compute_kwargs`` are passed to ``compute``; every numeric key of its output is a result.
    """

    method: Literal["metric"] = "metric"
    metric: str
    compute_kwargs: dict[str, Any] = Field(default_factory=dict)


# ------------------------------------------------------------------ metric modules
def load_metric(name: str, *, hub: bool = False) -> Any:
    """An ``evaluate`` module: the shipped copy, a local path, or the Hub's (only with ``hub``)."""
    import evaluate as hf_evaluate


    path = None if hub else local_metric_path(name)
    if path is None and os.path.exists(name):
        path = name
    if path is not None:
        return hf_evaluate.load(str(path))
    if not hub:
        raise UsageError(f"metric {name!r} is not shipped with hfcompress (shipped: {', '.join(local_metrics())}): "
                         "pass --hub-metrics (hub_metrics=True) to fetch it from the Hub, or give the path "
                         "of a local evaluate module")
    try:
        return hf_evaluate.load(name)
    except Exception as exc:  # noqa: BLE001 - network / missing module: one line
        raise UsageError(f"cannot load metric {name!r} from the Hub: {' '.join(str(exc).split())[:200]}") from None


# ------------------------------------------------------------------ dataset checks
@dataclass
class ClassificationData:
    texts: list[Any]  # strings, or PIL images when `images`
    pairs: list[str] | None
    labels: list[Any]
    label_names: list[str] | None  # dataset class names (ClassLabel or string labels)
    metric: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    images: bool = False


def _image_column(cfg: ClassificationEvalConfig, ds: Any) -> str | None:
    """The image column to classify, or None for text."""
    from datasets import Image

    if cfg.image_column is not None:
        return cfg.image_column
    if cfg.text_column in ds.column_names:
        return None
    found = [c for c, f in ds.features.items() if isinstance(f, Image)]
    return found[0] if found else None


def prepare_classification(cfg: ClassificationEvalConfig) -> ClassificationData:
    """Load and check the split (columns, emptiness, labels) and the metric; no model needed."""

    where = f"dataset {cfg.dataset} ({cfg.split})"
    ds = load_split(cfg.dataset, cfg.config, cfg.split, cfg.revision)
    cols = ds.column_names
    image_col = _image_column(cfg, ds)
    if image_col is not None and image_col not in cols:
        raise UsageError(f"{where} has no image column {image_col!r}: available columns are "
                         f"{', '.join(cols)} (pass --image-column)")
    for role, col in (("text", None if image_col else cfg.text_column), ("text pair", cfg.text_pair_column)):
        if col is not None and col not in cols:
            flag = "--text-column" if role == "text" else "text_pair_column"
            raise UsageError(f"{where} has no {role} column {col!r}: available columns are "
                             f"{', '.join(cols)} (pass {flag})")
    if cfg.label_column not in cols:
        raise UsageError(f"{where} has no label column {cfg.label_column!r}, and {cfg.method} needs labels: "
                         f"pass --label-column (columns: {', '.join(cols)}) or use a labelled split")
    if len(ds) == 0:
        raise UsageError(f"{where} is empty: choose another --split")
    if cfg.max_samples is not None:
        ds = ds.select(range(min(cfg.max_samples, len(ds))))
    feature = ds.features[cfg.label_column]
    names = list(feature.names) if hasattr(feature, "names") else None
    labels = list(ds[cfg.label_column])
    unlabelled = sum(1 for x in labels if x is None or (isinstance(x, (int, float)) and x < 0))
    if unlabelled:
        what = "is unlabelled" if unlabelled == len(labels) else f"has {unlabelled} unlabelled rows"
        raise UsageError(f"{where} {what} (label -1 or missing in column {cfg.label_column!r}), and "
                         f"{cfg.method} needs labels: use a labelled split such as validation")
    if all(isinstance(x, str) for x in labels):
        names = sorted(set(labels))
    elif not all(isinstance(x, (int, bool)) or (isinstance(x, float) and x.is_integer()) for x in labels):
        raise UsageError(f"{where}: column {cfg.label_column!r} does not hold class labels (integers or "
                         "strings): pass the right --label-column")
    else:
        labels = [int(x) for x in labels]
    if image_col is not None:
        texts = ds[image_col]
        bad = sum(1 for t in texts if not hasattr(t, "convert"))
        if bad:
            raise UsageError(f"{where}: {bad} rows of column {image_col!r} are not images: pass --image-column")
    else:
        texts = ds[cfg.text_column]
        bad = sum(1 for t in texts if not isinstance(t, str))
        if bad:
            raise UsageError(f"{where}: {bad} rows of column {cfg.text_column!r} are not text: pass --text-column")
    pairs = ds[cfg.text_pair_column] if cfg.text_pair_column else None
    data = ClassificationData(texts=list(texts), pairs=pairs, labels=labels, label_names=names,
                              images=image_col is not None)
    if image_col is not None:
        data.notes["image_column"] = image_col
    if isinstance(cfg, AccuracyConfig):
        data.metric = load_metric("accuracy", hub=cfg.hub_metrics)
    elif isinstance(cfg, F1Config):
        data.metric = load_metric("f1", hub=cfg.hub_metrics)
    elif isinstance(cfg, MetricConfig):
        data.metric = load_metric(cfg.metric, hub=cfg.hub_metrics)
    return data


def bind_labels(cfg: ClassificationEvalConfig, data: ClassificationData, model_config: Any,
                task: str) -> list[int]:
    """Dataset labels as the model's class ids; a one-line error when they do not match.

    * Dataset label *names* (``ClassLabel`` or string labels) and a model with real label
      names (not ``LABEL_0``...): the names must match (case-insensitive).
    * Model without label names: dataset class ``i`` is model class ``i``; it must exist.
    * Plain integer labels: class ``i`` is model class ``i`` (names cannot be checked: noted).
    """
    wanted = "image-classification" if data.images else "sequence-classification"
    if task != wanted:
        kind = "an image" if data.images else "a text"
        raise UnsupportedError(f"dataset {cfg.dataset} is {kind} classification set, so {cfg.method} needs a "
                               f"{wanted} model; this model is {task!r}: use a matching dataset or model")
    id2label = {int(k): str(v) for k, v in (getattr(model_config, "id2label", None) or {}).items()}
    num_labels = len(id2label) or int(getattr(model_config, "num_labels", 0) or 0)
    model_names = [id2label.get(i, f"LABEL_{i}") for i in range(num_labels)]
    named_model = any(not _DEFAULT_LABEL.match(n) for n in model_names)
    where = f"dataset {cfg.dataset} ({cfg.split})"
    if data.label_names is not None and named_model:
        lookup = {n.lower(): i for i, n in enumerate(model_names)}
        missing = [n for n in data.label_names if str(n).lower() not in lookup]
        if missing:
            raise UsageError(f"{where} labels {data.label_names} do not match the model's labels {model_names}: "
                             "use a model fine-tuned on this label set (or a dataset with these labels)")
        if all(isinstance(x, str) for x in data.labels):
            return [lookup[x.lower()] for x in data.labels]
        return [lookup[str(data.label_names[x]).lower()] for x in data.labels]
    if all(isinstance(x, str) for x in data.labels):
        raise UsageError(f"{where} has string labels {data.label_names} but the model has no label names "
                         f"({', '.join(model_names)}): give a model whose config.id2label names these labels")
    top = max(data.labels)
    n_classes = len(data.label_names) if data.label_names is not None else top + 1
    if n_classes > num_labels or top >= num_labels:
        raise UsageError(f"{where} has {n_classes} classes (labels up to {top}) but the model has "
                         f"{num_labels} labels {model_names}: use a model with a matching classification head")
    if data.label_names is None:
        data.notes["label_names"] = "dataset labels are plain integers: class i is the model's class i"
    return list(data.labels)


# ------------------------------------------------------------------ prediction
def predict_classes(bundle: Any, cfg: ClassificationEvalConfig, data: ClassificationData,
                    progress: bool = False) -> list[int]:
    """Argmax class ids of the model over the dataset texts (batched, truncated)."""
    import torch

    tok = bundle.tokenizer
    if tok is None:
        what = "image processor" if data.images else "tokenizer"
        raise UsageError(f"classification metrics need the model's {what}, and this model has none")
    model = bundle.model
    if data.images:
        return _predict_images(model, tok, cfg, data, progress)
    device = next(model.parameters()).device
    max_length = effective_max_length(cfg, model.config)
    preds: list[int] = []
    steps = _batch_starts(len(data.texts), cfg, progress)
    with torch.inference_mode():
        for i in steps:
            texts = data.texts[i: i + cfg.batch_size]
            pairs = data.pairs[i: i + cfg.batch_size] if data.pairs is not None else None
            enc = tok(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            logits = model(**enc).logits
            preds.extend(int(x) for x in logits.argmax(-1).tolist())
    return preds


def _batch_starts(n: int, cfg: ClassificationEvalConfig, progress: bool) -> Any:
    """Start index of each batch, under a tqdm bar when ``progress``."""
    steps = range(0, n, cfg.batch_size)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(steps, desc=cfg.method, unit="batch")
    return steps


def _predict_images(model: Any, processor: Any, cfg: ClassificationEvalConfig, data: ClassificationData,
                    progress: bool) -> list[int]:
    """Argmax class ids of an image classifier over the dataset images (batched)."""
    import torch

    param = next(model.parameters())
    dtype = param.dtype if param.dtype.is_floating_point else torch.float32
    preds: list[int] = []
    steps = _batch_starts(len(data.texts), cfg, progress)
    with torch.inference_mode():
        for i in steps:
            images = [im.convert("RGB") for im in data.texts[i: i + cfg.batch_size]]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            logits = model(pixel_values=pixels.to(device=param.device, dtype=dtype)).logits
            preds.extend(int(x) for x in logits.argmax(-1).tolist())
    return preds


def effective_max_length(cfg: ClassificationEvalConfig, model_config: Any) -> int:
    """``cfg.max_length`` capped at the model's position embeddings."""
    limit = getattr(model_config, "max_position_embeddings", None)
    return min(cfg.max_length, int(limit)) if limit else cfg.max_length


def measure_classification(bundle: Any, cfg: ClassificationEvalConfig, data: ClassificationData, *,
                           model_label: str, progress: bool = False) -> list[dict[str, Any]]:
    start = time.perf_counter()
    references = bind_labels(cfg, data, bundle.model.config, bundle.task)
    predictions = predict_classes(bundle, cfg, data, progress)
    kwargs: dict[str, Any] = {}
    if isinstance(cfg, F1Config):
        num_labels = int(getattr(bundle.model.config, "num_labels", 2))
        kwargs["average"] = cfg.average or ("binary" if num_labels == 2 else "macro")
        if kwargs["average"] == "binary":
            kwargs["pos_label"] = cfg.pos_label
    elif isinstance(cfg, MetricConfig):
        kwargs.update(cfg.compute_kwargs)
    try:
        scores = data.metric.compute(predictions=predictions, references=references, **kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"metric {cfg.method}: {' '.join(str(exc).split())[:200]}") from None
    seconds = time.perf_counter() - start
    settings = {"text_column": cfg.text_column, "label_column": cfg.label_column,
                "max_length": effective_max_length(cfg, bundle.model.config),
                "batch_size": cfg.batch_size, "examples": len(predictions),
                "metric_source": "hub" if cfg.hub_metrics else "hfcompress", **kwargs}
    if data.images:
        del settings["text_column"], settings["max_length"]
        settings["image_column"] = data.notes["image_column"]
    if cfg.text_pair_column:
        settings["text_pair_column"] = cfg.text_pair_column
    details = dict(data.notes)
    model_bytes = memory_bytes(bundle.model)
    details["model_bytes"] = model_bytes
    out = []
    for key, value in (scores or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metric = key if isinstance(cfg, MetricConfig) else cfg.method
        if not isinstance(cfg, MetricConfig) and key != cfg.method:
            metric = key
        out.append(make_result(_metric_name(cfg), metric,
                               float(value), model=model_label, higher_is_better=True,
                               dataset=cfg.dataset, config=cfg.config, split=cfg.split,
                               settings=settings, details=details, seconds=seconds))
    if not out:
        raise UsageError(f"metric {cfg.method} returned no numeric value ({scores!r})")
    return out


def _metric_name(cfg: ClassificationEvalConfig) -> str:
    if isinstance(cfg, MetricConfig):
        return os.path.basename(cfg.metric.rstrip("/")).removesuffix(".py")
    return cfg.method


def _check(cfg: ClassificationEvalConfig, data: ClassificationData, model_config: Any, task: str) -> None:
    bind_labels(cfg, data, model_config, task)


def _measure(bundle: Any, cfg: ClassificationEvalConfig, data: ClassificationData, *, model_label: str,
             folder: Any = None, work_dir: Any = None, progress: bool = False) -> list[dict[str, Any]]:
    return measure_classification(bundle, cfg, data, model_label=model_label, progress=progress)


_SPEC = MethodSpec(prepare_classification, _check, _measure,
                   tasks=("sequence-classification", "image-classification"))
for _cls in (AccuracyConfig, F1Config, MetricConfig):
    register(_cls, spec=_SPEC)(apply_stage)
