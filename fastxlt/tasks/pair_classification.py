"""Sentence(-pair) classification tasks: XNLI, PAWS-X and the English intermediate/target tasks.

Registered tasks (``Family.PAIR_CLASSIFICATION``):

=============  ===========================  =========  ======================================
task           hub (``datasets``)           languages  head / labels
=============  ===========================  =========  ======================================
mnli           nyu-mll/glue, mnli           en         nli: entailment, neutral, contradiction
snli           stanfordnlp/snli             en         nli
anli_r1..r3    facebook/anli (train_rN ...) en         nli
anli           ANLI R1+R2+R3                en         nli
anli_plus      SNLI+MNLI+ANLI R1-R3         en         nli (train, validation)
qqp            nyu-mll/glue, qqp            en         qqp: not_duplicate, duplicate (acc + F1)
sst2           nyu-mll/glue, sst2           en         single sentence: negative, positive
xnli           facebook/xnli, per language  15         nli
pawsx          google-research-datasets/    7          not_paraphrase, paraphrase
               paws-x, per language
=============  ===========================  =========  ======================================

All NLI tasks share one label order (0 entailment, 1 neutral, 2 contradiction: the order of the hub
datasets) and the head key ``"nli"``, so ANLI+ trains one head and an NLI-trained head can be read by
XNLI. Splits are always ``train``, ``validation``, ``test`` (MNLI adds the ``*_mismatched`` ones);
each source's own names (``dev``, ``dev_matched``, ``dev_2k``, ``dev_r1``...) are mapped here.

Where the data comes from. ``spec.load(split, language)`` reads the hub with ``datasets.load_dataset``
and drops rows whose label is -1 where the hub uses -1 for "no gold label" (SNLI's pairs without
annotator consensus, PAWS-X's missing labels); GLUE test splits keep -1, their labels are hidden.
``spec.load(split, language, data_dir)`` reads local files instead, auto-detecting the first of the
task's published layouts that exists under ``data_dir`` (the ``_<task>_adapter`` functions below
list them in order of preference): GLUE tsv, the original SNLI/MultiNLI/ANLI/XNLI releases, XTREME
tsv, PAWS-X ``x-final``, and hub exports (``jsonl``/``parquet`` with the hub's columns). Pairs
marked ``-`` (no consensus) in the original releases are dropped, as GLUE and the hub do.
Unlabelled rows get label -1.

Gold labels for XTREME test files. XTREME strips the labels of its test files. A separate file with
one label per line can be attached: ``load_pair_examples(..., labels_file=PATH)`` (or the task
option ``spec.extra["labels_file"]``). For XNLI, ``data_dir/DERIVED_test_labels.txt`` is attached to
``test`` automatically when it exists (``spec.extra["test_labels_file"]``): XNLI is parallel across
languages, so one label file serves all 15 test files; this is what ``shared/data/xnli`` provides.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.tasks import languages as langs
from fastxlt.tasks.base import Family, PairExample, TaskSpec, get_task, register
from fastxlt.tasks.features import FAMILY_OPS, FamilyOps, pad_ids
from fastxlt.tasks.head_registry import check_head_pooling, head_dropout, pool, register_head
from fastxlt.tasks.readers import (
    attach_labels,
    first_existing,
    local_data_hint,
    load_hub_dataset,
    locate_files,
    read_jsonl,
    read_label_file,
    read_parquet,
    read_tsv_columns,
    read_tsv_with_header,
)

UNLABELLED = -1
NO_CONSENSUS = "-"  # SNLI / MultiNLI gold_label of pairs whose annotators did not agree

NLI_LABELS = ("entailment", "neutral", "contradiction")

# A row as every source yields it before label mapping: (text_a, text_b or None, raw label or None).
Row = tuple[Any, Any, Any]


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelScheme:
    """Label names in id order, plus the other spellings that sources use for them."""

    names: tuple[str, ...]
    aliases: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def to_id(self, value: Any) -> int:
        """Map a raw label (hub int, label string, digit string, None) to its id; None/-1 -> -1."""
        if value is None:
            return UNLABELLED
        if isinstance(value, bool):
            raise ValueError(f"label {value!r} is not a class label")
        if isinstance(value, int):
            return self._checked(value)
        text = str(value).strip().lower()
        if text in self._lookup:
            return self._lookup[text]
        try:
            number = int(text)
        except ValueError:
            known = ", ".join(sorted(self._lookup))
            raise ValueError(f"unknown label {value!r}; expected one of {known} or 0..{len(self.names) - 1}") from None
        return self._checked(number)

    @functools.cached_property
    def _lookup(self) -> dict[str, int]:
        return {name.lower(): i for i, name in enumerate(self.names)} | dict(self.aliases)

    def _checked(self, number: int) -> int:
        if number == UNLABELLED or 0 <= number < len(self.names):
            return number
        raise ValueError(f"label {number} is out of range 0..{len(self.names) - 1}")


NLI = LabelScheme(NLI_LABELS, {"contradictory": 2, "e": 0, "n": 1, "c": 2})
PARAPHRASE = LabelScheme(("not_paraphrase", "paraphrase"))
DUPLICATE = LabelScheme(("not_duplicate", "duplicate"))
SENTIMENT = LabelScheme(("negative", "positive"))


def _to_examples(
    rows: Iterable[Row], scheme: LabelScheme, where: Callable[[int], str], *, pair: bool, drop_unlabelled: bool,
    label_where: Callable[[int], str] | None = None,
) -> list[PairExample]:
    """Map raw rows to examples; ``where(i)`` names row i in error messages (``label_where(i)`` its label's line,
    when labels come from a file of their own). An empty sentence is refused: it would be scored as a real pair.

    Rows with no gold label ("-" in the original releases; -1 where ``drop_unlabelled``) are skipped.
    A split has a handful of distinct raw labels, so each is mapped once (this loop runs per row of
    MNLI/ANLI+ training data).
    """
    skip = object()
    label_ids: dict[tuple[type, Any], Any] = {}
    examples = []
    for i, (text_a, text_b, raw_label) in enumerate(rows):
        key = (type(raw_label), raw_label)
        label = label_ids.get(key)
        if label is None:
            try:
                label = label_ids[key] = _label_or_skip(scheme, raw_label, drop_unlabelled, skip)
            except ValueError as error:
                raise CorruptDataError(f"{(label_where or where)(i)}: {error}") from None
        if label is skip:
            continue
        if not isinstance(text_a, str) or (pair and not isinstance(text_b, str)):
            raise CorruptDataError(f"{where(i)}: a sentence is missing (found {text_a!r}, {text_b!r})")
        if not text_a.strip() or (pair and not text_b.strip()):
            which = "first sentence (premise)" if not text_a.strip() else "second sentence (hypothesis)"
            raise CorruptDataError(f"{where(i)}: the {which} is empty; restore it or delete the row")
        examples.append(PairExample(text_a, text_b if pair else None, label))
    return examples


def _label_or_skip(scheme: LabelScheme, raw_label: Any, drop_unlabelled: bool, skip: object) -> Any:
    if isinstance(raw_label, str) and raw_label.strip() == NO_CONSENSUS:
        return skip
    label = scheme.to_id(raw_label)
    return skip if label == UNLABELLED and drop_unlabelled else label


# --------------------------------------------------------------------------------------------
# Local layouts
# --------------------------------------------------------------------------------------------

Reader = Callable[[Path, str], list[Row]]  # (file, language) -> rows


@dataclass(frozen=True)
class Layout:
    """One published file layout of a task: where each split's file lies and how to read it.

    ``patterns`` maps a fastxlt split to paths relative to data_dir, tried in order; ``{lang}``
    is filled in and ``*`` globs shards (read in name order). ``header_less`` marks the XTREME
    layout, the only one whose unlabelled files can take a separate gold-label file.
    """

    name: str
    patterns: Mapping[str, tuple[str, ...]]
    read: Reader
    header_less: bool = False

    def find(self, data_dir: Path, split: str, language: str) -> tuple[list[Path], list[str]]:
        """The files of this split that exist (possibly none) and the relative paths tried."""
        tried = [pattern.format(lang=language) for pattern in self.patterns.get(split, ())]
        return first_existing(data_dir, tried), tried


def _split_patterns(names: Mapping[str, str], templates: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """{split: layout's own split name} x templates with a ``{split}`` field -> Layout.patterns."""
    return {
        split: tuple(template.replace("{split}", own) for template in templates) for split, own in names.items()
    }


def xtreme_layout(names: Mapping[str, str] | None = None) -> Layout:
    """XTREME ``{split}-{lang}.tsv``: text_a, text_b[, label], no header; split names train/dev/test."""
    names = names or {"train": "train", "validation": "dev", "test": "test"}
    patterns = _split_patterns(names, ("{split}-{lang}.tsv", "xtreme_format/{split}-{lang}.tsv"))

    def read(path: Path, language: str) -> list[Row]:
        return [(row[0], row[1], row[2] if len(row) == 3 else None) for row in read_tsv_columns(path, (2, 3))]

    return Layout("XTREME tsv", patterns, read, header_less=True)


def tsv_layout(
    name: str,
    patterns: Mapping[str, tuple[str, ...]],
    text_a: str,
    text_b: str | None,
    label: str,
    *,
    language_column: str | None = None,
    skip_malformed: bool = False,
) -> Layout:
    """A TSV with a header naming its columns; the label column may be absent (unlabelled test files).

    ``language_column`` selects the rows of one language from a file holding all of them (XNLI 1.0).
    """
    wanted = [c for c in (text_a, text_b, label, language_column) if c is not None]

    def read(path: Path, language: str) -> list[Row]:
        records = read_tsv_with_header(path, wanted, optional=[label], skip_malformed=skip_malformed, layout=name)
        if language_column is not None:
            records = [r for r in records if r[language_column] == language]
        return [(r[text_a], r[text_b] if text_b else None, r[label]) for r in records]

    return Layout(name, patterns, read)


def infersent_layout() -> Layout:
    """SNLI as InferSent distributes it: ``s1.{split}``, ``s2.{split}`` and ``labels.{split}``, one pair per line.

    The pattern finds the label file; the two sentence files lie beside it with the same suffix.
    """
    names = {"train": "train", "validation": "dev", "test": "test"}
    patterns = _split_patterns(names, ("infersent_format/labels.{split}", "labels.{split}"))

    def read(path: Path, language: str) -> list[Row]:
        columns = [_lines(path.with_name(prefix + path.suffix)) for prefix in ("s1", "s2", "labels")]
        if len({len(column) for column in columns}) != 1:
            counts = ", ".join(f"{prefix}{path.suffix} {len(c)}" for prefix, c in zip(("s1", "s2", "labels"), columns))
            raise CorruptDataError(f"{path.parent}: InferSent files differ in length ({counts}); re-download them")
        return list(zip(*columns))

    return Layout("InferSent s1/s2/labels", patterns, read)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataNotFoundError(f"'{path}' not found beside '{path.with_name('labels' + path.suffix)}'; the InferSent layout needs s1, s2 and labels files")
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def records_layout(
    name: str, patterns: Mapping[str, tuple[str, ...]], text_a: str, text_b: str | None, label: str
) -> Layout:
    """JSON lines or parquet (chosen by the file suffix) with named fields; the label may be absent."""
    wanted = [c for c in (text_a, text_b, label) if c is not None]

    def read(path: Path, language: str) -> list[Row]:
        reader = read_parquet if path.suffix == ".parquet" else read_jsonl
        records = reader(path, wanted, optional=[label])
        return [(r[text_a], r[text_b] if text_b else None, r[label]) for r in records]

    return Layout(name, patterns, read)


# --------------------------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------------------------

PER_LANGUAGE = "{lang}"  # HubSource.config value: one hub config per language (XNLI, PAWS-X)


@dataclass(frozen=True)
class HubSource:
    """Where a task lives on the Hugging Face hub and which columns hold what.

    ``drop_unlabelled``: the hub marks pairs without a gold label with -1 (SNLI, PAWS-X); those
    rows are dropped. It is off for GLUE, whose -1 marks a hidden test label.
    """

    path: str
    config: str | None
    splits: Mapping[str, str]
    text_a: str
    text_b: str | None
    label: str = "label"
    drop_unlabelled: bool = False

    def config_for(self, language: str) -> str | None:
        return language if self.config == PER_LANGUAGE else self.config

    def export_layout(self) -> Layout:
        """Hub data saved as files (``to_json``/``to_parquet``, or the hub repo's own parquet shards)."""
        if self.config == PER_LANGUAGE:
            templates = ("{lang}/{split}-*.parquet", "{lang}/{split}.parquet", "{lang}/{split}.jsonl",
                         "{split}-{lang}.parquet", "{split}-{lang}.jsonl")  # fmt: skip
        else:
            templates = tuple(
                f"{folder}{name}" for folder in ("", f"{self.config}/") for name in
                ("{split}-*.parquet", "{split}.parquet", "{split}.jsonl")
            )  # fmt: skip
        patterns = _split_patterns(self.splits, templates)
        return records_layout(f"{self.path} export (jsonl/parquet)", patterns, self.text_a, self.text_b, self.label)


def _read_hub(hub: HubSource, split: str, language: str, scheme: LabelScheme) -> list[PairExample]:
    config, hub_split = hub.config_for(language), hub.splits[split]
    name = f"{hub.path} ({config or 'default'}, {hub_split})"
    dataset = load_hub_dataset(hub.path, config, hub_split)
    columns = [c for c in (hub.text_a, hub.text_b, hub.label) if c is not None]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise CorruptDataError(f"{name} lacks column(s) {', '.join(missing)} (has {', '.join(dataset.column_names)})")
    table = dataset.select_columns(columns).to_dict()
    texts_b = table[hub.text_b] if hub.text_b else itertools.repeat(None)
    rows = zip(table[hub.text_a], texts_b, table[hub.label])
    where = lambda i: f"{name} row index {i}"  # noqa: E731
    return _to_examples(rows, scheme, where, pair=hub.text_b is not None, drop_unlabelled=hub.drop_unlabelled)


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairAdapter:
    """Reads one split of one language of a task from the hub or from local files (TaskSpec.adapter)."""

    hub: HubSource
    layouts: tuple[Layout, ...]
    scheme: LabelScheme
    pair: bool = True

    def __call__(self, spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[PairExample]:
        labels_file = spec.extra.get("labels_file")
        if data_dir is None:
            if labels_file:
                raise ConfigError(
                    f"labels_file applies to local XTREME tsv files; {local_data_hint(spec.name)}"
                )
            return _read_hub(self.hub, split, language, self.scheme)
        return self._read_local(spec, split, language, data_dir)

    @property
    def all_layouts(self) -> tuple[Layout, ...]:
        """The task's original layouts first, then hub exports."""
        return (*self.layouts, self.hub.export_layout())

    def data_files(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[Path]:
        """Every local file a read of this split may open (the data files and a gold-label file that applies).

        Raises ``DataNotFoundError`` as the read would: the pre-flight check and the evaluation cache's
        fingerprint both rely on this listing.
        """
        layout, paths = self._locate(spec, split, language, data_dir)
        labels = [data_dir / name for name in (spec.extra.get("labels_file"), spec.extra.get("test_labels_file"))
                  if name and layout.header_less and (data_dir / name).is_file()]  # fmt: skip
        return [*paths, *labels]

    def _locate(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> tuple[Layout, list[Path]]:
        """The first layout with files for this split under ``data_dir``, and those files."""
        return locate_files(self.all_layouts, spec.name, split, language, data_dir)

    def _read_local(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[PairExample]:
        layout, paths = self._locate(spec, split, language, data_dir)
        return self._read_files(spec, layout, paths, split, language, data_dir)

    def _read_files(
        self, spec: TaskSpec, layout: Layout, paths: list[Path], split: str, language: str, data_dir: Path
    ) -> list[PairExample]:
        examples: list[PairExample] = []
        for path in paths:
            rows, labels_path = layout.read(path, language), None
            if layout.header_less:
                rows, labels_path = _with_gold_labels(spec, rows, path, split, data_dir)
            elif spec.extra.get("labels_file"):
                raise ConfigError(f"labels_file applies to header-less XTREME tsv files, not to {path} ({layout.name})")
            where = lambda i, path=path: f"{path}, data row {i + 1}"  # noqa: E731
            # a label read from its own file is reported at its line there, not at the tsv row it was attached to
            label_where = (lambda i, labels=labels_path: f"{labels}:{i + 1}") if labels_path else where
            examples += _to_examples(rows, self.scheme, where, pair=self.pair, drop_unlabelled=False, label_where=label_where)
        return examples


def _with_gold_labels(spec: TaskSpec, rows: list[Row], path: Path, split: str, data_dir: Path) -> tuple[list[Row], Path | None]:
    """Attach a separate gold-label file to an unlabelled XTREME file, if one applies (and name it: None if none).

    An explicit ``labels_file`` (relative to data_dir or absolute) must exist and fit. The task's
    default ``test_labels_file`` (XNLI: ``DERIVED_test_labels.txt``) applies to ``test`` only, when present.
    """
    explicit = spec.extra.get("labels_file")
    default = spec.extra.get("test_labels_file") if split == spec.test_split else None
    labelled = any(label is not None for _, _, label in rows)
    if explicit:
        if labelled:
            raise ConfigError(f"{path} already has a label column; drop labels_file={explicit}")
        labels_path = data_dir / explicit
        if not labels_path.is_file():
            raise DataNotFoundError(
                f"labels_file not found: {labels_path}; give a path relative to data_dir or absolute"
            )
    elif default and not labelled and (data_dir / default).is_file():
        labels_path = data_dir / default
    else:
        return rows, None
    labels = read_label_file(labels_path)
    pairs = [[a, b] for a, b, _ in rows]
    attached = attach_labels(pairs, labels, rows_path=path, labels_path=labels_path)
    return [(a, b, label) for a, b, label in attached], labels_path


@dataclass(frozen=True)
class ConcatAdapter:
    """A task made of other tasks' splits, concatenated in order (ANLI = R1+R2+R3; ANLI+).

    With data_dir, each part reads ``data_dir/<subdir>`` when that folder exists, else data_dir itself
    (the original releases have distinct names, so SNLI, MultiNLI and ANLI can share one folder).
    """

    parts: tuple[tuple[str, str], ...]  # (task name, subdir)

    def __call__(self, spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[PairExample]:
        if spec.extra.get("labels_file"):
            raise ConfigError(
                f"labels_file does not apply to '{spec.name}', which concatenates {len(self.parts)} tasks"
            )
        examples: list[PairExample] = []
        for name, subdir in self.parts:
            examples += TASKS[name].load(split, language, self._part_dir(data_dir, subdir))
        return examples

    def data_files(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[Path]:
        """The files of every part (see ``PairAdapter.data_files``)."""
        return [path for name, subdir in self.parts
                for path in TASKS[name].data_files(split, language, self._part_dir(data_dir, subdir)) or []]  # fmt: skip

    @staticmethod
    def _part_dir(data_dir: Path | None, subdir: str) -> Path | None:
        if data_dir is not None and (data_dir / subdir).is_dir():
            return data_dir / subdir
        return data_dir


# --------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------

_GLUE_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_MNLI_HUB_SPLITS = {
    "train": "train",
    "validation": "validation_matched",
    "validation_mismatched": "validation_mismatched",
    "test": "test_matched",
    "test_mismatched": "test_mismatched",
}


def _in_dirs(folders: Sequence[str], names: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """{split: file name} -> {split: (name, folder/name, ...)}: a file at the top or in a known folder."""
    return {split: tuple(f"{folder}{name}" for folder in ("", *folders)) for split, name in names.items()}


def _mnli_adapter() -> PairAdapter:
    glue_names = {"train": "train.tsv", "validation": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv",
                  "test": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}  # fmt: skip
    multinli = {"train": "train", "validation": "dev_matched", "validation_mismatched": "dev_mismatched"}
    jsonl = {split: f"multinli_1.0_{name}.jsonl" for split, name in multinli.items()}
    txt = {split: f"multinli_1.0_{name}.txt" for split, name in multinli.items()}
    columns = ("sentence1", "sentence2", "gold_label")
    return PairAdapter(
        HubSource("nyu-mll/glue", "mnli", _MNLI_HUB_SPLITS, "premise", "hypothesis"),
        (
            tsv_layout("GLUE tsv", _in_dirs(["MNLI/"], glue_names), *columns),
            records_layout("MultiNLI 1.0 jsonl", _in_dirs(["multinli_1.0/"], jsonl), *columns),
            tsv_layout("MultiNLI 1.0 txt", _in_dirs(["multinli_1.0/"], txt), *columns),
        ),
        NLI,
    )


def _snli_adapter() -> PairAdapter:
    names = {"train": "train", "validation": "dev", "test": "test"}
    jsonl = {split: f"snli_1.0_{name}.jsonl" for split, name in names.items()}
    txt = {split: f"snli_1.0_{name}.txt" for split, name in names.items()}
    return PairAdapter(
        HubSource("stanfordnlp/snli", "plain_text", _GLUE_SPLITS, "premise", "hypothesis", drop_unlabelled=True),
        (
            records_layout("SNLI 1.0 jsonl", _in_dirs(["snli_1.0/"], jsonl), "sentence1", "sentence2", "gold_label"),
            tsv_layout("SNLI 1.0 txt", _in_dirs(["snli_1.0/"], txt), "sentence1", "sentence2", "gold_label"),
            infersent_layout(),
        ),
        NLI,
    )


def _anli_round_adapter(round_: int) -> PairAdapter:
    names = {"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"}
    hub_splits = {"train": f"train_r{round_}", "validation": f"dev_r{round_}", "test": f"test_r{round_}"}
    patterns = {split: (f"anli_v1.0/R{round_}/{name}", f"R{round_}/{name}") for split, name in names.items()}
    return PairAdapter(
        HubSource("facebook/anli", "plain_text", hub_splits, "premise", "hypothesis"),
        (records_layout("ANLI 1.0 jsonl", patterns, "context", "hypothesis", "label"),),
        NLI,
    )


def _qqp_adapter() -> PairAdapter:
    names = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    return PairAdapter(
        HubSource("nyu-mll/glue", "qqp", _GLUE_SPLITS, "question1", "question2"),
        (
            tsv_layout(
                "GLUE tsv", _in_dirs(["QQP/"], names), "question1", "question2", "is_duplicate", skip_malformed=True
            ),
        ),
        DUPLICATE,
    )


def _sst2_adapter() -> PairAdapter:
    names = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    return PairAdapter(
        HubSource("nyu-mll/glue", "sst2", _GLUE_SPLITS, "sentence", None),
        (tsv_layout("GLUE tsv", _in_dirs(["SST-2/"], names), "sentence", None, "label"),),
        SENTIMENT,
        pair=False,
    )


def _xnli_adapter() -> PairAdapter:
    original = {"validation": "xnli.dev.tsv", "test": "xnli.test.tsv"}
    mt_train = {"train": "multinli.train.{lang}.tsv"}
    return PairAdapter(
        HubSource("facebook/xnli", PER_LANGUAGE, _GLUE_SPLITS, "premise", "hypothesis"),
        (
            xtreme_layout(),
            tsv_layout("XNLI 1.0 tsv", _in_dirs(["XNLI-1.0/"], original), "sentence1", "sentence2", "gold_label",
                       language_column="language"),
            tsv_layout("XNLI-MT 1.0 tsv", _in_dirs(["XNLI-MT-1.0/multinli/", "multinli/"], mt_train),
                       "premise", "hypo", "label"),
        ),  # fmt: skip
        NLI,
    )


def _pawsx_adapter() -> PairAdapter:
    # x-final: English has train.tsv, the other languages the machine-translated translated_train.tsv.
    x_final = {
        "train": ("x-final/{lang}/train.tsv", "x-final/{lang}/translated_train.tsv", "{lang}/train.tsv",
                  "{lang}/translated_train.tsv"),
        "validation": ("x-final/{lang}/dev_2k.tsv", "{lang}/dev_2k.tsv"),
        "test": ("x-final/{lang}/test_2k.tsv", "{lang}/test_2k.tsv"),
    }  # fmt: skip
    hf_tsv = _split_patterns(_GLUE_SPLITS, ("hf_format_labeled/{split}-{lang}.tsv",))
    return PairAdapter(
        HubSource("google-research-datasets/paws-x", PER_LANGUAGE, _GLUE_SPLITS, "sentence1", "sentence2",
                  drop_unlabelled=True),
        (
            tsv_layout("PAWS-X x-final tsv", x_final, "sentence1", "sentence2", "label"),
            tsv_layout("Hugging Face tsv", hf_tsv, "sentence1", "sentence2", "label"),
            xtreme_layout(),
        ),
        PARAPHRASE,
    )  # fmt: skip


def _english_task(name: str, adapter: Any, labels: tuple[str, ...], **fields: Any) -> TaskSpec:
    fields.setdefault("splits", ("train", "validation", "test"))
    fields.setdefault("metric", "accuracy")
    family = Family.PAIR_CLASSIFICATION
    return TaskSpec(name=name, family=family, languages=(langs.ENGLISH,), adapter=adapter, labels=labels, **fields)


def _builtin_tasks() -> list[TaskSpec]:
    anli_rounds = [
        _english_task(f"anli_r{r}", _anli_round_adapter(r), NLI_LABELS, head="nli", hub_id="facebook/anli",
                      description=f"Adversarial NLI, round {r}")
        for r in (1, 2, 3)
    ]  # fmt: skip
    return [
        _english_task("mnli", _mnli_adapter(), NLI_LABELS, head="nli", hub_id="nyu-mll/glue",
                      splits=tuple(_MNLI_HUB_SPLITS), description="MultiNLI (GLUE); validation = matched"),
        _english_task("snli", _snli_adapter(), NLI_LABELS, head="nli", hub_id="stanfordnlp/snli",
                      description="SNLI; pairs without a gold label dropped"),
        *anli_rounds,
        _english_task("anli", ConcatAdapter(tuple((f"anli_r{r}", "anli") for r in (1, 2, 3))), NLI_LABELS,
                      head="nli", hub_id="facebook/anli", description="Adversarial NLI, rounds 1-3 concatenated"),
        _english_task("anli_plus", ConcatAdapter((("snli", "snli"), ("mnli", "mnli"), ("anli_r1", "anli"),
                                                  ("anli_r2", "anli"), ("anli_r3", "anli"))),
                      NLI_LABELS, head="nli", splits=("train", "validation"), test_split="validation",
                      description="ANLI+: SNLI + MNLI + ANLI R1-R3 concatenated, one NLI head "
                                  "(validation concatenates the dev sets, MNLI matched)"),
        _english_task("qqp", _qqp_adapter(), DUPLICATE.names, metric="accuracy_f1", hub_id="nyu-mll/glue",
                      description="Quora Question Pairs (GLUE); accuracy and F1"),
        _english_task("sst2", _sst2_adapter(), SENTIMENT.names, hub_id="nyu-mll/glue",
                      description="SST-2 (GLUE), single sentence"),
        TaskSpec(name="xnli", family=Family.PAIR_CLASSIFICATION, languages=langs.XNLI,
                 splits=("train", "validation", "test"), metric="accuracy", adapter=_xnli_adapter(),
                 labels=NLI_LABELS, head="nli", hub_id="facebook/xnli",
                 description="XNLI; trained on English (MNLI), evaluated zero-shot in 15 languages",
                 extra={"test_labels_file": "DERIVED_test_labels.txt"}),
        TaskSpec(name="pawsx", family=Family.PAIR_CLASSIFICATION, languages=langs.PAWSX,
                 splits=("train", "validation", "test"), metric="accuracy", adapter=_pawsx_adapter(),
                 labels=PARAPHRASE.names, hub_id="google-research-datasets/paws-x",
                 description="PAWS-X paraphrase identification; English train, 7 evaluation languages"),
    ]  # fmt: skip


TASKS: dict[str, TaskSpec] = {spec.name: register(spec) for spec in _builtin_tasks()}


def load_pair_examples(
    task: str | TaskSpec,
    split: str,
    language: str,
    data_dir: str | Path | None = None,
    *,
    labels_file: str | Path | None = None,
) -> list[PairExample]:
    """Read one split of one language; ``labels_file`` attaches gold labels to an unlabelled XTREME file.

    ``labels_file`` is relative to ``data_dir`` or absolute, with one label per line in file order.
    """
    spec = task if isinstance(task, TaskSpec) else _lookup(task)
    if labels_file is not None:
        spec = dataclasses.replace(spec, extra={**spec.extra, "labels_file": str(labels_file)})
    return spec.load(split, language, data_dir)


def _lookup(name: str) -> TaskSpec:
    if name in TASKS:
        return TASKS[name]

    return get_task(name)


# ----------------------------------------------------------------------------------------------
# The family: features and head


class PairClassificationOps(FamilyOps):
    """Single sentences or sentence pairs, classified from the first token."""

    family = Family.PAIR_CLASSIFICATION

    def featurize(self, spec, examples, tokenizer, max_length):
        singles = [i for i, ex in enumerate(examples) if ex.text_b is None]
        pairs = [i for i, ex in enumerate(examples) if ex.text_b is not None]
        ids: list[list[int] | None] = [None] * len(examples)
        if singles:
            encoded = tokenizer([examples[i].text_a for i in singles], truncation=True, max_length=max_length)
            for i, row in zip(singles, encoded["input_ids"]):
                ids[i] = row
        if pairs:
            encoded = tokenizer(
                [examples[i].text_a for i in pairs],
                [examples[i].text_b for i in pairs],
                truncation="longest_first",
                max_length=max_length,
            )
            for i, row in zip(pairs, encoded["input_ids"]):
                ids[i] = row
        return [{"input_ids": row, "label": ex.label} for row, ex in zip(ids, examples)]

    def collate(self, features, tokenizer, generator=None):
        input_ids, attention_mask = pad_ids([f["input_ids"] for f in features], tokenizer.pad_token_id)
        labels = torch.tensor([f["label"] for f in features], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def predict(self, logits, batch):
        return logits.argmax(dim=-1).tolist()

    def gold(self, features):
        return [f["label"] for f in features]


class ClassificationHead(nn.Module):
    """Sentence(-pair) classification, as XLM-R's own classification head.

    ``pooling="cls"`` reads the first token (``<s>``), the reference implementation's choice;
    ``"mean"`` averages the non-padding tokens, which helps encoders whose first token was never
    trained as a summary (the embedded default's tiny MLM-only model, multilingual-e5) and is the
    only choice for the mT5 encoder, which has no CLS token (``fastxlt.models.family``).
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, pooling: str = "cls") -> None:
        super().__init__()
        self.pooling = check_head_pooling(pooling)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        pooled = self.dropout(pool(sequence_output, attention_mask, self.pooling))
        pooled = self.dropout(torch.tanh(self.dense(pooled)))
        logits = self.out_proj(pooled)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return loss, logits


def classification_head(spec: TaskSpec, encoder: Any, pooling: str) -> ClassificationHead:
    config = encoder.config
    return ClassificationHead(config.hidden_size, spec.num_labels, head_dropout(config), pooling)


FAMILY_OPS[Family.PAIR_CLASSIFICATION] = PairClassificationOps()  # what features.ops_for returns for these tasks
register_head(Family.PAIR_CLASSIFICATION, classification_head)  # what models.heads.make_head builds for them
