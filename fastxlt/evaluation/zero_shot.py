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
) -> dict[str, Any]:
    """Scores per language, their average and the task score; results cached in ``out_dir``."""
    ops = ops_for(spec)
    per_language: dict[str, dict[str, float]] = {}
    for language in tqdm(languages, desc=f"{spec.name} ({split})", unit="lang", leave=False):
        path = Path(out_dir) / spec.name / f"{language}.json"
        cached = _cached(path, model_id, split)
        if cached is not None:
            per_language[language] = cached
            continue
        examples = spec.load(split, language, data_dir)
        features = ops.featurize(spec, examples, tokenizer, max_length)
        predictions, gold = predict_examples(
            model, spec, examples, features, tokenizer, batch_tokens=batch_tokens, progress=f"{spec.name} {language}"
        )
        scores = metrics.compute(spec.metric, predictions, gold)
        write_json_atomic(
            path,
            {"task": spec.name, "language": language, "split": split, "model": model_id,
             "examples": len(examples), "scores": scores, "predictions": predictions,
             "example_scores": _example_scores(spec.metric, predictions, gold)},
        )
        per_language[language] = scores
    average = language_average(per_language)
    return {
        "task": spec.name,
        "metric": spec.metric,
        "split": split,
        "languages": per_language,
        "average": average,
        "score": task_score(spec.metric, average),
    }


def _cached(path: Path, model_id: str, split: str) -> dict[str, float] | None:
    if not path.is_file():
        return None
    try:
        saved = read_json(path)
    except ValueError:
        return None  # a damaged file is recomputed, not trusted
    if saved.get("model") != model_id or saved.get("split") != split:
        return None
    return saved["scores"]


def _example_scores(metric: str, predictions: list[Any], gold: list[Any]) -> list[list[float]] | None:
    """Per-example rows of the metric (``metrics.example_statistics``) so reports can bootstrap any delta;
    None for a metric that does not decompose into examples."""
    if not metrics.has_example_statistics(metric):
        return None
    return metrics.example_statistics(metric, predictions, gold)
