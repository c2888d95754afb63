"""Span-QA metrics: SQuAD v1.1 EM/F1, SQuAD v2.0 (no-answer) and MLQA's language-aware EM/F1.

Every span-QA task scores (predicted answer text, gold answers) per question; the three metrics
differ only in how an answer is normalised before it is compared:

- ``squad`` (SQuAD v1.1 official script): lower-case, drop ASCII punctuation, drop the English
  articles a/an/the, collapse whitespace; EM and token F1, maximised over the gold answers.
  XQuAD and TyDiQA-GoldP are scored with it, as in XTREME.
- ``squad_v2`` (SQuAD v2.0 official script): the same normalisation, but an unanswerable question
  has the gold answer ``""`` and a prediction scores 1 on it exactly when it is empty too. Gold
  answers that normalise to nothing are dropped. Adds the HasAns / NoAns breakdown.
- ``mlqa`` (MLQA's official ``mlqa_evaluation_v1.py``): punctuation is every Unicode ``P*`` character,
  articles are removed per language, and Chinese is split into single CJK characters (mixed
  segmentation) instead of on whitespace.

Scores follow the official scripts to the last digit: the per-question scores are summed in file
order and scaled as ``100.0 * total / count`` (so the metrics are registered as already in percent).
Gold answers travel as :class:`QAGold` (texts plus the language, which MLQA needs).
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from fastxlt.errors import ConfigError
from fastxlt.tasks.metric_registry import Metric, register_metric


@dataclass(frozen=True)
class QAGold:
    """The gold answers of one question (empty for an unanswerable one) and its language."""

    texts: tuple[str, ...]
    language: str = "en"


# ---------------------------------------------------------------------------------------- SQuAD

_ARTICLES_EN = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def normalize_squad(text: str) -> str:
    """SQuAD's ``normalize_answer``: lower, remove punctuation, remove articles, fix whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCTUATION)
    text = _ARTICLES_EN.sub(" ", text)
    return " ".join(text.split())


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = 1.0 * same / len(prediction_tokens)
    recall = 1.0 * same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _squad_v1_scores(prediction: str, gold: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of one question, maximised over its gold answers (SQuAD v1.1 semantics)."""
    normalized = normalize_squad(prediction)
    tokens = normalized.split()
    exact = max(float(normalized == normalize_squad(answer)) for answer in gold)
    f1 = max(_token_f1(tokens, normalize_squad(answer).split()) for answer in gold)
    return exact, f1


def _squad_v2_scores(prediction: str, gold: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of one question under SQuAD v2.0: empty vs empty scores 1."""
    answers = [answer for answer in gold if normalize_squad(answer)] or [""]
    predicted = normalize_squad(prediction).split() if prediction else []
    exact = max(float(normalize_squad(answer) == normalize_squad(prediction)) for answer in answers)
    f1 = 0.0
    for answer in answers:
        gold_tokens = normalize_squad(answer).split() if answer else []
        if not gold_tokens or not predicted:
            f1 = max(f1, float(gold_tokens == predicted))
        else:
            f1 = max(f1, _token_f1(predicted, gold_tokens))
    return exact, f1


# ---------------------------------------------------------------------------------------- MLQA

MLQA_WHITESPACE_LANGUAGES = ("en", "es", "hi", "vi", "de", "ar")
MLQA_MIXED_SEGMENTATION_LANGUAGES = ("zh",)
MLQA_LANGUAGES = MLQA_WHITESPACE_LANGUAGES + MLQA_MIXED_SEGMENTATION_LANGUAGES

# Per-language articles as in mlqa_evaluation_v1.py (Hindi and Chinese have none).
_MLQA_ARTICLES: dict[str, re.Pattern[str] | None] = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "hi": None,
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "ar": re.compile(r"\sال^|ال"),
    "zh": None,
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")


@lru_cache(maxsize=1)
def mlqa_punctuation() -> frozenset[str]:
    """Every Unicode punctuation character (category P*) plus ASCII punctuation, as MLQA defines it."""
    unicode_punctuation = {chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")}
    return frozenset(unicode_punctuation | _ASCII_PUNCTUATION)


def _mixed_segmentation(text: str, punctuation: frozenset[str]) -> list[str]:
    """Chinese: every CJK character (and punctuation mark) is a token; other runs split on whitespace."""
    tokens: list[str] = []
    run = ""
    for ch in text:
        if _CJK.search(ch) or ch in punctuation:
            if run:
                tokens.extend(run.split())
                run = ""
            tokens.append(ch)
        else:
            run += ch
    if run:
        tokens.extend(run.split())
    return tokens


def normalize_mlqa(text: str, language: str) -> str:
    """MLQA's ``normalize_answer(s, lang)``: lower, remove Unicode punctuation, articles, re-tokenise."""
    if language not in _MLQA_ARTICLES:
        raise ConfigError(
            f"the mlqa metric has no normalisation for language '{language}'; it knows {', '.join(MLQA_LANGUAGES)} "
            "(score other languages with the 'squad' metric)"
        )
    punctuation = mlqa_punctuation()
    text = "".join(ch for ch in text.lower() if ch not in punctuation)
    articles = _MLQA_ARTICLES[language]
    if articles is not None:
        text = articles.sub(" ", text)
    if language in MLQA_MIXED_SEGMENTATION_LANGUAGES:
        tokens = _mixed_segmentation(text, punctuation)
    else:
        tokens = text.split()
    return " ".join(token for token in tokens if token.strip() != "")


def _mlqa_scores(prediction: str, gold: Sequence[str], language: str) -> tuple[float, float]:
    normalized = normalize_mlqa(prediction, language)
    tokens = normalized.split()
    exact = max(float(normalized == normalize_mlqa(answer, language)) for answer in gold)
    f1 = max(_token_f1(tokens, normalize_mlqa(answer, language).split()) for answer in gold)
    return exact, f1


# ---------------------------------------------------------------------------------------- scoring


def _as_gold(item: QAGold | Sequence[str]) -> QAGold:
    if isinstance(item, QAGold):
        return item
    if isinstance(item, str):
        raise ValueError(f"gold answers must be a list of texts or a QAGold, got the string {item!r}")
    return QAGold(tuple(item))


def _checked(predictions: Sequence[str], gold: Sequence[QAGold | Sequence[str]]) -> list[QAGold]:
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions but {len(gold)} gold answers; score the same questions")
    if not gold:
        raise ValueError("no questions to score")
    for prediction in predictions:
        if not isinstance(prediction, str):
            raise ValueError(f"span-QA predictions are answer texts, got {type(prediction).__name__}")
    return [_as_gold(item) for item in gold]


def _averaged(per_question: list[tuple[float, float]]) -> dict[str, float]:
    """Official scaling: 100.0 * sum / count, summed in question order."""
    exact = sum(score[0] for score in per_question)
    f1 = sum(score[1] for score in per_question)
    return {"exact_match": 100.0 * exact / len(per_question), "f1": 100.0 * f1 / len(per_question)}


def _require_answers(golds: list[QAGold], metric: str) -> None:
    empty = sum(1 for item in golds if not item.texts)
    if empty:
        raise ValueError(
            f"{empty} of {len(golds)} questions have no gold answer; the '{metric}' metric needs answers "
            "(use 'squad_v2' for unanswerable questions)"
        )


def squad_scores(predictions: Sequence[str], gold: Sequence[QAGold | Sequence[str]]) -> dict[str, float]:
    """SQuAD v1.1 ``exact_match`` and ``f1`` in percent."""
    golds = _checked(predictions, gold)
    _require_answers(golds, "squad")
    return _averaged([_squad_v1_scores(p, g.texts) for p, g in zip(predictions, golds)])


def squad_v2_scores(predictions: Sequence[str], gold: Sequence[QAGold | Sequence[str]]) -> dict[str, float]:
    """SQuAD v2.0 ``exact_match``/``f1`` plus ``has_ans_*`` / ``no_ans_*`` (where present) in percent."""
    golds = _checked(predictions, gold)
    scores = [_squad_v2_scores(p, g.texts) for p, g in zip(predictions, golds)]
    result = _averaged(scores)
    has_answer = [bool(g.texts) for g in golds]  # the official script: the question lists answers
    for prefix, wanted in (("has_ans", True), ("no_ans", False)):
        subset = [score for score, has in zip(scores, has_answer) if has is wanted]
        if subset:
            part = _averaged(subset)
            result[f"{prefix}_exact_match"] = part["exact_match"]
            result[f"{prefix}_f1"] = part["f1"]
            result[f"{prefix}_total"] = float(len(subset))
    return result


def mlqa_scores(predictions: Sequence[str], gold: Sequence[QAGold | Sequence[str]]) -> dict[str, float]:
    """MLQA ``exact_match`` and ``f1`` in percent, normalised in each question's language."""
    golds = _checked(predictions, gold)
    _require_answers(golds, "mlqa")
    return _averaged([_mlqa_scores(p, g.texts, g.language) for p, g in zip(predictions, golds)])


def _register(name: str, score: Callable[[Sequence[str], Sequence], dict[str, float]]) -> None:
    register_metric(Metric(name, score, primary="f1", in_percent=True))


_register("squad", squad_scores)
_register("squad_v2", squad_v2_scores)
_register("mlqa", mlqa_scores)
