"""Classification metrics and the metric registry that tasks name in ``TaskSpec.metric``.

``accuracy`` and ``binary_f1`` return fractions in [0, 1] (like scikit-learn, their test oracle);
``compute`` returns every score in percent, because XTREME and GLUE tables report percentages and
run reports, aggregation and the reference numbers in DESIGN.md all use that scale.

Rows with the label -1 (unlabelled: e.g. the XTREME test files, whose labels were stripped) are
refused rather than scored: counting them as errors would report a silently wrong number.
Other task families add their metrics with :func:`register_metric`.
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


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of examples whose predicted label equals the gold label."""
    predictions, labels = _as_label_arrays(predictions, labels)
    return float(np.mean(predictions == labels))


def binary_f1(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the positive class (the GLUE definition for QQP and MRPC): 2PR / (P + R).

    With no true positive the score is 0 (scikit-learn's ``zero_division=0`` behaviour).
    """
    predictions, labels = _as_label_arrays(predictions, labels)
    predicted = predictions == positive
    gold = labels == positive
    true_positives = int(np.count_nonzero(predicted & gold))
    if true_positives == 0:
        return 0.0
    # 2PR/(P+R) with P = tp/|predicted|, R = tp/|gold| simplifies to 2tp / (|predicted| + |gold|).
    return 2.0 * true_positives / (int(np.count_nonzero(predicted)) + int(np.count_nonzero(gold)))


@dataclass(frozen=True)
class Metric:
    """A named metric: a scorer returning fractions by key, and the key that ranks models."""

    name: str
    score: Callable[[ArrayLike, ArrayLike], dict[str, float]]
    primary: str
    # True when ``score`` already returns percent (span QA: the official scripts scale 100 * sum / n,
    # and multiplying a fraction by 100 afterwards can differ from them in the last digit).
    in_percent: bool = False


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


register_metric(Metric("accuracy", lambda p, y: {"accuracy": accuracy(p, y)}, primary="accuracy"))
register_metric(
    Metric(
        "accuracy_f1",
        lambda p, y: {"accuracy": accuracy(p, y), "f1": binary_f1(p, y)},
        primary="accuracy",
    )
)

import fastxlt.tasks.qa_metrics  # noqa: E402,F401  - registers squad, squad_v2, mlqa
import fastxlt.tasks.seqeval_metric  # noqa: E402,F401  - registers seqeval_f1 (token tagging)
