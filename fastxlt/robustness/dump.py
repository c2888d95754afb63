"""What the model is scored on, written out: one JSON object per perturbed text (``fastxlt perturb``, and the
samples an evaluation keeps beside its scores).

Why: a perturbation is an instrument, and a drop means nothing until someone has read the texts that
produced it. Each record holds ``original`` and ``perturbed`` with where they come from (task, language,
example index, sentence ``a`` or ``b``), the share of units actually edited (``edit_rate``) and, for
code-switching, the share of the text's words the dictionary covers (``coverage``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from fastxlt.robustness.labels import check_label_preserving
from fastxlt.robustness.registry import Outcome, Perturbation, PerturbationError, parse_perturbations
from fastxlt.tasks.base import get_task
from fastxlt.utils.io import write_text_atomic

SAMPLE_SIZE = 20


def records(perturbation: Perturbation, task: str, examples: Iterable[Any], language: str, seed: int,
            muse_dir: str | Path | None) -> list[dict[str, Any]]:
    """One record per perturbed text of ``examples`` (both sentences of a pair), in example order."""
    examples = list(examples)
    outcomes = [perturbation.perturb_pair(example, language, seed, muse_dir)[1] for example in examples]
    return rows_of(perturbation, task, language, seed, examples, outcomes)


def rows_of(perturbation: Perturbation, task: str, language: str, seed: int, examples: list[Any],
            outcomes: list[list[Outcome]]) -> list[dict[str, Any]]:
    """The records of examples already perturbed (``Perturbation.perturb_pair``'s outcomes)."""
    out = []
    for index, (example, pair) in enumerate(zip(examples, outcomes)):
        originals = [example.text_a] + ([example.text_b] if example.text_b is not None else [])
        for role, original, outcome in zip("ab", originals, pair):
            record = {"task": task, "language": language, "perturbation": perturbation.key, "seed": seed,
                      "example": index, "sentence": role, "label": example.label, "original": original,
                      "perturbed": outcome.text, "edit_rate": round(outcome.edit_rate, 4)}  # fmt: skip
            if outcome.coverage is not None:
                record["coverage"] = round(outcome.coverage, 4)
            out.append(record)
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Texts, the share that changed, the mean edit rate and (code-switching) the mean coverage."""
    n = max(len(rows), 1)
    result = {"texts": len(rows), "changed": sum(r["original"] != r["perturbed"] for r in rows) / n,
              "edit_rate": sum(r["edit_rate"] for r in rows) / n}  # fmt: skip
    if rows and "coverage" in rows[0]:
        result["coverage"] = sum(r["coverage"] for r in rows) / n
    return result


def coverage_warning(perturbation: Perturbation, language: str, coverage: float | None) -> str | None:
    """A line when the strength asked for exceeds what the dictionary can give (the applied rate is capped)."""
    if coverage is None or perturbation.strength <= coverage:
        return None
    return (f"warning: {perturbation.key} in {language} asks for {perturbation.strength:.0%} of the words, but the "
            f"dictionary covers {coverage:.0%} of them: at most that share is replaced")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as JSON lines (UTF-8, not ASCII-escaped, so the file reads as the text it holds)."""
    return write_text_atomic(Path(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def default_muse_dir(data_dir: str | Path) -> Path:
    """Where ``fastxlt perturb`` looks for MUSE when no --muse is given: ``muse/`` beside the task's data folder."""
    return Path(data_dir).resolve().parent / "muse"


def perturb_task(task: str, data_dir: str | Path, language: str, spec: str, out: str | Path, *, split: str = "test",
                 seed: int = 0, max_examples: int | None = None, muse_dir: str | Path | None = None,
                 allow_label_changing: bool = False) -> dict[str, Any]:
    """``fastxlt perturb``: perturb one language of a task and write every text to ``out``; the summary."""
    perturbations = parse_perturbations(spec)
    if len(perturbations) != 1 or perturbations[0].is_attack:
        raise PerturbationError(f"--perturb takes one text perturbation (e.g. char:0.1), got '{spec}'")
    [perturbation] = perturbations
    check_label_preserving(task, [perturbation.name], allow=allow_label_changing)
    source = perturbation.source_language(language)
    examples = get_task(task).load(split, source, data_dir)[:max_examples]
    muse = muse_dir if muse_dir is not None else default_muse_dir(data_dir)
    rows = records(perturbation, task, examples, language, seed, muse)
    write_jsonl(out, rows)
    return summary(rows)
