"""Extractive (span) question answering: SQuAD v1.1/v2.0, XQuAD, MLQA, TyDiQA-GoldP.

Registered tasks (``Family.SPAN_QA``):

=========  =====================================  ====================  ========  ==========
task       hub (``datasets``)                     languages             metric    head
=========  =====================================  ====================  ========  ==========
squad      rajpurkar/squad                        en                    squad     squad
squad_v2   rajpurkar/squad_v2                     en                    squad_v2  squad_v2
xquad      google/xquad, ``xquad.{lang}``         12 (XTREME's 11 + ro) squad     squad
mlqa       facebook/mlqa, ``mlqa.{lang}.{lang}``  7                     mlqa      squad
tydiqa     google-research-datasets/tydiqa,       9                     squad     tydiqa
           ``secondary_task`` (TyDiQA-GoldP)
=========  =====================================  ====================  ========  ==========

As in XTREME, XQuAD and MLQA are evaluated zero-shot with a model fine-tuned on SQuAD v1.1: their
``train`` and (for XQuAD) ``validation`` splits *are* SQuAD v1.1 train / dev (English), and they share
the head ``squad``, so a model trained on ``squad`` (or on ``xquad``) answers XQuAD and MLQA. MLQA is
read for the same-language pairs only (context language = question language). TyDiQA-GoldP trains on
its own English train set; it has no public test set, so its ``test`` split is the GoldP dev set, which
is what XTREME reports.

Local layouts (``data_dir``), tried in order per split; all are SQuAD json
(``data[].paragraphs[].{context, qas[].{id, question, answers[{text, answer_start}], is_impossible}}``):

- SQuAD: ``train-v1.1.json`` / ``dev-v1.1.json`` (v2.0: ``train-v2.0.json`` / ``dev-v2.0.json``);
- XQuAD: ``xquad.{lang}.json``;
- MLQA: ``[MLQA_V1/]{dev,test}/{dev,test}-context-{lang}-question-{lang}.json`` (or flat in data_dir);
- SQuAD translate-train (XTREME's machine translations, training data "in any language"): the ``train`` split of
  squad, xquad and mlqa in a language other than English reads ``[translate-train/]squad.translate.train.en-{lang}.json``
  (``validation``: ``[translate-dev/]squad.translate.dev.en-{lang}.json``), e.g. ``train_languages: [de, fr]``.
  Machine translation misplaces some answers; a translated question whose ``answer_start`` misses its answer text
  is skipped and counted in a warning, as XTREME's ``run_squad.py`` skips it (an English file refuses it instead);
- TyDiQA-GoldP, XTREME layout: ``tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json``,
  ``tydiqa-goldp-v1.1-dev/tydiqa.{lang}.dev.json`` (or ``tydiqa.goldp.{lang}.dev.json``); the original
  all-language release files ``tydiqa-goldp-v1.1-{train,dev}.json`` are split by the language prefix
  of the question ids (``finnish-...``).

Features: a question and a sliding window over its context (question first, ``only_second``
truncation, ``max_length`` from the config, stride ``doc_stride`` = 128). A question longer than
``max_query_length`` tokens (64, at most a third of ``max_length``) is cut to it, as the HF QA examples
do: otherwise a long question leaves the context less room than the stride and the tokenizer panics.
A feature keeps the index of
its first context token (``context_start``) and the character offsets of its context tokens
(``char_starts``/``char_ends``, from the tokenizer's offset mapping). Training labels are the first and last context tokens covering the
first gold answer, or (0, 0) (``<s>``) when the window does not contain it or there is no answer.
Decoding merges all windows of a question with the n-best decoder of :mod:`fastxlt.tasks.span_decode`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError, UnknownLanguageError
from fastxlt.tasks import languages as langs
from fastxlt.tasks.base import Family, TaskSpec, register
from fastxlt.tasks.features import FAMILY_OPS, FamilyOps, Feature, pad_ids
from fastxlt.tasks.head_registry import register_head
from fastxlt.tasks.qa_metrics import QAGold
from fastxlt.tasks.readers import local_data_hint, utf8_error
from fastxlt.tasks.span_decode import MAX_ANSWER_LENGTH, N_BEST, PackedLogits, decode_spans, pack, select_answers

logger = logging.getLogger(__name__)

DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64  # question tokens kept, as the HF QA examples' max_query_length (capped at max_length // 3)
XQUAD_LANGUAGES = tuple(sorted(langs.XQUAD + ("ro",)))  # the 12 files of the XQuAD release

# TyDiQA question ids start with the language's English name ("finnish-1234...-0").
TYDIQA_NAMES = {
    "ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish", "id": "indonesian",
    "ko": "korean", "ru": "russian", "sw": "swahili", "te": "telugu",
}  # fmt: skip


@dataclass(frozen=True)
class QAExample:
    """One question about one context; the answers are character spans of the context.

    ``answer_texts`` / ``answer_starts`` are parallel (several gold answers in dev/test sets, one in
    training sets, none for an unanswerable SQuAD v2.0 question or an unlabelled file).
    """

    id: str
    question: str
    context: str
    answer_texts: tuple[str, ...]
    answer_starts: tuple[int, ...]
    is_impossible: bool = False
    language: str = "en"


# --------------------------------------------------------------------------------------------
# Reading SQuAD-format json (SQuAD, XQuAD, MLQA, TyDiQA-GoldP all use it)
# --------------------------------------------------------------------------------------------


def read_squad_json(
    path: str | Path, language: str = "en", id_prefix: str | None = None, *, skip_misaligned: bool = False
) -> list[QAExample]:
    """All questions of a SQuAD-format json file, in file order.

    ``id_prefix`` keeps only the questions whose id starts with it (TyDiQA's all-language files).
    ``skip_misaligned`` drops (and counts in a warning) a question whose ``answer_start`` misses its answer text
    instead of refusing the file: machine-translated training sets have such questions, and XTREME skips them.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"SQuAD json file not found: {path}; check data_dir")
    try:
        with path.open(encoding="utf-8") as handle:
            document = json.load(handle)
    except UnicodeDecodeError as error:
        raise utf8_error(path, error) from None
    except json.JSONDecodeError as error:
        raise CorruptDataError(f"{path}:{error.lineno}: not valid UTF-8 JSON ({error.msg}); the download may be truncated") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise CorruptDataError(f"{path} has no top-level 'data' list; is it a SQuAD-format json file?")
    examples: list[QAExample] = []
    misaligned = 0
    for article in document["data"]:
        for paragraph in article.get("paragraphs", ()):
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise CorruptDataError(f"{path}: a paragraph of '{article.get('title', '?')}' has no 'context' text")
            for qa in paragraph.get("qas", ()):
                if id_prefix is not None and not str(qa.get("id", "")).startswith(id_prefix):
                    continue
                example = _example(path, qa, context, language)
                if misaligned_answer(example) is None:
                    examples.append(example)
                elif skip_misaligned:
                    misaligned += 1
                else:
                    check_answer_offsets(example, str(path))
    if misaligned:
        logger.warning("skipped %d of %d questions of %s whose answer_start misses the answer text (as XTREME does "
                       "for machine-translated training data)", misaligned, misaligned + len(examples), path)
    return examples


