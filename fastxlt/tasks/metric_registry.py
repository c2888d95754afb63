"""The metric registry that tasks name in ``TaskSpec.metric``: ``Metric``, ``register_metric``, ``compute``.

Why a module of its own: the span-QA and seqeval metrics register here, and :mod:`.metrics` (the
classification metrics and per-example statistics) imports them; with the registry inside ``metrics``
they would import each other. ``compute`` returns every score in percent, because XTREME and GLUE
tables report percentages; rows with the label -1 (unlabelled) are refused rather than scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fastxlt.errors import ConfigError, DataNotFoundError

UNLABELLED = -1

ArrayLike = Sequence[int] | np.ndarray


def _as_label_arrays(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and gold labels once, for every metric."""
    predictions = np.asarray(predictions).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.size} predictions but {labels.size} labels; score the same examples")
    if labels.size == 0:
        raise ValueError("no examples to score")
    unlabelled = int(np.count_nonzero(labels == UNLABELLED))
    if unlabelled:
        raise DataNotFoundError(
            f"{unlabelled} of {labels.size} examples have no gold label (-1); score a labelled split "
            "or attach gold labels (e.g. labels_file=...)"
        )
    return predictions, labels


@dataclass(frozen=True)
class Metric:
    """A named metric: a scorer returning fractions by key, and the key that ranks models."""

    name: str
    score: Callable[[ArrayLike, ArrayLike], dict[str, float]]
    primary: str
    # True when ``score`` already returns percent (span QA: the official scripts scale 100 * sum / n,
    # and multiplying a fraction by 100 afterwards can differ from them in the last digit).
    in_percent: bool = False
    # Decimals a report keeps (results.csv, summary.csv): percent scores to a hundredth of a point, finer than
    # one example of the largest test sets (XNLI's 5,010: 0.02) and free of float noise like 57.599999999999994.
    decimals: int = 2


_METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Make a metric available to ``compute`` under ``metric.name`` (what ``TaskSpec.metric`` names)."""
    _METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    try:
        return _METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric '{name}'; known metrics: {', '.join(sorted(_METRICS))}") from None


def compute(metric_name: str, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Score predictions with the named metric; every value is in percent (0-100)."""
    metric = get_metric(metric_name)
    scores = metric.score(predictions, labels)
    if metric.in_percent:
        return dict(scores)
    return {key: 100.0 * value for key, value in scores.items()}


def primary_score(metric_name: str, scores: dict[str, float]) -> float:
    """The single number that ranks models for this metric (early stopping, tables)."""
    key = get_metric(metric_name).primary
    if key not in scores:
        raise KeyError(f"scores for metric '{metric_name}' lack its primary key '{key}' (have {', '.join(scores)})")
    return scores[key]
