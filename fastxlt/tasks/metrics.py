"""Classification metrics and the metric registry that tasks name in ``TaskSpec.metric``.

``accuracy`` and ``binary_f1`` return fractions in [0, 1] (like scikit-learn, their test oracle);
``compute`` returns every score in percent, because XTREME and GLUE tables report percentages and
run reports, aggregation and the reference numbers in DESIGN.md all use that scale.

Rows with the label -1 (unlabelled: e.g. the XTREME test files, whose labels were stripped) are
refused rather than scored: counting them as errors would report a silently wrong number.
Other task families add their metrics with :func:`register_metric`; the registry itself is
:mod:`.metric_registry`, below the span-QA and seqeval metrics that register into it and that this
module imports (so importing it makes every built-in metric available).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastxlt.errors import ConfigError
from fastxlt.tasks import qa_metrics  # registers squad, squad_v2, mlqa
from fastxlt.tasks import seqeval_metric as sm  # registers seqeval_f1 (token tagging)
from fastxlt.tasks.metric_registry import (  # noqa: F401  - the registry's names, used through this module
    UNLABELLED,
    ArrayLike,
    Metric,
    _METRICS,
    _as_label_arrays,
    compute,
    get_metric,
    primary_score,
    register_metric,
)

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


register_metric(Metric("accuracy", lambda p, y: {"accuracy": accuracy(p, y)}, primary="accuracy"))
register_metric(
    Metric(
        "accuracy_f1",
        lambda p, y: {"accuracy": accuracy(p, y), "f1": binary_f1(p, y)},
        primary="accuracy",
    )
)



# ------------------------------------------------------------------------------ per-example statistics
#
# A bootstrap over test examples needs each metric as a function of per-example rows: resample the
# rows, recompute the metric. Every metric here is a function of the *column sums* of such rows
# (accuracy: correct / n; span F1: sum of per-question F1 / n; seqeval: chunk counts), so one
# ``from_sums`` serves both the exact full-set score and a vectorised bootstrap over numpy arrays.


@dataclass(frozen=True)
class ExampleStatistics:
    """How a metric decomposes into per-example rows whose column sums determine it.

    ``rows(predictions, gold)`` returns one list of floats per example (``columns`` names them);
    ``from_sums(sums, n)`` maps column sums (last axis; any leading batch axes) and the example count
    to the metric's scores in percent, with the same float operations as ``compute``.
    """

    columns: tuple[str, ...]
    rows: Callable[[Sequence[Any], Sequence[Any]], list[list[float]]]
    from_sums: Callable[[np.ndarray, int], dict[str, Any]]


_STATISTICS: dict[str, ExampleStatistics] = {}


def register_statistics(metric_name: str, statistics: ExampleStatistics) -> ExampleStatistics:
    """Make ``metric_name`` bootstrappable (``example_statistics`` / ``metric_from_statistics``)."""
    _STATISTICS[metric_name] = statistics
    return statistics


def has_example_statistics(metric_name: str) -> bool:
    """True when the metric decomposes into per-example rows (every built-in metric does)."""
    return metric_name in _STATISTICS


def get_statistics(metric_name: str) -> ExampleStatistics:
    get_metric(metric_name)  # an unknown metric fails with the list of known ones
    try:
        return _STATISTICS[metric_name]
    except KeyError:
        raise ConfigError(
            f"metric '{metric_name}' has no per-example statistics, so it cannot be bootstrapped; "
            "register them with fastxlt.tasks.metrics.register_statistics"
        ) from None


def example_statistics(metric_name: str, predictions: Sequence[Any], gold: Sequence[Any]) -> list[list[float]]:
    """Per-example rows of the named metric (see ``ExampleStatistics``); JSON-ready lists of floats."""
    return get_statistics(metric_name).rows(predictions, gold)


def metric_from_statistics(metric_name: str, rows: Sequence[Sequence[float]]) -> dict[str, float]:
    """The scores ``compute`` gives on the full set, recomputed from per-example rows alone.

    Columns are summed with the builtin ``sum`` in example order, as the official span-QA scripts sum
    their per-question scores, so the result equals ``compute`` to the last bit.
    """
    statistics = get_statistics(metric_name)
    if not rows:
        raise ValueError("no examples to score")
    width = len(statistics.columns)
    if any(len(row) != width for row in rows):
        raise ValueError(f"metric '{metric_name}' rows have {width} columns ({', '.join(statistics.columns)})")
    sums = [sum(row[column] for row in rows) for column in range(width)]
    return {key: float(value) for key, value in statistics.from_sums(np.asarray(sums, dtype=np.float64), len(rows)).items()}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (the metrics' zero_division=0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def _accuracy_rows(predictions: ArrayLike, labels: ArrayLike) -> list[list[float]]:
    predictions, labels = _as_label_arrays(predictions, labels)
    return [[float(correct)] for correct in (predictions == labels)]


def _accuracy_from_sums(sums: np.ndarray, n: int) -> dict[str, Any]:
    return {"accuracy": 100.0 * (sums[..., 0] / n)}


def _accuracy_f1_rows(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> list[list[float]]:
    """[correct, predicted positive, gold positive, true positive] per example."""
    predictions, labels = _as_label_arrays(predictions, labels)
    predicted, gold = predictions == positive, labels == positive
    table = np.stack([predictions == labels, predicted, gold, predicted & gold], axis=1).astype(np.float64)
    return table.tolist()


def _accuracy_f1_from_sums(sums: np.ndarray, n: int) -> dict[str, Any]:
    true_positives = sums[..., 3]
    f1 = _ratio(2.0 * true_positives, sums[..., 1] + sums[..., 2])
    return {"accuracy": 100.0 * (sums[..., 0] / n), "f1": 100.0 * np.where(true_positives > 0, f1, 0.0)}


register_statistics("accuracy", ExampleStatistics(("correct",), _accuracy_rows, _accuracy_from_sums))
register_statistics(
    "accuracy_f1",
    ExampleStatistics(
        ("correct", "predicted_positive", "gold_positive", "true_positive"), _accuracy_f1_rows, _accuracy_f1_from_sums
    ),
)



def _qa_rows(scorer: str, metric_name: str) -> Callable[[Sequence[str], Sequence[Any]], list[list[float]]]:
    """[f1, exact_match] per question, exactly as the official scripts score it (``qa_metrics``)."""

    def rows(predictions: Sequence[str], gold: Sequence[Any]) -> list[list[float]]:
        golds = qa_metrics._checked(predictions, gold)
        qa_metrics._require_answers(golds, metric_name)
        score = getattr(qa_metrics, scorer)
        scored = [score(p, g.texts, g.language) if scorer == "_mlqa_scores" else score(p, g.texts)
                  for p, g in zip(predictions, golds)]  # fmt: skip
        return [[f1, exact] for exact, f1 in scored]

    return rows


def _qa_from_sums(sums: np.ndarray, n: int) -> dict[str, Any]:
    """The official scaling, 100.0 * total / count."""
    return {"exact_match": 100.0 * sums[..., 1] / n, "f1": 100.0 * sums[..., 0] / n}


def _squad_v2_rows(predictions: Sequence[str], gold: Sequence[Any]) -> list[list[float]]:
    """[f1, exact_match, has_answer, and f1 / exact_match restricted to HasAns and to NoAns questions]."""
    golds = qa_metrics._checked(predictions, gold)
    rows = []
    for prediction, item in zip(predictions, golds):
        exact, f1 = qa_metrics._squad_v2_scores(prediction, item.texts)
        has = 1.0 if item.texts else 0.0
        rows.append([f1, exact, has, f1 * has, exact * has, f1 * (1.0 - has), exact * (1.0 - has)])
    return rows


def _squad_v2_from_sums(sums: np.ndarray, n: int) -> dict[str, Any]:
    """Overall scores plus the HasAns / NoAns breakdown where that subset is not empty."""
    scores = _qa_from_sums(sums, n)
    has_total = sums[..., 2]
    for prefix, total, f1, exact in (("has_ans", has_total, sums[..., 3], sums[..., 4]),
                                     ("no_ans", n - has_total, sums[..., 5], sums[..., 6])):  # fmt: skip
        if np.ndim(total) == 0 and total == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            scores[f"{prefix}_exact_match"] = 100.0 * exact / total
            scores[f"{prefix}_f1"] = 100.0 * f1 / total
        scores[f"{prefix}_total"] = 1.0 * total
    return scores


def _seqeval_rows(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> list[list[float]]:
    """[correct chunks, predicted chunks, gold chunks] per sentence.

    Chunks are cut over the whole language at once, exactly as seqeval does (a chunk may run over a
    sentence separator), and each chunk is credited to the sentence it starts in; the rows therefore
    sum to ``chunk_counts`` of the full set.
    """
    sm._check(gold, predicted)
    distinct = sorted(set(itertools.chain.from_iterable(gold)).union(itertools.chain.from_iterable(predicted)))
    chunker = sm._Chunker(distinct)
    index = {tag: i + 2 for i, tag in enumerate(distinct)}
    gold_states, predicted_states = sm._flatten(gold, index), sm._flatten(predicted, index)
    gold_keys, predicted_keys = chunker.chunk_keys(gold_states), chunker.chunk_keys(predicted_states)
    correct_keys = np.intersect1d(gold_keys, predicted_keys, assume_unique=True)
    lengths = np.fromiter(map(len, gold), dtype=np.int64, count=len(gold))
    separators = np.cumsum(lengths + 1) - 1  # position of the O that closes each sentence
    length = len(gold_states) + 1

    def per_sentence(keys: np.ndarray) -> np.ndarray:
        starts = (keys // chunker.num_types) // length
        sentence = np.minimum(np.searchsorted(separators, starts, side="left"), len(gold) - 1)
        return np.bincount(sentence, minlength=len(gold))

    table = np.stack([per_sentence(correct_keys), per_sentence(predicted_keys), per_sentence(gold_keys)], axis=1)
    return table.astype(np.float64).tolist()


def _seqeval_from_sums(sums: np.ndarray, n: int) -> dict[str, Any]:
    """seqeval's micro precision / recall / F1 from chunk counts, in percent (``seqeval_scores`` x 100)."""
    correct, predicted, gold = sums[..., 0], sums[..., 1], sums[..., 2]
    precision, recall = _ratio(correct, predicted), _ratio(correct, gold)
    f1 = _ratio(2.0 * precision * recall, precision + recall)
    return {"f1": 100.0 * f1, "precision": 100.0 * precision, "recall": 100.0 * recall}


register_statistics("squad", ExampleStatistics(("f1", "exact_match"), _qa_rows("_squad_v1_scores", "squad"), _qa_from_sums))
register_statistics("mlqa", ExampleStatistics(("f1", "exact_match"), _qa_rows("_mlqa_scores", "mlqa"), _qa_from_sums))
register_statistics(
    "squad_v2",
    ExampleStatistics(
        ("f1", "exact_match", "has_answer", "has_ans_f1", "has_ans_exact_match", "no_ans_f1", "no_ans_exact_match"),
        _squad_v2_rows, _squad_v2_from_sums,
    ),
)
register_statistics(
    "seqeval_f1", ExampleStatistics(("correct_chunks", "predicted_chunks", "gold_chunks"), _seqeval_rows, _seqeval_from_sums)
)
