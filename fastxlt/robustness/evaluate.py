"""Evaluate a model under perturbations, language by language, after its clean pass.

For each perturbation and language the result is ``{"clean", "perturbed", "drop"}`` (the task's score,
in percent; drop = clean - perturbed) plus what the perturbation adds: the share of examples whose text
changed, the dictionary coverage for code-switching, the attack success rate for PGD. A language the
perturbation cannot serve (no MUSE dictionary; a perturbation that would change the task's labels, such as
PAWS-X word order, ``fastxlt.robustness.labels``) gets ``"unavailable": reason`` and a printed line. Text
perturbations also record the mean ``edit_rate`` actually applied and, for code-switching, the mean
dictionary ``coverage`` (with a printed warning when the strength exceeds it), and keep a sample of what
the model was scored on: the first ``SAMPLE_SIZE`` examples as JSON lines,
``<name>-<strength>-seed<seed>/<language>.samples.jsonl`` (``fastxlt.robustness.dump``), which the report links.
Per-language results are cached as ``<out_dir>/<task>/<name>-<strength>-seed<seed>/<language>.json``,
reused only when the clean evaluation's ``cache_key`` (model, split, max_length, data files), the
perturbation, its implementation's ``VERSION``, the seed and the MUSE folder are the same. Perturbed
copies are scored: the examples, their labels and the clean results are never altered.
Each file also keeps the per-example metric rows of both passes on the same examples
(``clean_example_scores`` and ``example_scores``, as in the clean evaluation files) so a report can
bootstrap a drop, and a difference of drops, over test examples (``fastxlt/reports/robustness.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from fastxlt.inference.predict import predict_examples
from fastxlt.inference.results import _example_scores, cache_key, load_examples, read_cached
from fastxlt.robustness.attack import AttackConfig, attack_features
from fastxlt.robustness.dump import SAMPLE_SIZE, coverage_warning, rows_of, summary, write_jsonl
from fastxlt.robustness.registry import Perturbation, PerturbationError
from fastxlt.tasks import metrics
from fastxlt.tasks.aggregate import task_score
from fastxlt.tasks.base import Family, TaskSpec
from fastxlt.tasks.features import ops_for
from fastxlt.utils.io import write_json_atomic

# Bump when a text perturbation's output changes, so that cached perturbed results are not reused.
VERSION = 2


def check_supported(spec: TaskSpec, perturbations: list[Perturbation], backend: str = "torch") -> None:
    """Fail before any work: perturbations cover pair classification, attacks need the torch model."""
    if not perturbations:
        return
    if spec.family != Family.PAIR_CLASSIFICATION:
        raise PerturbationError(
            f"perturbations support pair-classification tasks (xnli, pawsx) for now; task '{spec.name}' is {spec.family.value}"
        )
    if backend != "torch" and any(p.is_attack for p in perturbations):
        raise PerturbationError("the pgd attacks need gradients: evaluate them with --backend torch")


def evaluate_perturbations(
    model, tokenizer, spec: TaskSpec, perturbations: list[Perturbation], *, languages: list[str], split: str,
    out_dir: Path, model_id: str, clean_scores: Mapping[str, Mapping[str, float]], seed: int = 0,
    data_dir: str | None = None, max_length: int = 256, batch_tokens: int | None = None,
    muse_dir: str | None = None, max_examples: int | None = None,
) -> dict[str, Any]:
    """``{perturbation key: {"name", "strength", "seed", "languages": {lang: result}, "average_drop"}}``."""
    results: dict[str, Any] = {}
    for perturbation in perturbations:
        per_language: dict[str, Any] = {}
        for language in languages:
            per_language[language] = _one_language(
                model, tokenizer, spec, perturbation, language, split=split, out_dir=Path(out_dir), model_id=model_id,
                clean_scores=clean_scores, seed=seed, data_dir=data_dir, max_length=max_length,
                batch_tokens=batch_tokens, muse_dir=muse_dir, max_examples=max_examples,
            )
        drops = [r["drop"] for r in per_language.values() if r.get("drop") is not None]
        results[perturbation.key] = {
            "name": perturbation.name, "strength": perturbation.strength, "seed": seed,
            "languages": per_language,
            "average_drop": sum(drops) / len(drops) if drops else None,
            "unavailable": {lang: r["unavailable"] for lang, r in per_language.items() if "unavailable" in r},
        }
    return results


def _one_language(model, tokenizer, spec, perturbation: Perturbation, language: str, *, split, out_dir, model_id,
                  clean_scores, seed, data_dir, max_length, batch_tokens, muse_dir, max_examples) -> dict[str, Any]:
    source = perturbation.source_language(language)
    reason = perturbation.unavailable(language, muse_dir, task=spec.name)
    clean = clean_scores.get(source)
    if reason:
        tqdm.write(f"{spec.name} {language}: {perturbation.key} not evaluated: {reason}")
        return {"clean": _score(spec, clean), "perturbed": None, "drop": None, "unavailable": reason}
    path = out_dir / spec.name / perturbation.folder(seed) / f"{language}.json"
    key = cache_key(spec, model_id=model_id, split=split, language=source, data_dir=data_dir, max_length=max_length,
                    max_examples=max_examples)
    identity = {"cache_key": key, "perturbation": perturbation.key, "version": VERSION, "seed": seed,
                "muse_dir": _resolved(muse_dir)}
    cached = _cached(path, identity)
    if cached is not None:
        return cached
    examples = load_examples(spec, split, source, data_dir, max_examples)
    ops = ops_for(spec)
    progress = f"{spec.name} {language} {perturbation.key}"
    if perturbation.is_attack:
        result, rows = _attack(model, tokenizer, spec, ops, examples, perturbation, max_length, batch_tokens)
    else:
        perturbed, applied = _perturb_all(perturbation, spec.name, examples, language, seed, muse_dir,
                                          path.with_suffix(".samples.jsonl"))
        features = ops.featurize(spec, perturbed, tokenizer, max_length)
        predictions, gold = predict_examples(model, spec, perturbed, features, tokenizer, batch_tokens=batch_tokens,
                                             progress=progress)  # fmt: skip
        clean_rows = _clean_rows(out_dir / spec.name / f"{source}.json", key)
        if clean is None or clean_rows is None:  # the clean pass did not cover the source language, or kept no rows
            clean_features = ops.featurize(spec, examples, tokenizer, max_length)
            clean_predictions, clean_gold = predict_examples(model, spec, examples, clean_features, tokenizer,
                                                             batch_tokens=batch_tokens)  # fmt: skip
            clean = clean if clean is not None else metrics.compute(spec.metric, clean_predictions, clean_gold)
            clean_rows = _example_scores(spec.metric, clean_predictions, clean_gold)
        rows = {"clean_example_scores": clean_rows, "example_scores": _example_scores(spec.metric, predictions, gold)}
        changed = sum(p != e for p, e in zip(perturbed, examples)) / max(len(examples), 1)
        result = {"clean": _score(spec, clean), "perturbed": _score(spec, metrics.compute(spec.metric, predictions, gold)),
                  "changed": changed, **applied}  # fmt: skip
    result["drop"] = result["clean"] - result["perturbed"]
    result["source_language"] = source
    result["examples"] = len(examples)
    write_json_atomic(path, {**identity, "task": spec.name, "language": language, "result": result, **rows})
    return result


def _perturb_all(perturbation: Perturbation, task: str, examples: list, language: str, seed: int, muse_dir,
                 samples: Path) -> tuple[list, dict[str, float]]:
    """The perturbed examples, the mean edit rate (and coverage) applied, and a sample written to ``samples``."""
    pairs = [perturbation.perturb_pair(ex, language, seed, muse_dir) for ex in examples]
    perturbed = [example for example, _ in pairs]
    rows = rows_of(perturbation, task, language, seed, examples, [outcomes for _, outcomes in pairs])
    write_jsonl(samples, [row for row in rows if row["example"] < SAMPLE_SIZE])
    applied = {k: v for k, v in summary(rows).items() if k in ("edit_rate", "coverage")}
    warning = coverage_warning(perturbation, language, applied.get("coverage"))
    if warning:
        tqdm.write(f"{task} {warning}")
    return perturbed, applied


def _clean_rows(path: Path, key: Mapping[str, Any]) -> list | None:
    """The clean pass's per-example rows of the same examples (its file, when computed from the same inputs)."""
    saved = read_cached(path)
    if saved is None or saved.get("cache_key") != key:
        return None
    return saved.get("example_scores")


