"""Token tagging tasks: UD-POS, PAN-X / WikiANN NER and CCG supertagging.

Registered tasks (``Family.TOKEN_TAGGING``, metric ``seqeval_f1`` as in XTREME, for POS too):

======  ==========================================  =========  ==========================================
task    hub (``datasets``)                          languages  labels
======  ==========================================  =========  ==========================================
udpos   google/xtreme, ``udpos.<English name>``     33 (+5)    the 17 UPOS tags (hub order, alphabetical)
panx    unimelb-nlp/wikiann, ``<lang>``             40 (+8)    O B-PER I-PER B-ORG I-ORG B-LOC I-LOC
ccg     none (CCGbank is licensed)                  en         the supertags of the training file
======  ==========================================  =========  ==========================================

``languages: all`` is XTREME's list; XTREME-R's additions (in brackets: udpos lt, pl, ro, uk, wo; panx az, gu, lt,
pa, pl, qu, ro, uk) are read when named (``extra_languages``): from local files for udpos (the hub's XTREME copy has
only XTREME's 33), from the hub or local files for panx.

Splits are ``train``, ``validation``, ``test``. Local layouts, tried in this order under ``data_dir``:

- **CoNLL-U** (udpos): every ``**/<lang>_*-ud-<split>.conllu`` below data_dir (split names train/dev/test),
  i.e. every treebank of the language in a UD release, concatenated in file-name order, as XTREME merges
  the treebanks of a language. FORM (column 2) is the word, UPOS (column 4) the tag; multiword-token
  ranges (``1-2``) and empty nodes (``8.1``) are skipped, as XTREME's preprocessing does.
- **XTREME tsv** (udpos, panx): ``<split>-<lang>.tsv`` (also under ``xtreme_format/`` or ``<lang>/``),
  one ``word<TAB>tag`` per line, a blank line between sentences. Test files whose tags XTREME stripped
  (one column) give unlabelled examples. The raw PAN-X release (``panx_dataset/<lang>/<split>``, or
  ``<lang>/<split>``) prefixes every word with ``<lang>:``; the prefix is removed.
- **hub export** (udpos, panx): ``<lang>/<split>.jsonl`` / ``.parquet`` with the hub's columns
  (``tokens`` + ``pos_tags`` / ``ner_tags``, tags as hub class ids or as strings).
- **CCG** (ccg): ``<split>.tsv`` (or ``ccg.<split>``, split names train/dev/test) in the CoNLL-style
  ``word<TAB>supertag`` layout above, one word per line, a blank line between sentences; derive it from
  CCGbank's AUTO files with any converter. The label set is the sorted set of supertags of the training
  file of the same ``data_dir`` (read once and cached); dev/test words whose supertag never occurs in
  training are ignored by the loss and can only be scored as errors.

Features. Every word is tokenised on its own (one batched tokenizer call), so that each word's subwords
are known; this equals the fast tokenizer's ``is_split_into_words=True`` encoding, except that a word
with no subword at all (e.g. a lone zero-width space) gets ``<unk>`` instead of vanishing, as XTREME does.
The first subword of each word carries the word's tag; other subwords and special tokens carry -100,
ignored by the loss. Sentences longer than ``max_length`` are cut into consecutive windows of whole words
(XTREME's preprocessing also splits long sentences rather than truncating them), so every word gets a
prediction; ``decode`` stitches the windows back into one tag per word. Only a single word with more
subwords than a window holds is truncated (its first subword, which carries the prediction, is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.tasks import languages as langs
from fastxlt.tasks.base import Family, TaskSpec, register
from fastxlt.tasks.features import FAMILY_OPS, FamilyOps, Feature, pad_ids
from fastxlt.tasks.head_registry import head_dropout, register_head
from fastxlt.tasks.readers import first_existing, load_hub_dataset, locate_files, read_jsonl, read_parquet, utf8_error

IGNORE = -100  # label of subwords that are not the first of a word, and of special tokens

UPOS_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
             "PUNCT", "SCONJ", "SYM", "VERB", "X")  # fmt: skip
CONLLU_IDS = (("word", re.compile(r"[1-9][0-9]*")), ("range", re.compile(r"[1-9][0-9]*-[1-9][0-9]*")),
              ("empty", re.compile(r"[0-9]+\.[1-9][0-9]*")))  # CoNLL-U column 1 (an empty node may follow word 0)
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

# google/xtreme names its udpos configs by the English language name.
UDPOS_HUB_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "kk": "Kazakh", "ko": "Korean", "mr": "Marathi", "nl": "Dutch", "pt": "Portuguese", "ru": "Russian",
    "ta": "Tamil", "te": "Telugu", "th": "Thai", "tl": "Tagalog", "tr": "Turkish", "ur": "Urdu",
    "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese",
}  # fmt: skip

_FILE_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
_HUB_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


@dataclass(frozen=True)
class TaggedExample:
    """A sentence as words and one tag per word; ``tags`` is None when the file has no gold tags."""

    words: tuple[str, ...]
    tags: tuple[str, ...] | None


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _file_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataNotFoundError(f"tagging file not found: {path}; check data_dir")
    try:
        return path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as error:
        raise utf8_error(path, error) from None


def _check_word(path: Path, number: int, word: str) -> str:
    """A word must have visible text: an empty one means a broken line, and would be tagged as nothing."""
    if not word.strip():
        raise CorruptDataError(f"{path}:{number}: empty word; every token line needs its word (fix or delete the line)")
    return word


def _is_separator(line: str) -> bool:
    """A sentence break: an empty line (spaces allowed). A line holding a tab is a token line, even if blank."""
    return not line.strip() and "\t" not in line


def read_conllu(path: str | Path) -> list[TaggedExample]:
    """Words (FORM) and UPOS tags of every sentence of a CoNLL-U file; comments, ranges and empty nodes skipped."""
    path = Path(path)
    sentences: list[TaggedExample] = []
    words: list[str] = []
    tags: list[str] = []
    block = 0  # lines of the current sentence block, comments included
    for number, line in enumerate(_file_lines(path), start=1):
        line = line.rstrip("\r")
        if _is_separator(line):
            if words:
                sentences.append(TaggedExample(tuple(words), tuple(tags)))
            elif block:
                raise CorruptDataError(f"{path}:{number - 1}: sentence without words; delete its lines or restore its tokens")
            words, tags, block = [], [], 0
            continue
        block += 1
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise CorruptDataError(f"{path}:{number}: expected 10 tab-separated CoNLL-U columns, found {len(fields)}")
        if _conllu_id(path, number, fields[0]) != "word":
            continue  # a multiword-token range or an empty node: not a word of the tagged sequence
        words.append(_check_word(path, number, fields[1]))
        tags.append(_check_upos(path, number, fields[3]))
    if words:
        sentences.append(TaggedExample(tuple(words), tuple(tags)))
    elif block:
        raise CorruptDataError(f"{path}: the last sentence has no words; delete its lines or restore its tokens")
    return sentences


def _conllu_id(path: Path, number: int, value: str) -> str:
    """'word' (``3``), 'range' (``3-4``, a multiword token) or 'empty' (``3.1``, an empty node); else refused."""
    for kind, pattern in CONLLU_IDS:
        if pattern.fullmatch(value):
            return kind
    raise CorruptDataError(f"{path}:{number}: ID {value!r} is not a CoNLL-U word index (3), range (3-4) or empty node "
                           "(3.1); the line is not CoNLL-U: fix it or re-download the treebank")


def _check_upos(path: Path, number: int, tag: str) -> str:
    """A UPOS tag (column 4) must be one of the 17: another value means a wrong column or file, found here with its line."""
    if tag not in UPOS_TAGS:
        raise CorruptDataError(f"{path}:{number}: UPOS tag {tag!r} is not one of the 17 UPOS tags "
                               f"({', '.join(UPOS_TAGS)}); fix the line or use the treebank's release file")
    return tag


def read_token_tag_file(path: str | Path, prefix: str | None = None) -> list[TaggedExample]:
    """``word<TAB>tag`` lines (or ``word`` alone: unlabelled), blank lines between sentences.

    ``prefix`` (e.g. ``"en:"``, the raw PAN-X release) is removed from words that start with it. The first
    line fixes whether the file is labelled; a file mixing one- and two-column lines is corrupt.
    """
    path = Path(path)
    sentences: list[TaggedExample] = []
    words: list[str] = []
    tags: list[str] = []
    columns: int | None = None
    for number, line in enumerate(_file_lines(path), start=1):
        line = line.rstrip("\r")
        if _is_separator(line):
            if words:
                sentences.append(TaggedExample(tuple(words), tuple(tags) if columns == 2 else None))
                words, tags = [], []
            continue
        fields = line.split("\t")
        if columns is None:
            if len(fields) not in (1, 2):
                raise CorruptDataError(f"{path}:{number}: expected word<TAB>tag (or a word alone), found {len(fields)} columns")
            columns = len(fields)
        elif len(fields) != columns:
            raise CorruptDataError(f"{path}:{number}: expected {columns} tab-separated column(s) like line 1, found {len(fields)}")
        word = fields[0]
        if prefix and word.startswith(prefix):
            word = word[len(prefix):]
        words.append(_check_word(path, number, word))
        if columns == 2:
            if not fields[1]:
                raise CorruptDataError(f"{path}:{number}: empty tag; every word needs a tag")
            tags.append(fields[1])
    if words:
        sentences.append(TaggedExample(tuple(words), tuple(tags) if columns == 2 else None))
    return sentences


# --------------------------------------------------------------------------------------------
# Layouts and the hub
# --------------------------------------------------------------------------------------------

FileReader = Callable[[Path, str], list[TaggedExample]]  # (file, language) -> sentences


@dataclass(frozen=True)
class TagLayout:
    """A published layout: path patterns per split (``{lang}``, ``{split}``; ``**``/``*`` glob) and a reader."""

    name: str
    patterns: tuple[str, ...]
    read: FileReader
    split_names: Mapping[str, str] = field(default_factory=lambda: dict(_FILE_SPLITS))

    def find(self, data_dir: Path, split: str, language: str) -> tuple[list[Path], list[str]]:
        own = self.split_names.get(split)
        if own is None:
            return [], []
        tried = [pattern.format(lang=language, split=own) for pattern in self.patterns]
        return first_existing(data_dir, tried), tried


def _conllu_layout() -> TagLayout:
    return TagLayout("CoNLL-U (UD release)", ("**/{lang}_*-ud-{split}.conllu",), lambda path, lang: read_conllu(path))


def _xtreme_layout() -> TagLayout:
    patterns = ("{split}-{lang}.tsv", "xtreme_format/{split}-{lang}.tsv", "{lang}/{split}-{lang}.tsv")
    return TagLayout("XTREME tsv", patterns, lambda path, lang: read_token_tag_file(path))


def _panx_raw_layout() -> TagLayout:
    return TagLayout(
        "PAN-X release (lang:word<TAB>tag)", ("panx_dataset/{lang}/{split}", "{lang}/{split}"),
        lambda path, lang: read_token_tag_file(path, prefix=f"{lang}:"),
    )


def _export_layout(tokens: str, tags: str, labels: tuple[str, ...]) -> TagLayout:
    patterns = ("{lang}/{split}-*.parquet", "{lang}/{split}.parquet", "{lang}/{split}.jsonl")

    def read(path: Path, language: str) -> list[TaggedExample]:
        reader = read_parquet if path.suffix == ".parquet" else read_jsonl
        rows = reader(path, [tokens, tags], optional=[tags])
        return _records_to_examples(rows, tokens, tags, labels, str(path))

    return TagLayout("hub export (jsonl/parquet)", patterns, read, split_names=_HUB_SPLITS)


def _records_to_examples(
    rows: Sequence[Mapping[str, Any]], tokens: str, tags: str, names: Sequence[str], where: str
) -> list[TaggedExample]:
    """Rows with a token list and a tag list (class ids into ``names``, or strings) -> examples."""
    examples = []
    for i, row in enumerate(rows):
        words, row_tags = row[tokens], row[tags]
        if not words:
            raise CorruptDataError(f"{where} row {i}: a sentence without tokens; drop the row or restore its tokens")
        if any(not isinstance(word, str) or not word.strip() for word in words):
            raise CorruptDataError(f"{where} row {i}: an empty token; every token needs its text")
        if row_tags is None:
            examples.append(TaggedExample(tuple(words), None))
            continue
        if len(row_tags) != len(words):
            raise CorruptDataError(f"{where} row {i}: {len(words)} tokens but {len(row_tags)} tags")
        try:
            converted = tuple(names[t] if isinstance(t, (int, np.integer)) else str(t) for t in row_tags)
        except IndexError:
            raise CorruptDataError(f"{where} row {i}: tag id out of range 0..{len(names) - 1}") from None
        examples.append(TaggedExample(tuple(words), converted))
    return examples


@dataclass(frozen=True)
class TagHub:
    """A hub dataset: ``config`` may contain ``{lang}`` / ``{name}`` (an entry of ``names``)."""

    path: str
    config: str
    tokens: str
    tags: str
    names: Mapping[str, str] | None = None

    def config_for(self, language: str) -> str:
        return self.config.format(lang=language, name=(self.names or {}).get(language, language))


def _read_hub(hub: TagHub, split: str, language: str, labels: tuple[str, ...]) -> list[TaggedExample]:
    config = hub.config_for(language)
    name = f"{hub.path} ({config}, {split})"
    dataset = load_hub_dataset(hub.path, config, _HUB_SPLITS[split])
    missing = [c for c in (hub.tokens, hub.tags) if c not in dataset.column_names]
    if missing:
        raise CorruptDataError(f"{name} lacks column(s) {', '.join(missing)} (has {', '.join(dataset.column_names)})")
    inner = getattr(dataset.features[hub.tags], "feature", None)
    names = list(getattr(inner, "names", None) or labels)
    table = dataset.select_columns([hub.tokens, hub.tags]).to_dict()
    rows = [{hub.tokens: w, hub.tags: t} for w, t in zip(table[hub.tokens], table[hub.tags])]
    return _records_to_examples(rows, hub.tokens, hub.tags, names, name)


@dataclass(frozen=True)
class TaggingAdapter:
    """Reads one split of one language from the hub (``hub``) or from the first local layout found."""

    hub: TagHub | None
    layouts: tuple[TagLayout, ...]

    def __call__(self, spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[TaggedExample]:
        if data_dir is None:
            if self.hub is None:
                raise DataNotFoundError(
                    f"task '{spec.name}' has no hub dataset; set data: {{{spec.name}: DIR}} to a folder of local files "
                    "(see fastxlt/tasks/tagging.py for the layout)"
                )
            return _read_hub(self.hub, split, language, spec.labels)
        return self.read_local(spec, split, language, data_dir)

    def read_local(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[TaggedExample]:
        layout, files = self._locate(spec, split, language, data_dir)
        return [example for path in files for example in layout.read(path, language)]

    def data_files(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[Path]:
        """Every local file a read of this split opens."""
        return self._locate(spec, split, language, data_dir)[1]

    def _locate(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> tuple[TagLayout, list[Path]]:
        """The first layout with files for this split under ``data_dir``, and those files."""
        return locate_files(self.layouts, spec.name, split, language, data_dir)


# --------------------------------------------------------------------------------------------
# CCG: the label set comes from the training file
# --------------------------------------------------------------------------------------------

_TRAINING_TAGS: dict[tuple[str, int], tuple[str, ...]] = {}


@dataclass(frozen=True)
class CcgAdapter(TaggingAdapter):
    """Local CCG files only; records the training file's supertag set as the task's labels."""

    def __call__(self, spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[TaggedExample]:
        if data_dir is None:
            return super().__call__(spec, split, language, data_dir)
        examples = self.read_local(spec, split, language, data_dir)
        train = examples if split == "train" else None
        spec.extra["resolved_labels"] = self.training_tags(spec, data_dir, train)
        return examples

    def data_files(self, spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[Path]:
        """The split's files plus the training file, whose supertags are the label set."""
        files = super().data_files(spec, split, language, data_dir)
        if split != "train":
            files += super().data_files(spec, "train", spec.train_language, data_dir)
        return files

    def training_tags(self, spec: TaskSpec, data_dir: Path, train: list[TaggedExample] | None) -> tuple[str, ...]:
        files, tried = self.layouts[0].find(data_dir, "train", spec.train_language)
        if not files:
            raise DataNotFoundError(
                f"task '{spec.name}' takes its supertag set from its training file; none under {data_dir} "
                f"(looked for {', '.join(tried)})"
            )
        key = (str(files[0].resolve()), files[0].stat().st_mtime_ns)
        if key not in _TRAINING_TAGS:
            if train is None:
                train = self.read_local(spec, "train", spec.train_language, data_dir)
            tags = sorted({tag for example in train for tag in (example.tags or ())})
            if not tags:
                raise CorruptDataError(f"{files[0]} has no supertags; expected word<TAB>supertag lines")
            _TRAINING_TAGS[key] = tuple(tags)
        return _TRAINING_TAGS[key]


