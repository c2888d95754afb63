"""Checks that an evaluation file can be scored at all, run before any prediction is made.

Public copies of some test sets carry placeholder gold: XTREME-R's preprocessing withholds the XCOPA
test labels, other exports blank every QA answer. Scored as if real, such a file yields a number that
looks like a result and means nothing (the accuracy of always answering one class). Its signature is
that every example has the same gold (one label value, or no answer text at all); on a file of real
size that never happens by chance, so it is refused with an error that says why, unless the caller
passes ``allow_constant_labels`` for the rare real case (config
``phases.evaluate.allow_constant_labels: true``, ``fastxlt-eval --allow-constant-labels``).

The check runs on the whole file, before ``--max-examples`` cuts it: a prefix of nine withheld labels
would otherwise pass as a hand-made sample. Blank QA answers are refused at any size and whatever the
override: the QA metrics need an answer per question, so no flag can make such a file scorable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastxlt.errors import ConfigError, CorruptDataError, FastXLTError
from fastxlt.tasks.base import Family, TaskSpec

# Below this many examples one gold value can be real (a hand-made sample), so it is not refused.
MIN_EXAMPLES_FOR_CONSTANT_CHECK = 10
UNLABELLED = -1
ANSWERLESS_METRIC = "squad_v2"  # the one QA metric that scores unanswerable questions
OVERRIDE = "phases.evaluate.allow_constant_labels: true / fastxlt-eval --allow-constant-labels"


def check_scorable(spec: TaskSpec, examples: Sequence[Any], where: str, *, allow_constant_labels: bool = False) -> None:
    """Refuse an evaluation set with no examples, or whose gold is one value throughout (see the module doc)."""
    if not examples:
        raise CorruptDataError(f"{where} holds no examples; the file is empty or truncated (re-download it)")
    if spec.family == Family.SPAN_QA:
        _check_answers(spec, examples, where, allow_constant_labels)
        return
    if allow_constant_labels or len(examples) < MIN_EXAMPLES_FOR_CONSTANT_CHECK:
        return
    if spec.family not in (Family.PAIR_CLASSIFICATION, Family.MULTIPLE_CHOICE):
        return
    labels = {example.label for example in examples}
    if labels == {UNLABELLED}:
        return  # an unlabelled file: the metric refuses it and says how to attach gold labels
    if len(labels) == 1:
        raise CorruptDataError(
            f"{where}: all {len(examples)} gold labels are {labels.pop()}, the sign of withheld test labels "
            f"(e.g. XTREME-R's XCOPA test); score a labelled copy (or, if the labels are real, set {OVERRIDE})"
        )


def _check_answers(spec: TaskSpec, examples: Sequence[Any], where: str, allow_constant_labels: bool) -> None:
    """Blank gold answers: refused at any size by the metrics that need an answer per question; under
    ``squad_v2`` (where a blank answer means "unanswerable") only when every answer is blank, as withheld."""
    blank = sum(1 for example in examples if not any(text.strip() for text in example.answer_texts))
    withheld = f"{where}: all {len(examples)} gold answers are blank, the sign of withheld answers; score a file with its answers"
    if spec.metric != ANSWERLESS_METRIC and blank == len(examples):
        raise CorruptDataError(f"{withheld} ({OVERRIDE} cannot help: the '{spec.metric}' metric needs an answer per question)")
    if spec.metric != ANSWERLESS_METRIC and blank:
        raise CorruptDataError(
            f"{where}: {blank} of {len(examples)} questions have no gold answer, and the '{spec.metric}' metric "
            "needs one per question; remove those questions or score a complete copy of the file"
        )
    if blank == len(examples) and not allow_constant_labels and len(examples) >= MIN_EXAMPLES_FOR_CONSTANT_CHECK:
        raise CorruptDataError(f"{withheld} (or, if blank answers are real, set {OVERRIDE})")


def check_data_files(
    spec: TaskSpec, split: str, language: str, data_dir: str | Path | None, field: str, dir_field: str | None = None
) -> None:
    """The local files of one split and language exist (the hub and generated tasks are not checked)."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigError(
            f"{dir_field or f'data.{spec.name}'}: directory '{data_dir}' does not exist; point it at the task's files"
        )
    _checked(field, spec.data_files, split, language, data_dir)


def _checked(field: str, check, *args):
    """Run a task-level check; its one-line error gains the config field it came from."""
    try:
        return check(*args)
    except FastXLTError as error:
        raise type(error)(f"{field}: {error}") from None
