"""Classification metrics: hand-computed cases, scikit-learn as the oracle, refusal of unlabelled rows."""

from __future__ import annotations

import numpy as np
import pytest

from fastxlt.errors import ConfigError, DataNotFoundError
from fastxlt.tasks import metric_registry, metrics


def test_accuracy_hand_computed():
    assert metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert metrics.accuracy(np.array([1]), np.array([0])) == 0.0
    assert metrics.accuracy([[0, 1], [1, 1]], [[0, 1], [1, 0]]) == 0.75  # any shape, flattened


def test_binary_f1_hand_computed():
    # tp=2 (rows 0,1), fp=1 (row 2), fn=1 (row 3): P=2/3, R=2/3, F1=2/3
    predictions = [1, 1, 1, 0, 0]
    labels = [1, 1, 0, 1, 0]
    assert metrics.binary_f1(predictions, labels) == pytest.approx(2 / 3)
    # the negative class as positive: tp=1 (row 4), fp=1 (row 3), fn=1 (row 2): F1 = 1/2
    assert metrics.binary_f1(predictions, labels, positive=0) == pytest.approx(0.5)
    assert metrics.binary_f1([0, 0], [1, 0]) == 0.0  # no true positive
    assert metrics.binary_f1([0, 0], [0, 0]) == 0.0  # no positive at all (scikit-learn zero_division=0)


def test_binary_f1_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for size in (1, 7, 100, 1001):
        for positive_rate in (0.05, 0.5, 0.95):
            labels = (rng.random(size) < positive_rate).astype(int)
            predictions = np.where(rng.random(size) < 0.7, labels, 1 - labels)
            for positive in (0, 1):
                expected = sklearn_metrics.f1_score(labels, predictions, pos_label=positive, zero_division=0)
                assert metrics.binary_f1(predictions, labels, positive) == pytest.approx(expected)
            assert metrics.accuracy(predictions, labels) == pytest.approx(
                sklearn_metrics.accuracy_score(labels, predictions)
            )


def test_compute_reports_percent_and_primary():
    scores = metrics.compute("accuracy", [0, 1, 2, 2], [0, 1, 1, 2])
    assert scores == {"accuracy": 75.0}
    assert metrics.primary_score("accuracy", scores) == 75.0
    qqp = metrics.compute("accuracy_f1", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert qqp["accuracy"] == pytest.approx(60.0) and qqp["f1"] == pytest.approx(200 / 3)
    assert metrics.primary_score("accuracy_f1", qqp) == pytest.approx(60.0)


def test_unlabelled_rows_are_refused():
    with pytest.raises(DataNotFoundError, match="2 of 3 examples have no gold label"):
        metrics.compute("accuracy", [0, 1, 2], [0, -1, -1])
    with pytest.raises(DataNotFoundError):
        metrics.binary_f1([0, 1], [1, -1])


def test_bad_calls():
    with pytest.raises(ValueError, match="2 predictions but 3 labels"):
        metrics.accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="no examples"):
        metrics.accuracy([], [])
    with pytest.raises(ConfigError, match="unknown metric 'bleu'; known metrics: .*accuracy"):
        metrics.compute("bleu", [0], [0])
    with pytest.raises(KeyError, match="lack its primary key 'accuracy'"):
        metrics.primary_score("accuracy_f1", {"f1": 50.0})


def test_register_metric_extends_compute(monkeypatch):
    monkeypatch.setattr(metric_registry, "_METRICS", dict(metric_registry._METRICS))  # keep the global registry clean
    error_rate = metrics.Metric("test_error_rate", lambda p, y: {"error": 1 - metrics.accuracy(p, y)}, primary="error")
    metrics.register_metric(error_rate)
    assert metrics.compute("test_error_rate", [0, 1], [0, 0]) == {"error": 50.0}
