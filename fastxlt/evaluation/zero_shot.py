"""Zero-shot evaluation of one model over every language of a task, in one pass over one loaded model.

Each (task, language) result is written atomically as ``<out_dir>/<task>/<language>.json`` with the
scores, the predictions and the identity of the model that produced them; a re-run skips languages
already evaluated by the same model, so an interrupted evaluation loses nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fastxlt.evaluation.aggregate import language_average, task_score
from fastxlt.evaluation.predict import predict_examples
from fastxlt.models.transfer import TransferModel
from fastxlt.tasks import metrics
from fastxlt.tasks.base import TaskSpec
from fastxlt.tasks.features import ops_for
from fastxlt.tasks.sanity import check_scorable
from fastxlt.utils.io import read_json, write_json_atomic


def evaluate_task(
    model: TransferModel,
    tokenizer,
    spec: TaskSpec,
    *,
    languages: list[str],
    split: str,
    out_dir: Path,
    model_id: str,
    data_dir: str | None = None,
    max_length: int = 256,
    batch_tokens: int | None = None,
    allow_constant_labels: bool = False,
    perturbations: list | None = None,
    perturbation_seed: int = 0,
    muse_dir: str | None = None,
    max_examples: int | None = None,
) -> dict[str, Any]:
    """Scores per language, their average and the task score; results cached in ``out_dir``.

    A cached language is reused only when its ``cache_key`` (model, backend/precision tag, split,
    max_length, data source and a fingerprint of the data files read) equals this run's; an
    evaluation file that cannot be scored (``fastxlt.tasks.sanity``) is refused before prediction.
    ``max_examples`` evaluates the first N examples of each language (parallel test sets stay parallel).
    ``perturbations`` (``fastxlt.robustness.Perturbation``) are evaluated after the clean pass: results
    under ``["perturbations"][name:strength]``, files ``<out_dir>/<task>/<name>-<strength>-seed<seed>/``.
    """
    if perturbations:
        from fastxlt.robustness.evaluate import check_supported

        check_supported(spec, perturbations, "torch" if hasattr(model, "encoder") else "onnx")
    ops = ops_for(spec)
    per_language: dict[str, dict[str, float]] = {}
    for language in tqdm(languages, desc=f"{spec.name} ({split})", unit="lang", leave=False):
        path = Path(out_dir) / spec.name / f"{language}.json"
        key = cache_key(spec, model_id=model_id, split=split, language=language, data_dir=data_dir, max_length=max_length,
                        max_examples=max_examples)
        cached = _cached(path, key)
        if cached is not None:
            per_language[language] = cached
            continue
        where = f"task '{spec.name}' {split} '{language}' ({data_dir or 'hub'})"
        examples = load_scorable_examples(spec, split, language, data_dir, max_examples, where,
                                          allow_constant_labels=allow_constant_labels)
        features = ops.featurize(spec, examples, tokenizer, max_length)
        predictions, gold = predict_examples(
            model, spec, examples, features, tokenizer, batch_tokens=batch_tokens, progress=f"{spec.name} {language}"
        )
        scores = metrics.compute(spec.metric, predictions, gold)
        write_json_atomic(
            path,
            {"task": spec.name, "language": language, "split": split, "model": model_id, "cache_key": key,
             "examples": len(examples), "scores": scores, "predictions": predictions,
             "example_scores": _example_scores(spec.metric, predictions, gold)},
        )
        per_language[language] = scores
    average = language_average(per_language)
    result = {
        "task": spec.name,
        "metric": spec.metric,
        "split": split,
        "languages": per_language,
        "average": average,
        "score": task_score(spec.metric, average),
    }
    if perturbations:
        from fastxlt.robustness.evaluate import evaluate_perturbations

        result["perturbations"] = evaluate_perturbations(
            model, tokenizer, spec, perturbations, languages=languages, split=split, out_dir=Path(out_dir),
            model_id=model_id, clean_scores=per_language, seed=perturbation_seed, data_dir=data_dir,
            max_length=max_length, batch_tokens=batch_tokens, muse_dir=muse_dir, max_examples=max_examples,
        )
    return result


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