def tag_names(spec: TaskSpec) -> tuple[str, ...]:
    """The task's tags in label-id order: fixed at registration, or learnt from the training file (CCG)."""
    if spec.labels:
        return spec.labels
    resolved = spec.extra.get("resolved_labels")
    if not resolved:
        raise ConfigError(
            f"task '{spec.name}' takes its tag set from its training file; load its train split first "
            f"(set data: {{{spec.name}: DIR}})"
        )
    return tuple(resolved)


# --------------------------------------------------------------------------------------------
# Features, predictions and decoding
# --------------------------------------------------------------------------------------------


def _special_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a single sequence gets before and after its subwords (``<s>`` / ``</s>`` for XLM-R)."""
    bare = tokenizer(["a"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    full = tokenizer(["a"], is_split_into_words=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ValueError("cannot locate the text inside the tokenizer's special-token template")


def word_pieces(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """Subword ids of each word, tokenised on its own; a word without any subword becomes ``<unk>``."""
    if not words:
        return []
    pieces = tokenizer(list(words), add_special_tokens=False)["input_ids"]
    return [ids if ids else [tokenizer.unk_token_id] for ids in pieces]


def word_windows(lengths: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) word ranges whose subword totals fit ``budget`` (a longer word alone)."""
    windows, start, used = [], 0, 0
    for i, length in enumerate(lengths):
        if used and used + length > budget:
            windows.append((start, i))
            start, used = i, 0
        used += length
    if start < len(lengths) or not windows:
        windows.append((start, len(lengths)))
    return windows