def _example(path: Path, qa: Mapping[str, Any], context: str, language: str) -> QAExample:
    try:
        answers = qa.get("answers") or []
        texts = tuple(str(answer["text"]) for answer in answers)
        starts = tuple(int(answer["answer_start"]) for answer in answers)
        example = QAExample(
            id=str(qa["id"]), question=str(qa["question"]), context=context,
            answer_texts=texts, answer_starts=starts,
            is_impossible=bool(qa.get("is_impossible", False)) or not texts, language=language,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptDataError(
            f"{path}: question {qa.get('id', '?')!r} lacks or mangles {error}; expected id, question, "
            "answers[{text, answer_start}]"
        ) from None
    return example


def misaligned_answer(example: QAExample) -> tuple[str, int] | None:
    """The first (text, answer_start) whose offset does not point at its text in the context; None if all do."""
    for text, start in zip(example.answer_texts, example.answer_starts):
        if text and example.context[start : start + len(text)] != text:
            return text, start
    return None


def check_answer_offsets(example: QAExample, where: str) -> None:
    """Refuse an answer whose ``answer_start`` does not point at its text in the context.

    Training labels come from the offset, so a wrong one would silently train the question as
    "no answer" (its span is found in no window); a shifted offset means a broken conversion.
    """
    wrong = misaligned_answer(example)
    if wrong is not None:
        text, start = wrong
        found = example.context.find(text)
        hint = f"the text occurs at {found}" if found >= 0 else "the text does not occur in the context"
        raise CorruptDataError(
            f"{where}: question {example.id!r}: answer_start {start} does not point at its answer {text!r} "
            f"({hint}); fix answer_start to the answer's character offset in the context"
        )


def _from_hub_rows(rows: Mapping[str, list[Any]], language: str, id_prefix: str | None) -> list[QAExample]:
    """Hub columns (id, question, context, answers{text, answer_start}) -> examples."""
    examples = []
    for qid, question, context, answers in zip(rows["id"], rows["question"], rows["context"], rows["answers"]):
        if id_prefix is not None and not str(qid).startswith(id_prefix):
            continue
        texts = tuple(answers["text"])
        example = QAExample(str(qid), question, context, texts, tuple(int(s) for s in answers["answer_start"]),
                            is_impossible=not texts, language=language)  # fmt: skip
        check_answer_offsets(example, "hub dataset")
        examples.append(example)
    return examples


# --------------------------------------------------------------------------------------------
# Sources and the adapter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitSource:
    """Where one split comes from: a hub dataset and the local file names (``{lang}``, ``{name}`` filled in).

    ``languages`` limits the split to the languages the source has (SQuAD: English); ``by_id_prefix``
    marks multilingual sources whose questions are selected by their id prefix (TyDiQA). A local
    pattern in ``all_language_files`` holds every language and is filtered the same way.
    ``translated``: local patterns of machine-translated copies of the split, read for a language outside
    ``languages`` (SQuAD translate-train); there is no hub copy of them.
    """

    hub_path: str
    hub_config: str | None
    hub_split: str
    patterns: tuple[str, ...]
    languages: tuple[str, ...] | None = None
    by_id_prefix: bool = False
    all_language_files: tuple[str, ...] = ()
    translated: tuple[str, ...] = ()

    def is_translated(self, language: str) -> bool:
        """Whether ``language`` reads the machine-translated copy of this split."""
        return bool(self.translated) and self.languages is not None and language not in self.languages


@dataclass(frozen=True)
class SpanQAAdapter:
    """Reads one split of one language of a span-QA task from the hub or local files (TaskSpec.adapter)."""

    sources: Mapping[str, SplitSource]

    def __call__(self, spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[QAExample]:
        self._check_language(spec, split, language)
        source = self.sources[split]
        prefix = f"{TYDIQA_NAMES[language]}-" if source.by_id_prefix else None
        if data_dir is None:
            if source.is_translated(language):
                raise DataNotFoundError(
                    f"task '{spec.name}' split '{split}' in '{language}' is machine-translated data, which "
                    f"{source.hub_path} does not have; set data: {{{spec.name}: DIR}} with "
                    f"{source.translated[0].format(lang=language)}"
                )
            return _read_hub(source, language, prefix)
        path, all_languages = self._locate(spec, split, language, data_dir)
        return read_squad_json(path, language, id_prefix=prefix if all_languages else None,
                               skip_misaligned=source.is_translated(language))

    def data_files(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[Path]:
        """The one json file a read of this split opens."""
        self._check_language(spec, split, language)
        return [self._locate(spec, split, language, data_dir)[0]]

    def _check_language(self, spec: TaskSpec, split: str, language: str) -> None:
        source = self.sources[split]
        if source.languages is not None and language not in source.languages and not source.translated:
            raise UnknownLanguageError(
                f"task '{spec.name}': split '{split}' exists only in {', '.join(source.languages)} "
                f"(it is {source.hub_path}); evaluate '{language}' on another split"
            )

    def _locate(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> tuple[Path, bool]:
        """The file of this split and language, and whether it holds every language (filtered by id prefix)."""
        source = self.sources[split]
        tried = []
        for pattern in source.translated if source.is_translated(language) else source.patterns:
            path = data_dir / pattern.format(lang=language, name=TYDIQA_NAMES.get(language, language))
            tried.append(str(path))
            if path.is_file():
                return path, False
        for pattern in source.all_language_files:
            path = data_dir / pattern
            tried.append(str(path))
            if path.is_file():
                return path, True
        raise DataNotFoundError(
            f"task '{spec.name}' split '{split}' language '{language}': none of {', '.join(tried)} exists; "
            "point data_dir at the folder holding the task's json files"
        )


def _read_hub(source: SplitSource, language: str, id_prefix: str | None) -> list[QAExample]:
    import datasets

    config = source.hub_config.format(lang=language) if source.hub_config else None
    name = f"{source.hub_path} ({config or 'default'}, {source.hub_split})"
    try:
        dataset = datasets.load_dataset(source.hub_path, config, split=source.hub_split)
    except Exception as error:  # offline, missing, renamed...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataNotFoundError(
            f"cannot load {name} from the Hugging Face hub ({reason}); "
            + local_data_hint(what="the task's json files")
        ) from error
    missing = [c for c in ("id", "question", "context", "answers") if c not in dataset.column_names]
    if missing:
        raise CorruptDataError(f"{name} lacks column(s) {', '.join(missing)} (has {', '.join(dataset.column_names)})")
    return _from_hub_rows(dataset.select_columns(["id", "question", "context", "answers"]).to_dict(), language, id_prefix)


def _squad_source(version: str, split: str) -> SplitSource:
    hub = "rajpurkar/squad" if version == "1.1" else "rajpurkar/squad_v2"
    own = "train" if split == "train" else "dev"
    # XTREME's translations of SQuAD v1.1 train and dev (gs://xtreme_translations/SQuAD/translate-{train,dev}/)
    translated = () if version != "1.1" else tuple(
        f"{folder}squad.translate.{own}.en-{{lang}}.json"
        for folder in (f"translate-{own}/", "", f"SQuAD/translate-{own}/", f"squad/translate-{own}/")
    )  # fmt: skip
    return SplitSource(hub, None, "train" if split == "train" else "validation",
                       (f"{own}-v{version}.json",), languages=("en",), translated=translated)  # fmt: skip


def _mlqa_source(split: str) -> SplitSource:
    own = "dev" if split == "validation" else "test"
    name = f"{own}-context-{{lang}}-question-{{lang}}.json"
    return SplitSource("facebook/mlqa", "mlqa.{lang}.{lang}", split,
                       (f"{own}/{name}", f"MLQA_V1/{own}/{name}", name))  # fmt: skip


def _tydiqa_source(split: str) -> SplitSource:
    if split == "train":
        patterns = ("tydiqa-goldp-v1.1-train/tydiqa.goldp.{lang}.train.json",
                    "tydiqa-goldp-v1.1-train/tydiqa.{lang}.train.json", "tydiqa.goldp.{lang}.train.json")
        return SplitSource("google-research-datasets/tydiqa", "secondary_task", "train", patterns,
                           by_id_prefix=True, all_language_files=("tydiqa-goldp-v1.1-train.json",))
    patterns = ("tydiqa-goldp-v1.1-dev/tydiqa.{lang}.dev.json", "tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json",
                "tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{name}.json", "tydiqa.{lang}.dev.json",
                "tydiqa.goldp.{lang}.dev.json")
    return SplitSource("google-research-datasets/tydiqa", "secondary_task", "validation", patterns,
                       by_id_prefix=True, all_language_files=("tydiqa-goldp-v1.1-dev.json",))  # fmt: skip


def _builtin_tasks() -> list[TaskSpec]:
    squad = {"train": _squad_source("1.1", "train"), "validation": _squad_source("1.1", "validation")}
    squad_v2 = {"train": _squad_source("2.0", "train"), "validation": _squad_source("2.0", "validation")}
    xquad = {**squad, "test": SplitSource("google/xquad", "xquad.{lang}", "validation", ("xquad.{lang}.json",))}
    mlqa = {"train": squad["train"], "validation": _mlqa_source("validation"), "test": _mlqa_source("test")}
    tydiqa = {"train": _tydiqa_source("train"), "validation": _tydiqa_source("validation"),
              "test": _tydiqa_source("validation")}  # fmt: skip
    spec = lambda name, languages, sources, metric, head, hub, text, more=(), **extra: TaskSpec(  # noqa: E731
        name=name, family=Family.SPAN_QA, languages=languages, splits=tuple(sources), metric=metric,
        adapter=SpanQAAdapter(sources), head=head, hub_id=hub, description=text, extra=extra, extra_languages=more,
    )  # fmt: skip
    translated = tuple(language for language in langs.XTREME_R_ALL if language != "en")  # SQuAD translate-train
    return [
        spec("squad", ("en",), squad, "squad", "squad", "rajpurkar/squad",
             "SQuAD v1.1 extractive QA; other languages: XTREME's translate-train/dev files", more=translated),
        spec("squad_v2", ("en",), squad_v2, "squad_v2", "squad_v2", "rajpurkar/squad_v2",
             "SQuAD v2.0: extractive QA with unanswerable questions", null_threshold=0.0),
        spec("xquad", XQUAD_LANGUAGES, xquad, "squad", "squad", "google/xquad",
             "XQuAD: SQuAD v1.1 dev translated into 11 languages; trains on SQuAD v1.1"),
        spec("mlqa", langs.MLQA, mlqa, "mlqa", "squad", "facebook/mlqa",
             "MLQA same-language pairs; trains on SQuAD v1.1; MLQA's language-aware metric"),
        spec("tydiqa", langs.TYDIQA, tydiqa, "squad", "tydiqa", "google-research-datasets/tydiqa",
             "TyDiQA-GoldP (XTREME); trains on its English train set; test = GoldP dev"),
    ]  # fmt: skip


TASKS: dict[str, TaskSpec] = {spec.name: register(spec) for spec in _builtin_tasks()}


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeSettings:
    """How a task's windows are decoded; one shared object referenced by all its features."""

    n_best: int = N_BEST
    max_answer_length: int = MAX_ANSWER_LENGTH
    null_threshold: float | None = None  # a number enables "no answer" (SQuAD v2.0)


def decode_settings(spec: TaskSpec) -> DecodeSettings:
    threshold = spec.extra.get("null_threshold", 0.0 if spec.metric == "squad_v2" else None)
    return DecodeSettings(
        int(spec.extra.get("n_best", N_BEST)), int(spec.extra.get("max_answer_length", MAX_ANSWER_LENGTH)),
        None if threshold is None else float(threshold),
    )


def answer_token_span(char_starts: Sequence[int], char_ends: Sequence[int], start_char: int, end_char: int) -> tuple[int, int] | None:
    """(first, last) index of the context tokens covering characters [start_char, end_char), or None.

    ``char_starts``/``char_ends`` are the offsets of a window's context tokens. The first token is the
    last one starting at or before ``start_char``; the last token is the first one from there whose
    end reaches ``end_char``. None when the window does not hold the whole answer.
    """
    if not char_starts or char_starts[0] > start_char or char_ends[-1] < end_char:
        return None
    first = 0
    while first + 1 < len(char_starts) and char_starts[first + 1] <= start_char:
        first += 1
    last = first
    while char_ends[last] < end_char:
        last += 1
    return first, last


def context_offsets(sequence_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]]) -> tuple[int, list[int], list[int]]:
    """(index of the first context token, character starts, character ends of the context tokens)."""
    begin = sequence_ids.index(1) if 1 in sequence_ids else len(sequence_ids)
    end = begin
    while end < len(sequence_ids) and sequence_ids[end] == 1:
        end += 1
    return begin, [o[0] for o in offsets[begin:end]], [o[1] for o in offsets[begin:end]]


def truncate_questions(tokenizer, questions: list[str], limit: int) -> list[str]:
    """Each question cut after its first ``limit`` tokens (at the character where that token ends)."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [question if len(offsets) <= limit else question[: offsets[limit - 1][1]]
            for question, offsets in zip(questions, encoded["offset_mapping"])]  # fmt: skip


def check_window(spec, tokenizer, max_length: int, query_limit: int, stride: int) -> None:
    """Refuse a ``max_length`` that leaves a window's context no more room than the stride (a tokenizer panic)."""
    room = max_length - query_limit - tokenizer.num_special_tokens_to_add(pair=True)
    if query_limit < 1 or room <= stride:
        raise ConfigError(
            f"task '{spec.name}': max_length {max_length} is too short for question + context windows "
            f"(a {query_limit}-token question and a {stride}-token stride leave {room} context tokens); "
            "raise max_length (384 is the recipe's)"
        )


class SpanQAOps(FamilyOps):
    """Question + context windows in, per-token start/end logits out, merged into one answer per question."""

    family = Family.SPAN_QA
    chunk = 1000  # examples per tokenizer call: bounds the memory of the overflowing encodings

    def featurize(self, spec, examples, tokenizer, max_length):
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(
                f"task '{spec.name}' needs a fast tokenizer (character offsets); load it with use_fast=True"
            )
        settings = decode_settings(spec)
        # The stride must leave room for the question in every window; 128 at the default 384.
        stride = min(int(spec.extra.get("doc_stride", DOC_STRIDE)), max_length // 3)
        query_limit = min(int(spec.extra.get("max_query_length", MAX_QUERY_LENGTH)), max_length // 3)
        check_window(spec, tokenizer, max_length, query_limit, stride)
        features: list[Feature] = []
        for begin_example in range(0, len(examples), self.chunk):
            block = examples[begin_example : begin_example + self.chunk]
            questions = truncate_questions(tokenizer, [ex.question.lstrip() for ex in block], query_limit)
            encoded = tokenizer(
                questions, [ex.context for ex in block],
                truncation="only_second", max_length=max_length, stride=stride,
                return_overflowing_tokens=True, return_offsets_mapping=True,
            )  # fmt: skip
            for i, input_ids in enumerate(encoded["input_ids"]):
                index = encoded["overflow_to_sample_mapping"][i]
                begin, starts, ends = context_offsets(encoded.sequence_ids(i), encoded["offset_mapping"][i])
                example = block[index]
                span = None
                if example.answer_texts:
                    start_char = example.answer_starts[0]
                    span = answer_token_span(starts, ends, start_char, start_char + len(example.answer_texts[0]))
                start_position, end_position = (begin + span[0], begin + span[1]) if span else (0, 0)
                features.append({
                    "input_ids": input_ids, "example": begin_example + index, "context_start": begin,
                    "char_starts": starts, "char_ends": ends,
                    "start_position": start_position, "end_position": end_position, "decoding": settings,
                })  # fmt: skip
        return features

    def collate(self, features, tokenizer, generator=None):
        input_ids, attention_mask = pad_ids([f["input_ids"] for f in features], tokenizer.pad_token_id)
        labels = torch.tensor([[f["start_position"], f["end_position"]] for f in features], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def predict(self, logits, batch):
        """Per feature: its (tokens, 2) float32 start/end logits, padding trimmed."""
        values = logits.detach().float().cpu().numpy()
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        return [np.ascontiguousarray(values[i, :length]) for i, length in enumerate(lengths)]

    def gold(self, features):
        return [(f["start_position"], f["end_position"]) for f in features]

    def decode(self, examples, features, outputs):
        """All windows of each question -> its answer text; gold = QAGold(answers, language)."""
        if len(features) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {len(features)} features; predict every feature")
        settings = features[0]["decoding"] if features else DecodeSettings()
        packed, starts, ends = pack_features(features, outputs, len(examples))
        nbest = decode_spans(packed, settings.n_best, settings.max_answer_length)
        contexts = [ex.context for ex in examples]
        predictions = select_answers(contexts, nbest, packed, starts, ends, settings.null_threshold)
        gold = [QAGold(ex.answer_texts, ex.language) for ex in examples]
        return predictions, gold


def pack_features(
    features: Sequence[Feature], outputs: Sequence[np.ndarray], num_examples: int
) -> tuple[PackedLogits, list[list[int]], list[list[int]]]:
    """Windows grouped by question (kept in place when featurize's order already does), packed for
    the decoder; plus the character offsets of each packed window's context tokens."""
    if len(features) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(features)} features; predict every feature")
    owners = [f["example"] for f in features]
    if any(b < a for a, b in zip(owners, owners[1:])):
        order = sorted(range(len(features)), key=owners.__getitem__)
        features, outputs, owners = [features[i] for i in order], [outputs[i] for i in order], sorted(owners)
    windows = np.bincount(np.asarray(owners, dtype=np.int64), minlength=num_examples)
    if len(windows) > num_examples:
        raise ValueError(f"features refer to {len(windows)} examples but {num_examples} were given")
    context = [(f["context_start"], f["context_start"] + len(f["char_starts"])) for f in features]
    packed = pack(list(outputs), context, windows)
    return packed, [f["char_starts"] for f in features], [f["char_ends"] for f in features]


class SpanHead(nn.Module):
    """Extractive QA: a start and an end logit per token (the reference ``...ForQuestionAnswering``).

    ``labels`` is (batch, 2): the start and end token of the answer, 0 (``<s>``) when the window
    holds no answer. The loss is the mean of the start and end cross-entropies over all positions,
    padding included, as in the reference implementation; positions beyond the sequence are ignored.
    Returns logits of shape (batch, tokens, 2).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits = self.qa_outputs(sequence_output)
        if labels is None:
            return None, logits
        length = logits.shape[1]
        positions = labels.clamp(0, length)  # out-of-range positions -> ignore_index, as the reference
        start_loss = F.cross_entropy(logits[..., 0].float(), positions[:, 0], ignore_index=length)
        end_loss = F.cross_entropy(logits[..., 1].float(), positions[:, 1], ignore_index=length)
        return (start_loss + end_loss) / 2, logits


def span_head(spec: TaskSpec, encoder: Any, pooling: str) -> SpanHead:
    return SpanHead(encoder.config.hidden_size)


FAMILY_OPS[Family.SPAN_QA] = SpanQAOps()  # what features.ops_for returns for span-QA tasks
register_head(Family.SPAN_QA, span_head)  # what models.heads.make_head builds for them


def load_qa_examples(task: str, split: str, language: str, data_dir: str | Path | None = None) -> list[QAExample]:
    """Read one split of one language of a span-QA task (the hub when data_dir is None)."""
    return TASKS[task].load(split, language, data_dir)
