"""LAReQA on XQuAD-R: language-agnostic answer-sentence retrieval from a multilingual pool (XTREME-R).

The task (Roy et al., 2020; XTREME-R's ``lareqa``): every question, in each of XQuAD-R's 11 languages,
must retrieve the sentence that holds its answer, among the candidate sentences of *all* languages at
once. XQuAD-R is 11-way parallel, so each question has 11 correct answers, one per language. Score:
mAP@20 (``fastxlt.retrieval.map_at_k``), reported per question language and averaged.

How it follows XTREME-R's code (google-research/xtreme ``third_party/utils_lareqa.py`` and
``evaluate_retrieval.py``):

* candidates are the sentences of every paragraph, cut by the file's ``sentence_breaks``; a question's
  answer sentence is the first sentence whose [start, end) holds ``answer_start``, and every sentence
  of that paragraph with the same text is relevant, together with the answer sentences of the same
  question id (the cross-lingual id, equal in all languages) in the other languages; a question whose
  answer starts in no sentence is skipped, as there;
* one encoder encodes both sides: the question alone, the candidate as its sentence with its paragraph
  as context. ``candidate_format="pair"`` (default) encodes them as a text pair, as XTREME-R's LAReQA
  training does (``encode_plus(sentence, paragraph)``); ``"concat"`` encodes ``sentence + paragraph``
  as one text, as its evaluation script writes them;
* the pool holds the candidates of every XQuAD-R language present in ``data_dir`` (XTREME-R loads
  every file of the folder); ``languages`` picks the question languages that are scored.

Layouts read (``data_dir``): the LAReQA release (``xquad-r/XX.json``, as ``../shared/data/xquad_r``),
the ``xquad-r`` folder itself (``XX.json``) and XTREME-R's download (``lareqa/xquad-r/XX.json``). The
hub copy ``google-research-datasets/xquad_r`` (parquet: id, context, question, answers) dropped the
sentence breaks, so the candidates cannot be rebuilt from it: it is refused with a one-line error.

Embeddings come from ``fastxlt.retrieval.embed`` (``layer``, ``pooling``); ``layer=None`` reads the
last hidden layer, where a dual encoder is trained (XTREME-R encodes with its fine-tuned model's output).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.retrieval.dual_encoder import load_dual_encoder
from fastxlt.retrieval.map_at_k import K, retrieval_average_precision
from fastxlt.retrieval.options import CANDIDATE_FORMATS
from fastxlt.tasks.languages import XTREME_R_LAREQA

TASK = "lareqa"
METRIC = f"map@{K}"
LANGUAGES = XTREME_R_LAREQA  # XQuAD-R's 11 (XQuAD's without ro)
LAYOUT_FOLDERS = ("xquad-r", "lareqa/xquad-r", ".")  # tried in this order under data_dir


@dataclass(frozen=True)
class Question:
    language: str
    qid: str  # the cross-lingual id: the same question has the same id in every language
    text: str


@dataclass(frozen=True)
class Candidate:
    language: str
    paragraph: int  # 1-based paragraph number within its language's file
    position: int  # sentence index within the paragraph
    sentence: str
    context: str


@dataclass
class LareqaPool:
    """Questions, the multilingual candidate pool, and the relevant candidates of every question id."""

    questions: list[Question] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    relevant: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # qid -> candidate indices
    skipped_questions: dict[str, int] = field(default_factory=dict)  # language -> answers outside every sentence

    def relevant_of(self, questions: list[Question]) -> list[np.ndarray]:
        return [np.asarray(sorted(set(self.relevant[q.qid])), dtype=np.int64) for q in questions]


# ----------------------------------------------------------------------------------------------
# Locating and reading


def locate_xquad_r(data_dir: str | Path, languages: list[str] | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    """(files of the XQuAD-R languages present, {requested language: why it is skipped}).

    Every language present goes into the pool; ``languages`` (None: all 11) only decides which ones are
    reported missing. Raises a one-line error when ``data_dir`` is missing or holds no XQuAD-R file.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"LAReQA data directory {root} does not exist; pass the folder holding xquad-r/XX.json")
    folder = next((root / sub for sub in LAYOUT_FOLDERS if any((root / sub / f"{lang}.json").is_file() for lang in LANGUAGES)), None)
    if folder is None:
        _refuse_hub_copy(root)
        raise DataNotFoundError(
            f"no XQuAD-R files in {root}: looked for xquad-r/XX.json, lareqa/xquad-r/XX.json and XX.json "
            f"(XX in {', '.join(LANGUAGES)}); download them from google-research-datasets/lareqa"
        )
    found = {lang: folder / f"{lang}.json" for lang in LANGUAGES if (folder / f"{lang}.json").is_file()}
    skipped = {}
    for lang in dict.fromkeys(languages or LANGUAGES):
        if lang not in LANGUAGES:
            skipped[lang] = f"XQuAD-R has no language '{lang}' (it has {', '.join(LANGUAGES)})"
        elif lang not in found:
            skipped[lang] = f"{folder / (lang + '.json')} is missing"
    return found, skipped


