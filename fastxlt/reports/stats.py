"""Seeds and confidence intervals: mean / standard deviation over seeds and a paired bootstrap over test
examples for every delta (an arm vs the no-intermediate arm with the same other axes and seed).

Why a *paired* bootstrap over *examples*: both arms are scored on the same test examples, so the noise
that matters for "did intermediate training help" is which examples happen to be in the test set. Each
replicate resamples the examples of a language with replacement and rescores *both* arms on the same
indices; with several seeds the per-seed deltas are averaged inside each replicate (the same indices serve
every seed: the test set is the same). The language average's replicate is the mean of the languages'
replicates, so its interval accounts for every language's sampling noise at once.

Everything is vectorised: a replicate's resampled column sums are gathered for all replicates at once,
and the metric comes from those sums (``fastxlt.tasks.metrics.ExampleStatistics.from_sums``). 1,000
replicates of 15 languages x 5,000 examples take about a second on 2 cores.

Random draws are defined so that a reference loop can repeat them: one ``numpy.random.default_rng(seed)``,
and for each language in the order given, ``rng.integers(0, n, size=(replicates, n))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fastxlt.tasks.aggregate import task_score
from fastxlt.tasks.metrics import get_statistics

DEFAULT_REPLICATES = 1000
DEFAULT_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Delta:
    """A delta (arm minus baseline, in score points), its percentile interval and the replicates behind it."""

    value: float
    low: float
    high: float
    replicates: np.ndarray

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return bool(self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class PairedSample:
    """One language of one comparison: per seed, the arm's and the baseline's per-example rows (n x k),
    on the same n test examples in the same order."""

    arm: Sequence[np.ndarray]
    baseline: Sequence[np.ndarray]


def seed_summary(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) over seeds; the deviation is NaN with a single seed."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no seeds to summarise")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else float("nan")


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap replicates."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


def resample_indices(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """(replicates x n) example indices drawn with replacement (drawn as documented above)."""
    return rng.integers(0, n, size=(replicates, n))


def resampled_sums(rows: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(replicates x k) column sums of ``rows`` over each replicate's drawn examples.

    A gather per column: ``rows`` is small enough to stay in cache, so this is several times faster than
    building a (replicates x n) matrix of multiplicities and multiplying it with ``rows``.
    """
    return np.stack([rows[:, column][draws].sum(axis=1) for column in range(rows.shape[1])], axis=1)


def score_from_sums(metric: str, sums: np.ndarray, n: int) -> np.ndarray:
    """The task score (XTREME's: primary metric, (F1 + EM) / 2 for span QA) from column sums."""
    return np.asarray(task_score(metric, get_statistics(metric).from_sums(sums, n)), dtype=np.float64)


def _checked_rows(sample: PairedSample, language: str) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    arms = [np.asarray(rows, dtype=np.float64) for rows in sample.arm]
    bases = [np.asarray(rows, dtype=np.float64) for rows in sample.baseline]
    if not arms or len(arms) != len(bases):
        raise ValueError(f"{language}: {len(arms)} arm seeds but {len(bases)} baseline seeds; pair every seed")
    sizes = {rows.shape[0] for rows in arms + bases}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"{language}: arms were scored on different numbers of examples {sorted(sizes)}; "
                         "a paired bootstrap needs the same test examples")  # fmt: skip
    return arms, bases, sizes.pop()


def language_delta_replicates(metric: str, sample: PairedSample, draws: np.ndarray) -> tuple[float, np.ndarray]:
    """(seed-averaged full-set delta, seed-averaged replicate deltas) of one language, given the
    (replicates x n) resampled indices shared by every seed and both arms."""
    arms, bases, n = _checked_rows(sample, "this language")
    values, replicates = [], []
    for arm, base in zip(arms, bases):
        full = score_from_sums(metric, arm.sum(axis=0), n) - score_from_sums(metric, base.sum(axis=0), n)
        values.append(float(full))
        replicates.append(score_from_sums(metric, resampled_sums(arm, draws), n)
                          - score_from_sums(metric, resampled_sums(base, draws), n))  # fmt: skip
    return float(np.mean(values)), np.mean(replicates, axis=0)


def paired_bootstrap(
    metric: str,
    samples: Mapping[str, PairedSample],
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
    rng: np.random.Generator | None = None,
) -> dict[str, Delta]:
    """Deltas with intervals per language, for ``"average"`` (all languages, as XTREME averages) and, when
    English and other languages are present, ``"average (non-English)"``.

    ``rng`` (instead of ``seed``) lets a caller share one stream of draws across several comparisons.
    """
    if not samples:
        raise ValueError("no languages to bootstrap")
    rng = rng if rng is not None else np.random.default_rng(seed)
    deltas: dict[str, Delta] = {}
    for language, sample in samples.items():
        _, _, n = _checked_rows(sample, language)
        value, reps = language_delta_replicates(metric, sample, resample_indices(rng, n, replicates))
        deltas[language] = Delta(value, *percentile_interval(reps, confidence), reps)
    groups = {"average": list(samples)}
    non_english = [language for language in samples if language != "en"]
    if non_english and len(non_english) < len(samples):
        groups["average (non-English)"] = non_english
    for name, languages in groups.items():
        deltas[name] = combine([deltas[language] for language in languages], confidence)
    return deltas


def combine(parts: Sequence[Delta], confidence: float = CONFIDENCE) -> Delta:
    """The mean of several deltas (languages of a task, or tasks of a benchmark), replicate by replicate."""
    if not parts:
        raise ValueError("no deltas to combine")
    replicates = np.mean([part.replicates for part in parts], axis=0)
    value = float(np.mean([part.value for part in parts]))
    return Delta(value, *percentile_interval(replicates, confidence), replicates)
