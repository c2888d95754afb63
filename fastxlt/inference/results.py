"""The per-language result files that zero-shot evaluation writes and the robustness pass reuses.

Why here, below both (docs/design.md, layer 5): ``fastxlt.evaluation.zero_shot`` caches each (task,
language) result under a key of everything that changes its numbers, and
``fastxlt.robustness.evaluate`` reads the clean results and writes perturbed ones in the same form;
neither should import the other for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastxlt.tasks import metrics
from fastxlt.tasks.base import TaskSpec
from fastxlt.tasks.sanity import check_scorable
from fastxlt.utils.io import read_json


def load_examples(spec: TaskSpec, split: str, language: str, data_dir: str | Path | None, max_examples: int | None) -> list:
    """The evaluation examples of one language: all, or the first ``max_examples``."""
    examples = spec.load(split, language, data_dir)
    return examples if max_examples is None else examples[:max_examples]


def load_scorable_examples(
    spec: TaskSpec, split: str, language: str, data_dir: str | Path | None, max_examples: int | None, where: str,
    *, allow_constant_labels: bool = False,
) -> list:
    """``load_examples`` after ``check_scorable`` has seen the whole file: a ``max_examples`` prefix of
    withheld labels is as unscorable as the file, but too short for the check to recognise on its own."""
    examples = spec.load(split, language, data_dir)
    check_scorable(spec, examples, where, allow_constant_labels=allow_constant_labels)
    return examples if max_examples is None else examples[:max_examples]


def cache_key(
    spec: TaskSpec, *, model_id: str, split: str, language: str, data_dir: str | Path | None, max_length: int,
    max_examples: int | None = None,
) -> dict[str, Any]:
    """Everything that changes a language's numbers: the model (its id carries the backend/precision tag),
    split, max_length, the task's options, the data directory and each data file read (path, size,
    mtime_ns: a re-downloaded or edited file changes it). The batch token budget is left out: it
    regroups the same examples without changing an fp32 prediction."""
    files = spec.data_files(split, language, data_dir)
    return {
        "model": model_id, "task": spec.name, "split": split, "language": language, "max_length": int(max_length),
        "options": {k: v for k, v in sorted(spec.extra.items()) if isinstance(v, (str, int, float, bool))},
        "data_dir": str(Path(data_dir).resolve()) if data_dir is not None else "hub",
        "data_files": None if files is None else [_fingerprint(path) for path in files],
        **({"max_examples": int(max_examples)} if max_examples is not None else {}),
    }  # fmt: skip


def _fingerprint(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def read_cached(path: Path) -> dict[str, Any] | None:
    """A cached per-language result file, or None when it is absent or damaged (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        saved = read_json(path)
    except ValueError:
        return None  # a damaged file is recomputed, not trusted
    return saved if isinstance(saved, dict) else None


def _cached(path: Path, key: dict[str, Any]) -> dict[str, float] | None:
    saved = read_cached(path)
    if saved is None or saved.get("cache_key") != key or "scores" not in saved:
        return None  # computed from other inputs (or by a version that did not record them)
    return saved["scores"]


def _example_scores(metric: str, predictions: list[Any], gold: list[Any]) -> list[list[float]] | None:
    """Per-example rows of the metric (``metrics.example_statistics``) so reports can bootstrap any delta;
    None for a metric that does not decompose into examples."""
    if not metrics.has_example_statistics(metric):
        return None
    return metrics.example_statistics(metric, predictions, gold)
