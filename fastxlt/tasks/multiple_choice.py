"""Multiple-choice tasks: HellaSwag, CommonsenseQA, Cosmos QA, Social IQa, COPA and XCOPA.

An example is a context (the question folded in), its candidate answers and the index of the right one
(-1 when the split's labels are hidden). Each (context, choice) pair is encoded as a sentence pair; a
batch has shape (batch, choices, length) and the ``MultipleChoiceHead`` scores every pair from its
pooled first token, with cross-entropy over the choices (as ``XLMRobertaForMultipleChoice``).

How each task builds (context, choices), following jiant, the X-STILTs code base:

=============  ===========================  ================================  =============================
task           hub (``datasets``)           context                           choices
=============  ===========================  ================================  =============================
hellaswag      Rowan/hellaswag              ctx_a                             ctx_b + " " + ending (4)
commonsense_qa tau/commonsense_qa           question                          answer texts, A-E order (5)
cosmos_qa      allenai/cosmos_qa            context + " " + question          answer0-3 (4)
social_iqa     allenai/social_i_qa          context + " " + question          answerA-C (3)
copa           aps/super_glue, copa         premise + " " + question phrase   choice1, choice2 (2)
xcopa          cambridgeltl/xcopa, <lang>   as COPA                           as COPA
=============  ===========================  ================================  =============================

COPA's question is "cause" or "effect"; it becomes "What was the cause of this?" / "What happened as a
result?" (English, also for XCOPA: the model is trained on English COPA). XCOPA's ``en`` is English COPA
itself (XCOPA translates COPA's validation and test sets): a target phase on ``xcopa`` trains on COPA.
All these tasks share one scorer head (``CHOICE_HEAD``), so a target phase on an English task (CommonsenseQA,
Social IQa) is evaluated zero-shot on XCOPA with ``evaluate.tasks: [xcopa]`` (XTREME-R trains SIQA for XCOPA).

Local layouts (``data_dir``), split names in brackets:

- hellaswag: the original ``hellaswag_{train,val,test}.jsonl``; the text layout of llama.cpp
  (``hellaswag_val_full.txt[.bz2]``, 6 lines per item: ``activity_label: ctx``, label, 4 endings),
  where ctx_a and ctx_b are no longer apart: the context is ctx without the activity label and the
  choices are the bare endings.
- commonsense_qa: the original ``{train,dev}_rand_split.jsonl`` / ``test_rand_split_no_answers.jsonl``
  (nested ``question.stem`` / ``question.choices``), or hub exports ``{split}.jsonl`` (flat columns).
- cosmos_qa: the original ``train.csv`` / ``valid.csv`` / ``test.jsonl``.
- social_iqa: the original ``{train,dev}.jsonl`` with labels 1-3 in ``{train,dev}-labels.lst``.
- copa: SuperGLUE's ``COPA/{train,val,test}.jsonl``; xcopa: the XCOPA repository's
  ``data/<lang>/{val,test}.<lang>.jsonl`` (``en`` reads the COPA files of the same folder), or the
  XTREME-R download (``scripts/download_data.sh``, ``download_xcopa``): flat ``{val,test}-<lang>.jsonl``
  with COPA renamed to ``{train,val,test}-en.jsonl`` (also under ``xcopa/``). XTREME-R's preprocessing
  withholds the test labels: such a file scores only with ``allow_constant_labels`` (see
  ``fastxlt.tasks.sanity``), because every label then reads as the same value.
- every task: hub exports ``{split}.jsonl`` / ``{split}.parquet`` / ``{split}-*.parquet``
  (``<lang>/`` first for xcopa) with the hub's columns.
"""

from __future__ import annotations

import bz2
import csv
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastxlt.errors import CorruptDataError, DataNotFoundError
from fastxlt.tasks import languages as langs
from fastxlt.tasks.base import Family, TaskSpec, register
from fastxlt.tasks.features import FAMILY_OPS, FamilyOps, Feature, pad_ids
from fastxlt.tasks.head_registry import check_head_pooling, head_dropout, pool, register_head
from fastxlt.tasks.readers import first_existing, load_hub_dataset, locate_files, read_label_file, read_parquet

UNLABELLED = -1