class TokenTaggingOps(FamilyOps):
    """Words -> subwords with the tag on each word's first subword; per-token logits -> one tag per word."""

    family = Family.TOKEN_TAGGING

    def featurize(self, spec, examples, tokenizer, max_length):
        names = tag_names(spec)
        index = {tag: i for i, tag in enumerate(names)}
        strict = bool(spec.labels)  # a fixed tag set: an unknown tag means a wrong file, not an unseen tag
        prefix, suffix = _special_template(tokenizer)
        budget = max_length - len(prefix) - len(suffix)
        if budget < 1:
            raise ConfigError(f"max_length {max_length} leaves no room for words next to the special tokens")
        all_pieces = word_pieces(tokenizer, [word for example in examples for word in example.words])
        features: list[Feature] = []
        offset = 0
        for number, example in enumerate(examples):
            pieces = all_pieces[offset : offset + len(example.words)]
            offset += len(example.words)
            if example.tags is not None and len(example.tags) != len(example.words):
                raise CorruptDataError(f"{spec.name} sentence {number}: {len(example.words)} words but {len(example.tags)} tags")
            for start, end in word_windows([len(p) for p in pieces], budget):
                ids, labels, positions = list(prefix), [IGNORE] * len(prefix), []
                for w in range(start, end):
                    word_ids = pieces[w][:budget]
                    positions.append(len(ids))
                    labels.append(self._label(spec, example, w, index, strict))
                    labels.extend([IGNORE] * (len(word_ids) - 1))
                    ids.extend(word_ids)
                ids.extend(suffix)
                labels.extend([IGNORE] * len(suffix))
                features.append({"input_ids": ids, "labels": labels, "example": number, "first_word": start,
                                 "word_positions": positions, "tag_names": names})  # fmt: skip
        return features

    @staticmethod
    def _label(spec: TaskSpec, example: TaggedExample, word: int, index: dict[str, int], strict: bool) -> int:
        if example.tags is None:
            return IGNORE
        tag = example.tags[word]
        if tag in index:
            return index[tag]
        if strict:
            raise CorruptDataError(f"task '{spec.name}': tag '{tag}' is not one of its labels ({', '.join(index)})")
        return IGNORE

    def collate(self, features, tokenizer, generator=None):
        input_ids, attention_mask = pad_ids([f["input_ids"] for f in features], tokenizer.pad_token_id)
        labels = torch.full(input_ids.shape, IGNORE, dtype=torch.long)
        for row, feature in enumerate(features):
            labels[row, : len(feature["labels"])] = torch.tensor(feature["labels"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def predict(self, logits, batch):
        """Per feature, the arg-max tag id of every real (non-padding) token."""
        best = logits.argmax(dim=-1).cpu()
        lengths = batch["attention_mask"].sum(dim=-1).tolist()
        return [best[row, :length].tolist() for row, length in enumerate(lengths)]

    def gold(self, features):
        """Per feature, the gold tag of each of its words (None where the tag is unknown or absent)."""
        return [
            [f["tag_names"][f["labels"][p]] if f["labels"][p] != IGNORE else None for p in f["word_positions"]]
            for f in features
        ]

    def decode(self, examples, features, outputs):
        """Windows -> one predicted tag per word of each sentence; gold tags straight from the examples."""
        predicted: list[list[str | None]] = [[None] * len(example.words) for example in examples]
        for feature, output in zip(features, outputs):
            names, row, first = feature["tag_names"], predicted[feature["example"]], feature["first_word"]
            for j, position in enumerate(feature["word_positions"]):
                row[first + j] = names[output[position]]
        for number, row in enumerate(predicted):
            if any(tag is None for tag in row):
                raise ValueError(f"sentence {number} has words without a feature; decode the features of these examples")
        gold = [list(example.tags) if example.tags is not None else None for example in examples]
        return predicted, gold

    @staticmethod
    def length(feature: Feature) -> int:
        return len(feature["input_ids"])


# --------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------


def _builtin_tasks() -> list[TaskSpec]:
    splits = ("train", "validation", "test")
    return [
        TaskSpec(name="udpos", family=Family.TOKEN_TAGGING, languages=langs.UDPOS, splits=splits,
                 metric="seqeval_f1", labels=UPOS_TAGS, hub_id="google/xtreme",
                 extra_languages=tuple(sorted(set(langs.XTREME_R_UDPOS) - set(langs.UDPOS))),
                 adapter=TaggingAdapter(TagHub("google/xtreme", "udpos.{name}", "tokens", "pos_tags", UDPOS_HUB_NAMES),
                                        (_conllu_layout(), _xtreme_layout(), _export_layout("tokens", "pos_tags", UPOS_TAGS))),
                 description="Universal Dependencies POS tagging (XTREME UD-POS); seqeval F1"),
        TaskSpec(name="panx", family=Family.TOKEN_TAGGING, languages=langs.PANX, splits=splits,
                 metric="seqeval_f1", labels=PANX_TAGS, hub_id="unimelb-nlp/wikiann",
                 extra_languages=tuple(sorted(set(langs.XTREME_R_PANX) - set(langs.PANX))),
                 adapter=TaggingAdapter(TagHub("unimelb-nlp/wikiann", "{lang}", "tokens", "ner_tags"),
                                        (_xtreme_layout(), _panx_raw_layout(), _export_layout("tokens", "ner_tags", PANX_TAGS))),
                 description="PAN-X / WikiANN named entities (Rahimi et al. 2019 splits); seqeval F1"),
        TaskSpec(name="ccg", family=Family.TOKEN_TAGGING, languages=(langs.ENGLISH,), splits=splits,
                 metric="seqeval_f1", labels=(),
                 adapter=CcgAdapter(None, (TagLayout("CCG word<TAB>supertag", ("{split}.tsv", "ccg.{split}"),
                                                     lambda path, lang: read_token_tag_file(path)),)),
                 description="CCG supertagging from a user-supplied CCGbank conversion (word<TAB>supertag)"),
    ]  # fmt: skip


TASKS: dict[str, TaskSpec] = {spec.name: register(spec) for spec in _builtin_tasks()}
class TokenTaggingHead(nn.Module):
    """One tag distribution per token (the reference ``...ForTokenClassification``: dropout + linear).

    ``labels`` is (batch, tokens) with -100 on every token that is not the first subword of a word;
    cross-entropy ignores them. Returns logits of shape (batch, tokens, tags).
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits = self.classifier(self.dropout(sequence_output))
        if labels is None:
            return None, logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return loss, logits


def tagging_head(spec: TaskSpec, encoder: Any, pooling: str) -> TokenTaggingHead:
    config = encoder.config
    return TokenTaggingHead(config.hidden_size, len(tag_names(spec)), head_dropout(config))


FAMILY_OPS[Family.TOKEN_TAGGING] = TokenTaggingOps()  # what features.ops_for returns for these tasks
register_head(Family.TOKEN_TAGGING, tagging_head)  # what models.heads.make_head builds for them

__all__ = ["TaggedExample", "TokenTaggingOps", "read_conllu", "read_token_tag_file", "tag_names", "word_pieces",
           "word_windows", "IGNORE", "UPOS_TAGS", "PANX_TAGS", "TASKS"]  # fmt: skip
