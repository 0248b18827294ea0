"""F1: the harmonic mean of precision and recall (binary, micro, macro or weighted).

A local ``evaluate`` metric module shipped with hfcompress (written for it, no
network needed): ``evaluate.load(path_to_this_folder)``. Same inputs and output key
as the Hub's ``f1`` metric, without the scikit-learn dependency. Undefined
precision / recall (no predicted / no true examples of a class) count as 0, as
scikit-learn does with ``zero_division=0``::

    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'f1': 0.6666666666666666}
"""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    labels (list of int): the classes to average over (default: all seen in predictions or references).
    pos_label (int): the positive class when average="binary" (default 1).
    average (str): "binary" (default), "micro", "macro" or "weighted".
Returns:
    f1 (float): the F1 score.
"""
_CITATION = ""


def _f1(tp: int, fp: int, fn: int) -> float:
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary"):
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        if not predictions:
            raise ValueError("F1 of zero predictions is undefined")
        preds = [int(p) for p in predictions]
        refs = [int(r) for r in references]
        classes = sorted(set(labels) if labels is not None else set(preds) | set(refs))
        if average == "binary":
            if len(set(preds) | set(refs)) > 2:
                raise ValueError("average='binary' needs at most two classes: use average='macro', "
                                 "'micro' or 'weighted'")
            classes = [pos_label]
        stats = {}
        for c in classes:
            tp = sum(1 for p, r in zip(preds, refs, strict=True) if p == c and r == c)
            fp = sum(1 for p, r in zip(preds, refs, strict=True) if p == c and r != c)
            fn = sum(1 for p, r in zip(preds, refs, strict=True) if p != c and r == c)
            stats[c] = (tp, fp, fn)
        if average in ("binary", "macro"):
            score = sum(_f1(*stats[c]) for c in classes) / len(classes)
        elif average == "micro":
            tp, fp, fn = (sum(s[i] for s in stats.values()) for i in range(3))
            score = _f1(tp, fp, fn)
        elif average == "weighted":
            support = {c: sum(1 for r in refs if r == c) for c in classes}
            total = sum(support.values())
            score = 0.0 if total == 0 else sum(_f1(*stats[c]) * support[c] for c in classes) / total
        else:
            raise ValueError(f"unknown average {average!r}: use binary, micro, macro or weighted")
        return {"f1": float(score)}