XCOPA_LANGUAGES = ("en", "et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
COPA_QUESTIONS = {"cause": "What was the cause of this?", "effect": "What happened as a result?"}

_SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class ChoiceExample:
    """A context (question included), its candidate answers, and the right one's index (-1: unknown)."""

    context: str
    choices: tuple[str, ...]
    label: int


Record = Mapping[str, Any]
Convert = Callable[[Record], ChoiceExample]


# --------------------------------------------------------------------------------------------
# Records -> examples, one converter per task (hub columns and original fields)
# --------------------------------------------------------------------------------------------


def _label(value: Any, count: int, base: int = 0) -> int:
    """A label given as an int or a digit string (``base`` 1 for 1-based files); '' / None / -1 -> -1."""
    if value is None:
        return UNLABELLED
    if isinstance(value, str):
        if not value.strip():
            return UNLABELLED
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"label {value!r} is not an integer")
    if value == UNLABELLED:
        return UNLABELLED
    number = int(value) - base
    if not 0 <= number < count:
        raise ValueError(f"label {value!r} is out of range for {count} choices")
    return number


def hellaswag_example(record: Record) -> ChoiceExample:
    ctx_b = (record.get("ctx_b") or "").strip()
    endings = tuple(f"{ctx_b} {ending}" if ctx_b else ending for ending in record["endings"])
    return ChoiceExample(record["ctx_a"], endings, _label(record.get("label"), len(endings)))


def commonsense_qa_example(record: Record) -> ChoiceExample:
    question = record["question"]
    if isinstance(question, Mapping):  # the original nested layout
        stem, choices = question["stem"], question["choices"]
        labels, texts = [c["label"] for c in choices], [c["text"] for c in choices]
    else:  # the hub's flat layout
        stem, labels, texts = question, list(record["choices"]["label"]), list(record["choices"]["text"])
    key = (record.get("answerKey") or "").strip()
    if key and key not in labels:
        raise ValueError(f"answerKey {key!r} is not one of the choice labels {labels}")
    return ChoiceExample(stem, tuple(texts), labels.index(key) if key else UNLABELLED)


def cosmos_qa_example(record: Record) -> ChoiceExample:
    answers = tuple(record[f"answer{i}"] for i in range(4))
    return ChoiceExample(f"{record['context']} {record['question']}", answers, _label(record.get("label"), 4))


def social_iqa_example(record: Record) -> ChoiceExample:
    answers = tuple(record[f"answer{c}"] for c in "ABC")
    return ChoiceExample(f"{record['context']} {record['question']}", answers, _label(record.get("label"), 3, base=1))


def copa_example(record: Record) -> ChoiceExample:
    question = str(record["question"]).strip()
    if question not in COPA_QUESTIONS:
        raise ValueError(f"question {question!r} is neither 'cause' nor 'effect'")
    context = f"{record['premise']} {COPA_QUESTIONS[question]}"
    return ChoiceExample(context, (record["choice1"], record["choice2"]), _label(record.get("label"), 2))


# --------------------------------------------------------------------------------------------
# File readers -> records
# --------------------------------------------------------------------------------------------


def _open_text(path: Path) -> str:
    if not path.is_file():
        raise DataNotFoundError(f"file not found: {path}; check data_dir")
    try:
        raw = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    except OSError as error:
        raise CorruptDataError(f"{path}: not readable ({error}); re-download it") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:  # the line of the bad byte, counted in the decompressed text
        line = raw.count(b"\n", 0, error.start) + 1
        raise CorruptDataError(
            f"{path}:{line}: invalid UTF-8 byte ({error.reason}); the file must be UTF-8 text (re-save or re-download it)"
        ) from None