def _refuse_hub_copy(root: Path) -> None:
    """The hub's parquet copy (``XX/validation-*.parquet`` or ``XX/xquad_r-validation.parquet``) lacks sentence breaks."""
    if any(list((root / lang).glob("*.parquet")) for lang in LANGUAGES if (root / lang).is_dir()):
        raise CorruptDataError(
            f"{root} holds the hub copy of XQuAD-R (parquet), which has no sentence breaks, so the answer "
            "candidates cannot be rebuilt; use the LAReQA release's xquad-r/XX.json (google-research-datasets/lareqa)"
        )


def read_pool(files: dict[str, Path]) -> LareqaPool:
    """Read every language's file into one pool (languages in the order given)."""
    pool = LareqaPool()
    for language, path in files.items():
        _read_language(path, language, pool)
    return pool


def _read_language(path: Path, language: str, pool: LareqaPool) -> None:
    document = _load_json(path)
    skipped = 0
    for number, paragraph in enumerate(_paragraphs(document, path), start=1):
        context, breaks = _context_and_breaks(paragraph, path, number)
        sentences = [context[start:end] for start, end in breaks]
        first_candidate = None
        for qa in paragraph.get("qas", ()):
            qid, question, answer_start = _question_fields(qa, path)
            answer = next((sentences[i] for i, (s, e) in enumerate(breaks) if s <= answer_start < e), None)
            if answer is None:  # a sentence-breaking error: XTREME-R skips the question with a warning
                skipped += 1
                continue
            if first_candidate is None:  # XTREME-R adds a paragraph's candidates with its first usable question
                first_candidate = len(pool.candidates)
                pool.candidates += [Candidate(language, number, i, s, context) for i, s in enumerate(sentences)]
            pool.questions.append(Question(language, qid, question))
            pool.relevant[qid] += [first_candidate + i for i, s in enumerate(sentences) if s == answer]
    pool.skipped_questions[language] = skipped


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataNotFoundError(f"XQuAD-R file {path} does not exist; check the data directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptDataError(f"{path} is not valid UTF-8 JSON ({error}); re-download it") from None


def _paragraphs(document: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise CorruptDataError(f"{path} has no top-level 'data' list; expected XQuAD-R's SQuAD-format JSON")
    return [paragraph for article in document["data"] for paragraph in article.get("paragraphs", ())]


def _context_and_breaks(paragraph: dict[str, Any], path: Path, number: int) -> tuple[str, list[tuple[int, int]]]:
    context, breaks = paragraph.get("context"), paragraph.get("sentence_breaks")
    if not isinstance(context, str) or not isinstance(breaks, list):
        raise CorruptDataError(
            f"{path}: paragraph {number} lacks 'context' or 'sentence_breaks'; LAReQA needs XQuAD-R's files "
            "(XQuAD plus sentence breaks), not plain XQuAD"
        )
    try:
        spans = [(int(start), int(end)) for start, end in breaks]
    except (TypeError, ValueError):
        raise CorruptDataError(f"{path}: paragraph {number} has malformed sentence_breaks; expected [start, end] pairs") from None
    if any(not 0 <= start < end <= len(context) for start, end in spans):
        raise CorruptDataError(f"{path}: paragraph {number} has a sentence break outside its context")
    return context, spans


def _question_fields(qa: dict[str, Any], path: Path) -> tuple[str, str, int]:
    try:
        return str(qa["id"]), str(qa["question"]), int(qa["answers"][0]["answer_start"])
    except (KeyError, IndexError, TypeError, ValueError):
        raise CorruptDataError(f"{path}: question {qa.get('id', '?')!r} lacks id, question or answers[0].answer_start") from None


# ----------------------------------------------------------------------------------------------
# Scoring


def candidate_texts(candidates: list[Candidate], candidate_format: str) -> tuple[list[str], list[str] | None]:
    """What the candidate encoder reads: (sentences, paragraphs) for a pair, or (sentence + paragraph, None)."""
    if candidate_format == "pair":
        return [c.sentence for c in candidates], [c.context for c in candidates]
    if candidate_format == "concat":  # evaluate_retrieval.py: (sentence + context).replace("\n", "")
        return [(c.sentence + c.context).replace("\n", "") for c in candidates], None
    raise ConfigError(f"unknown candidate format '{candidate_format}'; choose {' or '.join(CANDIDATE_FORMATS)}")


def select_questions(pool: LareqaPool, languages: list[str], max_questions: int | None) -> dict[str, list[Question]]:
    """The scored questions of each language, in file order (the first ``max_questions`` when given)."""
    if max_questions is not None and max_questions < 1:
        raise ConfigError(f"max_questions must be a positive number, got {max_questions}; leave it out to score all")
    chosen: dict[str, list[Question]] = {lang: [] for lang in languages}
    for question in pool.questions:
        rows = chosen.get(question.language)
        if rows is not None and (max_questions is None or len(rows) < max_questions):
            rows.append(question)
    return chosen


def score_languages(
    question_embeddings: dict[str, np.ndarray], candidate_embeddings: np.ndarray, pool: LareqaPool,
    questions: dict[str, list[Question]], k: int = K,
) -> dict[str, float]:
    """mAP@k in percent of every language's questions against the whole pool."""
    return {
        lang: 100.0 * float(np.mean(retrieval_average_precision(question_embeddings[lang], candidate_embeddings,
                                                                pool.relevant_of(rows), k)))
        for lang, rows in questions.items() if rows
    }  # fmt: skip


def evaluate_lareqa(
    model: Any,
    data_dir: str | Path,
    languages: list[str] | None = None,
    *,
    max_length: int = 256,
    batch_size: int = 64,
    pooling: str = "mean",
    layer: int | None = None,
    max_questions: int | None = None,
    candidate_format: str = "pair",
    device: str | None = None,
) -> dict[str, Any]:
    """LAReQA mAP@20 of an encoder on XQuAD-R, per question language and their mean (percent).

    ``model`` is a hub name, a Hugging Face directory or a fastxlt run, or an already loaded encoder
    (anything with ``encode(texts)`` and ``encode_pairs(first, second)``, as ``TorchSentenceEncoder``).
    Returns ``{"task": "lareqa", "metric": "map@20", "languages": {lang: score}, "score": mean,
    "skipped": {lang: reason}, "details": {...}}``; languages missing from ``data_dir`` are skipped.
    """
    candidate_texts([], candidate_format)  # refuse a bad format before any work
    files, skipped = locate_xquad_r(data_dir, languages)
    scored = [lang for lang in dict.fromkeys(languages or LANGUAGES) if lang not in skipped]
    pool = read_pool(files)
    questions = select_questions(pool, scored, max_questions)
    encoder = load_dual_encoder(model, max_length=max_length, batch_size=batch_size, pooling=pooling, layer=layer,
                                device=device)
    first, second = candidate_texts(pool.candidates, candidate_format)
    candidates = encoder.encode(first) if second is None else encoder.encode_pairs(first, second)
    embedded = {lang: encoder.encode([q.text for q in rows]) for lang, rows in questions.items() if rows}
    scores = score_languages(embedded, candidates, pool, questions)
    for lang in scored:
        if lang not in scores:
            skipped[lang] = "no question with an answer inside a sentence"
    return {
        "task": TASK,
        "metric": METRIC,
        "languages": scores,
        "score": float(statistics.fmean(scores.values())) if scores else None,
        "skipped": skipped,
        "details": {
            "model": str(model) if isinstance(model, (str, Path)) else type(model).__name__,
            "questions": {lang: len(rows) for lang, rows in questions.items() if rows},
            "candidates": len(pool.candidates),
            "pool_languages": list(files),
            "questions_without_answer_sentence": {k: v for k, v in pool.skipped_questions.items() if v},
            "candidate_format": candidate_format,
            "layer": getattr(encoder, "layer", layer),
            "num_layers": getattr(encoder, "num_layers", None),
            "pooling": getattr(encoder, "pooling", pooling),
            "max_length": getattr(encoder, "max_length", max_length),
            "max_questions": max_questions,
        },
    }
