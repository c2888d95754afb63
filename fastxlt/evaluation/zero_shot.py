"""Zero-shot evaluation of one model over every language of a task, in one pass over one loaded model.

Each (task, language) result is written atomically as ``<out_dir>/<task>/<language>.json`` with the
scores, the predictions and the identity of the model that produced them; a re-run skips languages
already evaluated by the same model, so an interrupted evaluation loses nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fastxlt.inference.predict import predict_examples
from fastxlt.inference.results import _cached, _example_scores, cache_key, load_scorable_examples
from fastxlt.models.transfer import TransferModel
from fastxlt.robustness.evaluate import check_supported, evaluate_perturbations
from fastxlt.tasks import metrics
from fastxlt.tasks.aggregate import language_average, task_score
from fastxlt.tasks.base import TaskSpec
from fastxlt.tasks.features import ops_for
from fastxlt.utils.io import write_json_atomic


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
        result["perturbations"] = evaluate_perturbations(
            model, tokenizer, spec, perturbations, languages=languages, split=split, out_dir=Path(out_dir),
            model_id=model_id, clean_scores=per_language, seed=perturbation_seed, data_dir=data_dir,
            max_length=max_length, batch_tokens=batch_tokens, muse_dir=muse_dir, max_examples=max_examples,
        )
    return result