def read_json_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(_open_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorruptDataError(f"{path}:{number}: not valid JSON ({error.msg}); the file may be truncated") from None
        if not isinstance(record, dict):
            raise CorruptDataError(f"{path}:{number}: expected a JSON object per line")
        records.append(record)
    return records


def read_csv_records(path: Path) -> list[dict[str, Any]]:
    """A CSV with a header row and standard quoting (Cosmos QA's ``train.csv`` / ``valid.csv``)."""
    return list(csv.DictReader(_open_text(path).splitlines()))


def read_parquet_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return read_parquet(path, pq.read_schema(path).names)


def read_hellaswag_text(path: Path) -> list[dict[str, Any]]:
    """llama.cpp's text layout: 6 lines per item (``activity_label: ctx``, label, 4 endings)."""
    lines = _open_text(path).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 6:
        raise CorruptDataError(f"{path}: {len(lines)} lines is not a multiple of 6 (context, label, 4 endings per item)")
    records = []
    for start in range(0, len(lines), 6):
        head, label, *endings = lines[start : start + 6]
        context = head.split(": ", 1)[1] if ": " in head else head
        records.append({"ctx_a": context, "ctx_b": "", "endings": endings, "label": label.strip()})
    return records


def read_jsonl_with_labels(path: Path) -> list[dict[str, Any]]:
    """Social IQa's original layout: ``X.jsonl`` plus one 1-based label per line in ``X-labels.lst``."""
    records = read_json_records(path)
    labels_path = path.with_name(f"{path.stem}-labels.lst")
    if labels_path.is_file():
        labels = read_label_file(labels_path)
        if len(labels) != len(records):
            raise CorruptDataError(f"{labels_path} has {len(labels)} labels but {path} has {len(records)} rows")
        for record, label in zip(records, labels):
            record["label"] = label
    return records


def _by_suffix(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        return read_parquet_records(path)
    if path.suffix == ".csv":
        return read_csv_records(path)
    return read_json_records(path)


@dataclass(frozen=True)
class ChoiceLayout:
    """Paths per split (``{lang}`` filled in; ``*`` globs shards) and how to read one file into records."""

    name: str
    patterns: Mapping[str, tuple[str, ...]]
    read: Callable[[Path], list[dict[str, Any]]] = _by_suffix

    def find(self, data_dir: Path, split: str, language: str) -> tuple[list[Path], list[str]]:
        tried = [pattern.format(lang=language) for pattern in self.patterns.get(split, ())]
        return first_existing(data_dir, tried), tried


def _export(prefix: str = "") -> ChoiceLayout:
    names = {"train": "train", "validation": "validation", "test": "test"}
    patterns = {split: tuple(f"{prefix}{own}{end}" for end in (".jsonl", ".parquet", "-*.parquet"))
                for split, own in names.items()}  # fmt: skip
    return ChoiceLayout("hub export (jsonl/parquet)", patterns)


# --------------------------------------------------------------------------------------------
# The hub and the adapter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoiceHub:
    path: str
    config: str | None
    splits: Mapping[str, str]

    def config_for(self, language: str) -> str | None:
        return self.config.format(lang=language) if self.config else None


def _read_hub(hub: ChoiceHub, split: str, language: str) -> list[dict[str, Any]]:
    return list(load_hub_dataset(hub.path, hub.config_for(language), hub.splits[split]))


@dataclass(frozen=True)
class ChoiceAdapter:
    """Reads one split of one language from the hub or the first local layout found, then converts records."""

    hub: ChoiceHub
    layouts: tuple[ChoiceLayout, ...]
    convert: Convert
    english: "ChoiceAdapter | None" = None  # xcopa: English is COPA

    def __call__(self, spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[ChoiceExample]:
        if self.english is not None and language == langs.ENGLISH:
            return self.english(spec, split, language, data_dir)
        if data_dir is None:
            if split not in self.hub.splits:
                raise DataNotFoundError(f"{self.hub.path} has no {split} split for task '{spec.name}' language '{language}'")
            where, records = f"{self.hub.path}", _read_hub(self.hub, split, language)
        else:
            where, records = self._read_local(spec, split, language, data_dir)
        examples = []
        for i, record in enumerate(records):
            try:
                examples.append(self.convert(record))
            except (KeyError, TypeError, ValueError, IndexError) as error:
                raise CorruptDataError(f"{where} record {i}: {type(error).__name__}: {error}") from None
        return examples

    def data_files(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[Path]:
        """Every local file a read of this split opens (Social IQa's ``-labels.lst`` beside its jsonl included)."""
        if self.english is not None and language == langs.ENGLISH:
            return self.english.data_files(spec, split, language, data_dir)
        _, files = self._locate(spec, split, language, data_dir)
        labels = [path.with_name(f"{path.stem}-labels.lst") for path in files]
        return files + [path for path in labels if path.is_file()]

    def _read_local(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> tuple[str, list[dict]]:
        layout, files = self._locate(spec, split, language, data_dir)
        return str(files[0]), [record for path in files for record in layout.read(path)]

    def _locate(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> tuple[ChoiceLayout, list[Path]]:
        """The first layout with files for this split under ``data_dir``, and those files."""
        return locate_files(self.layouts, spec.name, split, language, data_dir)


def _hellaswag_adapter() -> ChoiceAdapter:
    original = ChoiceLayout("HellaSwag jsonl", {s: (f"hellaswag_{own}.jsonl", f"data/hellaswag_{own}.jsonl")
                                                for s, own in {"train": "train", "validation": "val", "test": "test"}.items()})  # fmt: skip
    text = ChoiceLayout(
        "llama.cpp text", {s: tuple(f"{d}hellaswag_{own}_full.txt{z}" for d in ("", "val_full_textformat/") for z in (".bz2", ""))
                           for s, own in {"train": "train", "validation": "val", "test": "test"}.items()},
        read_hellaswag_text,
    )  # fmt: skip
    return ChoiceAdapter(ChoiceHub("Rowan/hellaswag", None, {s: s for s in _SPLITS}), (original, text, _export()),
                         hellaswag_example)  # fmt: skip


def _commonsense_qa_adapter() -> ChoiceAdapter:
    original = ChoiceLayout("CommonsenseQA jsonl", {"train": ("train_rand_split.jsonl",),
                                                    "validation": ("dev_rand_split.jsonl",),
                                                    "test": ("test_rand_split_no_answers.jsonl",)})  # fmt: skip
    return ChoiceAdapter(ChoiceHub("tau/commonsense_qa", None, {s: s for s in _SPLITS}), (original, _export()),
                         commonsense_qa_example)  # fmt: skip


def _cosmos_qa_adapter() -> ChoiceAdapter:
    original = ChoiceLayout("Cosmos QA csv/jsonl", {"train": ("train.csv", "data/train.csv"),
                                                    "validation": ("valid.csv", "data/valid.csv"),
                                                    "test": ("test.jsonl", "data/test.jsonl")})  # fmt: skip
    return ChoiceAdapter(ChoiceHub("allenai/cosmos_qa", None, {s: s for s in _SPLITS}), (original, _export()),
                         cosmos_qa_example)  # fmt: skip


def _social_iqa_adapter() -> ChoiceAdapter:
    original = ChoiceLayout("Social IQa jsonl + labels", {"train": ("train.jsonl", "socialiqa-train-dev/train.jsonl"),
                                                          "validation": ("dev.jsonl", "socialiqa-train-dev/dev.jsonl")},
                            read_jsonl_with_labels)  # fmt: skip
    return ChoiceAdapter(ChoiceHub("allenai/social_i_qa", None, {"train": "train", "validation": "validation"}),
                         (original, _export()), social_iqa_example)  # fmt: skip


_COPA_FILES = {"train": "train", "validation": "val", "test": "test"}


def _copa_adapter() -> ChoiceAdapter:
    original = ChoiceLayout("SuperGLUE COPA jsonl", {s: (f"{own}.jsonl", f"COPA/{own}.jsonl")
                                                     for s, own in _COPA_FILES.items()})  # fmt: skip
    # XTREME-R's download renames COPA to {train,val,test}-en.jsonl beside the XCOPA files.
    xtreme_r = ChoiceLayout("XTREME-R COPA jsonl", {s: (f"{own}-en.jsonl", f"xcopa/{own}-en.jsonl")
                                                    for s, own in _COPA_FILES.items()})  # fmt: skip
    return ChoiceAdapter(ChoiceHub("aps/super_glue", "copa", {s: s for s in _SPLITS}), (original, xtreme_r, _export()),
                         copa_example)  # fmt: skip


def _xcopa_adapter() -> ChoiceAdapter:
    original = ChoiceLayout("XCOPA jsonl", {"validation": ("data/{lang}/val.{lang}.jsonl", "{lang}/val.{lang}.jsonl"),
                                            "test": ("data/{lang}/test.{lang}.jsonl", "{lang}/test.{lang}.jsonl")})  # fmt: skip
    xtreme_r = ChoiceLayout("XTREME-R XCOPA jsonl", {"validation": ("val-{lang}.jsonl", "xcopa/val-{lang}.jsonl"),
                                                     "test": ("test-{lang}.jsonl", "xcopa/test-{lang}.jsonl")})  # fmt: skip
    hub = ChoiceHub("cambridgeltl/xcopa", "{lang}", {"validation": "validation", "test": "test"})
    return ChoiceAdapter(hub, (original, xtreme_r, _export("{lang}/")), copa_example, english=_copa_adapter())


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


class MultipleChoiceOps(FamilyOps):
    """(context, choice) pairs per example; batches (batch, choices, length); one score per choice."""

    family = Family.MULTIPLE_CHOICE

    def featurize(self, spec, examples, tokenizer, max_length):
        if not examples:
            return []
        contexts = [example.context for example in examples for _ in example.choices]
        choices = [choice for example in examples for choice in example.choices]
        encoded = tokenizer(contexts, choices, truncation="longest_first", max_length=max_length)["input_ids"]
        features, offset = [], 0
        for example in examples:
            count = len(example.choices)
            features.append({"input_ids": encoded[offset : offset + count], "label": example.label})
            offset += count
        return features

    def collate(self, features, tokenizer, generator=None):
        counts = {len(f["input_ids"]) for f in features}
        if len(counts) != 1:
            raise ValueError(f"a batch mixes examples with {sorted(counts)} choices; one task has one choice count")
        rows = [ids for f in features for ids in f["input_ids"]]
        input_ids, attention_mask = pad_ids(rows, tokenizer.pad_token_id)
        shape = (len(features), counts.pop(), input_ids.shape[-1])
        labels = torch.tensor([f["label"] for f in features], dtype=torch.long)
        return {"input_ids": input_ids.view(shape), "attention_mask": attention_mask.view(shape), "labels": labels}

    def predict(self, logits, batch):
        return logits.argmax(dim=-1).tolist()

    def gold(self, features):
        return [f["label"] for f in features]

    @staticmethod
    def length(feature: Feature) -> int:
        """Padded tokens the example costs in a batch: every choice is padded to the longest."""
        rows = feature["input_ids"]
        return len(rows) * max(len(row) for row in rows)


# --------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------


# Every multiple-choice task trains and reads one scorer head: a head scores one (context, choice) pair, whatever
# the number of choices, so a model trained on an English task (CommonsenseQA, Social IQa, ...) is evaluated
# zero-shot on XCOPA as XTREME-R does (SIQA -> XCOPA), as the NLI tasks share the "nli" head.
CHOICE_HEAD = "choice"


def _english(name: str, adapter: ChoiceAdapter, hub_id: str, description: str, **fields: Any) -> TaskSpec:
    fields.setdefault("splits", _SPLITS)
    return TaskSpec(name=name, family=Family.MULTIPLE_CHOICE, languages=(langs.ENGLISH,), metric="accuracy",
                    adapter=adapter, hub_id=hub_id, description=description, head=CHOICE_HEAD, **fields)  # fmt: skip


def _builtin_tasks() -> list[TaskSpec]:
    return [
        _english("hellaswag", _hellaswag_adapter(), "Rowan/hellaswag", "HellaSwag sentence completion (4 endings)"),
        _english("commonsense_qa", _commonsense_qa_adapter(), "tau/commonsense_qa", "CommonsenseQA (5 answers)"),
        _english("cosmos_qa", _cosmos_qa_adapter(), "allenai/cosmos_qa", "Cosmos QA reading comprehension (4 answers)"),
        _english("social_iqa", _social_iqa_adapter(), "allenai/social_i_qa", "Social IQa (3 answers)",
                 splits=("train", "validation"), test_split="validation"),
        _english("copa", _copa_adapter(), "aps/super_glue", "COPA (SuperGLUE), 2 alternatives"),
        TaskSpec(name="xcopa", family=Family.MULTIPLE_CHOICE, languages=XCOPA_LANGUAGES, splits=_SPLITS,
                 metric="accuracy", adapter=_xcopa_adapter(), hub_id="cambridgeltl/xcopa", head=CHOICE_HEAD,
                 description="XCOPA (XTREME-R): COPA translated into 11 languages; en = English COPA"),
    ]  # fmt: skip


TASKS: dict[str, TaskSpec] = {spec.name: register(spec) for spec in _builtin_tasks()}
class MultipleChoiceHead(nn.Module):
    """One score per (context, choice) pair, cross-entropy over the choices of an example.

    The encoder sees the pairs flattened to (batch * choices, tokens) (``TransferModel.forward``);
    ``attention_mask`` keeps its (batch, choices, tokens) shape so that the scores can be put back
    as (batch, choices). As ``XLMRobertaForMultipleChoice``: the first token through a dense + tanh
    pooler, dropout, and a linear layer to one score. The pooler is part of the head because the
    hand-off between phases carries the encoder alone and an encoder's own pooler may be untrained.
    """

    def __init__(self, hidden_size: int, dropout: float, pooling: str = "cls") -> None:
        super().__init__()
        self.pooling = check_head_pooling(pooling)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        if attention_mask.dim() != 3:
            raise ValueError("multiple-choice inputs must be (batch, choices, tokens); collate them with MultipleChoiceOps")
        batch, choices, length = attention_mask.shape
        pooled = pool(sequence_output, attention_mask.reshape(batch * choices, length), self.pooling)
        pooled = self.dropout(torch.tanh(self.dense(pooled)))
        logits = self.scorer(pooled).view(batch, choices)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return loss, logits


def multiple_choice_head(spec: TaskSpec, encoder: Any, pooling: str) -> MultipleChoiceHead:
    config = encoder.config
    return MultipleChoiceHead(config.hidden_size, head_dropout(config), pooling)


FAMILY_OPS[Family.MULTIPLE_CHOICE] = MultipleChoiceOps()  # what features.ops_for returns for these tasks
register_head(Family.MULTIPLE_CHOICE, multiple_choice_head)  # what models.heads.make_head builds for them

__all__ = ["CHOICE_HEAD", "ChoiceExample", "MultipleChoiceOps", "TASKS", "XCOPA_LANGUAGES", "read_hellaswag_text"]
