"""Scores across languages and tasks, as XTREME reports them.

- language average: the mean of a task's per-language scores;
- task score: the primary metric, except span QA where it is (F1 + EM) / 2;
- benchmark score: the mean of the task scores.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from fastxlt.tasks.metrics import primary_score

QA_METRICS = ("squad", "squad_v2", "mlqa")


def task_score(metric: str, scores: Mapping[str, float]) -> float:
    """The single number XTREME uses for one task in one language."""
    if metric in QA_METRICS:
        return (scores["f1"] + scores["exact_match"]) / 2.0

    return primary_score(metric, dict(scores))


def language_average(per_language: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of every metric over languages (languages missing a metric are an error, not skipped)."""
    if not per_language:
        raise ValueError("no languages to average")
    keys = set.intersection(*(set(scores) for scores in per_language.values()))
    return {key: float(np.mean([scores[key] for scores in per_language.values()])) for key in sorted(keys)}


def xtreme_score(task_scores: Mapping[str, float]) -> float:
    """The benchmark score: the unweighted mean of the task scores."""
    if not task_scores:
        raise ValueError("no task scores to aggregate")
    return float(np.mean(list(task_scores.values())))
