"""Local ``evaluate`` metric modules shipped with hfcompress (no network needed).

Each metric is a folder ``<name>/<name>.py`` holding an ``evaluate.Metric`` subclass;
:func:`hfcompress.evaluate.tasks.load_metric` loads them by path, and the Hub's
module only when asked (``--hub-metrics``)::

    from hfcompress.metrics import local_metric_path
    import evaluate as hf_evaluate
    acc = hf_evaluate.load(str(local_metric_path("accuracy")))
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def local_metrics() -> list[str]:
    """Names of the metrics shipped in this package."""
    return sorted(p.name for p in _HERE.iterdir() if p.is_dir() and (p / f"{p.name}.py").is_file())


def local_metric_path(name: str) -> Path | None:
    """Folder of the shipped metric ``name``, or None when it is not shipped."""
    folder = _HERE / name
    return folder if (folder / f"{name}.py").is_file() else None
