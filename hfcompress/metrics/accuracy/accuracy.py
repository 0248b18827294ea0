"""Accuracy: the fraction of predictions equal to their references.

A local ``evaluate`` metric module shipped with hfcompress (written for it, no
network needed): ``evaluate.load(path_to_this_folder)``. Same inputs and output key
as the Hub's ``accuracy`` metric, without the scikit-learn dependency::

    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = "Accuracy = (number of correct predictions) / (number of predictions)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    normalize (bool): return the fraction (True, default) or the count of correct predictions.
    sample_weight (list of float): optional weight of each prediction.
Returns:
    accuracy (float or int): the fraction (or count / weighted count) of correct predictions.
"""
_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
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

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        if not predictions:
            raise ValueError("accuracy of zero predictions is undefined")
        weights = [1.0] * len(predictions) if sample_weight is None else [float(w) for w in sample_weight]
        correct = sum(w for p, r, w in zip(predictions, references, weights, strict=True) if int(p) == int(r))
        if not normalize:
            return {"accuracy": correct if sample_weight is not None else int(correct)}
        return {"accuracy": float(correct / sum(weights))}
