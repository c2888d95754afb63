"""The paired bootstrap against a brute-force loop (same draws, one replicate at a time, scored by the exact
``metric_from_statistics``) and against hand-computable cases; seeds' mean and standard deviation."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fastxlt.tasks.aggregate import task_score
from fastxlt.reports.stats import PairedSample, paired_bootstrap, percentile_interval, seed_summary
from fastxlt.tasks.metrics import metric_from_statistics


def brute_force(metric: str, samples: dict[str, PairedSample], replicates: int, seed: int) -> dict[str, tuple]:
    """One replicate at a time: draw indices, rescore every seed of both arms exactly, average the deltas."""
    rng = np.random.default_rng(seed)
    per_language: dict[str, np.ndarray] = {}
    for language, sample in samples.items():
        n = len(sample.arm[0])
        draws = rng.integers(0, n, size=(replicates, n))
        deltas = np.empty(replicates)
        for b in range(replicates):
            seed_deltas = []
            for arm, base in zip(sample.arm, sample.baseline):
                arm_rows, base_rows = np.asarray(arm)[draws[b]].tolist(), np.asarray(base)[draws[b]].tolist()
                seed_deltas.append(task_score(metric, metric_from_statistics(metric, arm_rows))
                                   - task_score(metric, metric_from_statistics(metric, base_rows)))  # fmt: skip
            deltas[b] = np.mean(seed_deltas)
        per_language[language] = deltas
    out = {language: percentile_interval(reps) for language, reps in per_language.items()}
    out["average"] = percentile_interval(np.mean(list(per_language.values()), axis=0))
    return out


def _accuracy_sample(rng, n, seeds, p_arm, p_base):
    return PairedSample(
        arm=[(rng.random((n, 1)) < p_arm).astype(float) for _ in range(seeds)],
        baseline=[(rng.random((n, 1)) < p_base).astype(float) for _ in range(seeds)],
    )


def test_vectorised_bootstrap_equals_brute_force_accuracy_two_seeds():
    rng = np.random.default_rng(3)
    samples = {"en": _accuracy_sample(rng, 40, 2, 0.7, 0.6), "sw": _accuracy_sample(rng, 31, 2, 0.5, 0.5)}
    fast = paired_bootstrap("accuracy", samples, replicates=200, seed=11)
    slow = brute_force("accuracy", samples, replicates=200, seed=11)
    for key, (low, high) in slow.items():
        assert (fast[key].low, fast[key].high) == pytest.approx((low, high), abs=1e-9)


def test_vectorised_bootstrap_equals_brute_force_span_qa():
    rng = np.random.default_rng(4)

    def rows(n):
        f1 = rng.random(n) * (rng.random(n) < 0.8)
        return np.stack([f1, (f1 > 0.7).astype(float)], axis=1)

    samples = {"de": PairedSample([rows(30)], [rows(30)]), "zh": PairedSample([rows(25)], [rows(25)])}
    fast = paired_bootstrap("squad", samples, replicates=100, seed=2)
    slow = brute_force("squad", samples, replicates=100, seed=2)
    for key, (low, high) in slow.items():
        assert (fast[key].low, fast[key].high) == pytest.approx((low, high), abs=1e-9)


def test_hand_computable_cases():
    n = 100
    zeros, ones = np.zeros((n, 1)), np.ones((n, 1))
    # identical arms: every replicate's delta is 0 -> [0, 0], not significant
    same = paired_bootstrap("accuracy", {"en": PairedSample([ones[:50].repeat(2, 0)], [ones[:50].repeat(2, 0)])})
    assert (same["en"].low, same["en"].high, same["en"].significant) == (0.0, 0.0, False)
    # arm right everywhere, baseline nowhere: every replicate is +100 exactly
    full = paired_bootstrap("accuracy", {"en": PairedSample([ones], [zeros])}, replicates=50)
    assert (full["en"].value, full["en"].low, full["en"].high) == (100.0, 100.0, 100.0)
    # arm right on half the examples where the baseline is wrong, equal elsewhere: the delta of a replicate is
    # 100 * Binomial(n, 1/2) / n, sd = 100 * sqrt(n/4) / n = 5 -> 95% interval ~ 50 +- 1.96 * 5
    arm = np.r_[ones[:50], zeros[:50]]
    half = paired_bootstrap("accuracy", {"en": PairedSample([arm], [zeros])}, replicates=20000, seed=5)
    assert half["en"].value == 50.0 and half["en"].significant
    assert half["en"].low == pytest.approx(50 - 1.96 * 5, abs=1.2)
    assert half["en"].high == pytest.approx(50 + 1.96 * 5, abs=1.2)


def test_averages_and_non_english_average_are_reported():
    rng = np.random.default_rng(0)
    samples = {lang: _accuracy_sample(rng, 60, 1, 0.8, 0.4) for lang in ("en", "fr", "sw")}
    deltas = paired_bootstrap("accuracy", samples, replicates=300)
    assert set(deltas) == {"en", "fr", "sw", "average", "average (non-English)"}
    assert deltas["average"].value == pytest.approx(np.mean([deltas[x].value for x in ("en", "fr", "sw")]))
    assert deltas["average (non-English)"].value == pytest.approx(np.mean([deltas[x].value for x in ("fr", "sw")]))
    assert all(delta.significant for delta in deltas.values())


def test_unpaired_examples_are_refused():
    with pytest.raises(ValueError, match="different numbers of examples"):
        paired_bootstrap("accuracy", {"en": PairedSample([np.ones((5, 1))], [np.ones((6, 1))])})


def test_seed_summary():
    assert seed_summary([60.0, 62.0]) == (61.0, pytest.approx(np.sqrt(2.0)))
    mean, std = seed_summary([70.0])
    assert mean == 70.0 and np.isnan(std)


def test_fifteen_languages_of_five_thousand_examples_take_seconds():
    rng = np.random.default_rng(1)
    samples = {f"l{i}": _accuracy_sample(rng, 5000, 1, 0.6, 0.55) for i in range(15)}
    start = time.perf_counter()
    paired_bootstrap("accuracy", samples)
    assert time.perf_counter() - start < 10.0