def _attack(model, tokenizer, spec, ops, examples, perturbation: Perturbation, max_length,
            batch_tokens) -> tuple[dict[str, Any], dict[str, Any]]:
    """PGD on the clean examples: clean and attacked accuracy and the attack success rate, and the
    per-example rows of both passes."""
    if not hasattr(model, "encoder"):
        raise PerturbationError("the pgd attacks need the PyTorch model: evaluate them with --backend torch")
    norm = "linf" if perturbation.name == "pgd_linf" else "l2"
    features = ops.featurize(spec, examples, tokenizer, max_length)
    outcome = attack_features(model, model.head_for(spec.name), ops, features, tokenizer,
                              AttackConfig(epsilon=perturbation.strength, norm=norm), batch_tokens=batch_tokens)
    n = max(len(outcome.gold), 1)
    clean = 100.0 * sum(p == g for p, g in zip(outcome.clean_predictions, outcome.gold)) / n
    attacked = 100.0 * sum(p == g for p, g in zip(outcome.adversarial_predictions, outcome.gold)) / n
    rows = {"clean_example_scores": _example_scores(spec.metric, outcome.clean_predictions, outcome.gold),
            "example_scores": _example_scores(spec.metric, outcome.adversarial_predictions, outcome.gold)}
    return {"clean": clean, "perturbed": attacked, "success_rate": outcome.success_rate, "norm": norm,
            "epsilon": perturbation.strength}, rows


def _resolved(muse_dir: str | None) -> str | None:
    return str(Path(muse_dir).resolve()) if muse_dir is not None else None


def _score(spec: TaskSpec, scores: Mapping[str, float] | None) -> float | None:
    return None if scores is None else task_score(spec.metric, scores)


def _cached(path: Path, identity: Mapping[str, Any]) -> dict[str, Any] | None:
    saved = read_cached(path)
    if saved is None or any(saved.get(key) != value for key, value in identity.items()):
        return None
    return saved.get("result")
