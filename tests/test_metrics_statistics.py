"""Per-example statistics: for every registered metric, the rows that ``example_statistics`` writes must
give back exactly (==) what ``metrics.compute`` reports on the full set, on random data; and the
vectorised ``from_sums`` (the bootstrap's path) must agree with the exact path on resampled rows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fastxlt.errors import ConfigError
from fastxlt.tasks import metrics
from fastxlt.tasks.qa_metrics import QAGold
from fastxlt.tasks.seqeval_metric import chunk_counts

WORDS = ["the", "a", "cat", "Cat.", "sat", "on", "mat", "der", "Hund", "猫", "坐", "un", "el", "perro", ",", "!"]


def _labels(rng: random.Random, n: int, classes: int) -> tuple[list[int], list[int]]:
    gold = [rng.randrange(classes) for _ in range(n)]
    return [g if rng.random() < 0.6 else rng.randrange(classes) for g in gold], gold


def _answer(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))


def _qa(rng: random.Random, n: int, *, unanswerable: bool, languages=("en",)):
    gold, predictions = [], []
    for _ in range(n):
        texts = () if unanswerable and rng.random() < 0.3 else tuple(_answer(rng) for _ in range(rng.randint(1, 3)))
        gold.append(QAGold(texts, rng.choice(languages)))
        roll = rng.random()
        predictions.append("" if unanswerable and roll < 0.2 else (texts[0] if texts and roll < 0.5 else _answer(rng)))
    return predictions, gold


def _tags(rng: random.Random, n: int):
    alphabet = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "NOUN", "X", ".A", "S-A", "E-A"]
    gold = [[rng.choice(alphabet) for _ in range(rng.randint(0, 7))] for _ in range(n)]
    predicted = [[tag if rng.random() < 0.7 else rng.choice(alphabet) for tag in sentence] for sentence in gold]
    return predicted, gold


def random_case(metric_name: str, seed: int, n: int):
    """(predictions, gold) for a metric; a registered metric without a generator fails the test."""
    rng = random.Random(seed)
    generators = {
        "accuracy": lambda: _labels(rng, n, 3),
        "accuracy_f1": lambda: _labels(rng, n, 2),
        "squad": lambda: _qa(rng, n, unanswerable=False),
        "squad_v2": lambda: _qa(rng, n, unanswerable=True),
        "mlqa": lambda: _qa(rng, n, unanswerable=False, languages=("en", "de", "es", "zh", "vi")),
        "seqeval_f1": lambda: _tags(rng, n),
        "map@20": lambda: ([rng.random() for _ in range(n)], [None] * n),  # per-query AP -> their mean
    }
    return generators[metric_name]()


import fastxlt.plugins  # noqa: E402,F401  - every built-in metric registered, whatever was imported before

ALL_METRICS = sorted(metrics._METRICS)


@pytest.mark.parametrize("metric_name", ALL_METRICS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_reproduce_compute_exactly(metric_name, seed):
    predictions, gold = random_case(metric_name, seed, n=200 + 37 * seed)
    rows = metrics.example_statistics(metric_name, predictions, gold)
    assert len(rows) == len(gold)
    assert all(len(row) == len(metrics.get_statistics(metric_name).columns) for row in rows)
    assert metrics.metric_from_statistics(metric_name, rows) == metrics.compute(metric_name, predictions, gold)


@pytest.mark.parametrize("metric_name", ALL_METRICS)
def test_vectorised_sums_match_exact_path_on_resamples(metric_name):
    predictions, gold = random_case(metric_name, 5, n=120)
    table = np.asarray(metrics.example_statistics(metric_name, predictions, gold))
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(table), size=(20, len(table)))
    batched = metrics.get_statistics(metric_name).from_sums(table[draws].sum(axis=1), len(table))
    for b, draw in enumerate(draws):
        exact = metrics.metric_from_statistics(metric_name, table[draw].tolist())
        for key in ("accuracy", "f1", "exact_match"):
            if key in exact:
                assert batched[key][b] == pytest.approx(exact[key], abs=1e-9)


def test_accuracy_rows_by_hand():
    assert metrics.example_statistics("accuracy", [0, 1, 2, 2], [0, 2, 2, 1]) == [[1.0], [0.0], [1.0], [0.0]]
    rows = metrics.example_statistics("accuracy_f1", [1, 1, 0, 0], [1, 0, 1, 0])
    assert rows == [[1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    # accuracy 2/4; F1 of class 1: 2*1 / (2 predicted + 2 gold) = 0.5
    assert metrics.metric_from_statistics("accuracy_f1", rows) == {"accuracy": 50.0, "f1": 50.0}


def test_squad_rows_are_per_question_f1_and_em():
    rows = metrics.example_statistics("squad", ["the cat", "dog"], [QAGold(("cat",)), QAGold(("a cat sat",))])
    # "the cat" -> "cat" == "cat": F1 1, EM 1; "dog" vs "cat sat": no overlap -> 0, 0
    assert rows == [[1.0, 1.0], [0.0, 0.0]]


def test_seqeval_rows_credit_chunks_to_their_first_sentence():
    # '.A' continues a chunk over the sentence separator (seqeval's quirk): that chunk starts in sentence 0
    gold = [["B-A", ".A"], [".A", "O"], ["B-PER", "I-PER"]]
    predicted = [["B-A", ".A"], ["O", "O"], ["B-PER", "O"]]
    rows = metrics.example_statistics("seqeval_f1", predicted, gold)
    assert np.asarray(rows).sum(axis=0).tolist() == list(chunk_counts(gold, predicted))
    assert rows[2] == [0.0, 1.0, 1.0]  # B-PER alone is not B-PER I-PER
    assert rows[1] == [0.0, 0.0, 0.0]


def test_unknown_and_unregistered_metrics_fail_with_a_clear_error():
    with pytest.raises(ConfigError, match="unknown metric"):
        metrics.example_statistics("nope", [1], [1])
    metrics.register_metric(metrics.Metric("only-score", lambda p, y: {"x": 1.0}, primary="x"))
    try:
        assert not metrics.has_example_statistics("only-score")
        with pytest.raises(ConfigError, match="no per-example statistics"):
            metrics.example_statistics("only-score", [1], [1])
    finally:
        metrics._METRICS.pop("only-score")
