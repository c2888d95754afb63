"""Mewsli-X (XTREME-R): retrieve the WikiData entity a WikiNews mention refers to, by its description.

Given a mention in a WikiNews article (11 languages), rank the fixed candidate set of ~1M entities,
each represented by its Wikipedia description in one of 50 languages; score MRR@20 (one gold entity,
so equal to mAP@20; ``fastxlt.retrieval.map_at_k``), per mention language and macro-averaged.

Files, as XTREME-R's ``download_data.sh`` (``download_mewslix``) leaves them in ``download/mewslix/``,
copied from the Mewsli-X tool's ``mewsli_x/output/dataset/`` (both layouts are read, and ``data_dir``
itself): ``candidate_set_entities.jsonl`` (one entity per line: ``entity_id``, ``title``,
``description``, ``sentence_spans``, ``description_language``, ``description_url``),
``wikinews_mentions-{dev,test}.jsonl`` (one article per line: ``context`` {``document_id``,
``language``, ``text``, ``sentence_spans``, ...} and its ``mentions`` [{``example_id``,
``mention_span`` {``start``, ``end``, ``text``}, ``entity_id``}]) and ``wikipedia_pairs-{train,dev}.jsonl``
(English fine-tuning pairs: ``contextual_mention`` {``context``, ``mention``} and ``entity``). The
released ``wikinews_mentions_no_text-*`` files lack the article text (``get-mewsli-x.sh`` restores it):
they are refused with a one-line error.

Inputs follow XTREME-R's baseline preprocessing (``third_party/utils_mewslix.py``): a mention is its
sentence (the first sentence span that holds the whole mention) with the mention marked as
``{ mention }``, any braces already in the sentence turned into parentheses, and the mention repeated
in front (``"Smith: The verdict came back for { Smith }, who ..."``); an entity is its description's
sentences joined by spaces. Both: newlines become spaces, then one pass turns double spaces into single.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.retrieval.dual_encoder import DEV_METRIC, RetrievalExample, load_dual_encoder
from fastxlt.retrieval.map_at_k import K, retrieval_average_precision
from fastxlt.tasks.base import Family, TaskSpec, register
from fastxlt.tasks.languages import XTREME_R_MEWSLIX

TASK = "mewsli-x"
METRIC = f"map@{K}"
LANGUAGES = XTREME_R_MEWSLIX  # the 11 WikiNews mention languages
CANDIDATES_FILE = "candidate_set_entities.jsonl"
LAYOUT_FOLDERS = (".", "mewslix", "mewsli_x/output/dataset")
SPLITS = {"dev": "dev", "validation": "dev", "test": "test"}
_MARKED = re.compile(r"\{(.*?)\}")  # braces already in the text, escaped as parentheses


@dataclass(frozen=True)
class Mention:
    """One WikiNews mention in its article's language; ``query`` is the text the encoder reads."""

    example_id: str
    language: str
    entity_id: str
    query: str


@dataclass(frozen=True)
class MewsliFiles:
    candidates: Path
    mentions: Path


# ----------------------------------------------------------------------------------------------
# Texts


def _normalize(text: str) -> str:
    return " ".join(text.splitlines()).replace("  ", " ").strip()


def entity_text(description: str, sentence_spans: list[dict[str, int]]) -> str:
    """An entity as the encoder reads it: its description's sentences joined by spaces."""
    return _normalize(" ".join(description[span["start"] : span["end"]] for span in sentence_spans))


def mention_query(text: str, sentence_spans: list[dict[str, int]], start: int, end: int) -> tuple[str, bool]:
    """(the mention in its sentence, marked and repeated in front; whether a sentence held the mention).

    Without a sentence span that holds the whole mention (the official preprocessing asserts there is
    one), the whole context is used.
    """
    focus = next((s for s in sentence_spans if s["start"] <= start < s["end"] and s["start"] < end <= s["end"]), None)
    first, last = (focus["start"], focus["end"]) if focus else (0, len(text))
    left = _MARKED.sub(r"(\1)", text[first:start])
    right = _MARKED.sub(r"(\1)", text[end:last])
    mention = text[start:end]
    return _normalize(f"{mention}: {left} {{ {mention} }} {right}"), focus is not None


# ----------------------------------------------------------------------------------------------
# Files


def locate_mewsli(
    data_dir: str | Path, languages: list[str] | None = None, *, split: str = "test"
) -> tuple[MewsliFiles, dict[str, str]]:
    """(the candidate set and the split's mention file, {requested language: why it is skipped})."""
    if split not in SPLITS:
        raise ConfigError(f"Mewsli-X has no split '{split}'; choose dev or test")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"Mewsli-X data directory {root} does not exist; pass XTREME-R's download/mewslix folder")
    name = f"wikinews_mentions-{SPLITS[split]}.jsonl"
    folder = next((root / sub for sub in LAYOUT_FOLDERS if (root / sub / CANDIDATES_FILE).is_file()), None)
    if folder is None:
        raise DataNotFoundError(
            f"no {CANDIDATES_FILE} in {root} (nor in mewslix/ or mewsli_x/output/dataset/); "
            "run XTREME-R's download_data.sh (download_mewslix) and pass its mewslix folder"
        )
    mentions = folder / name
    if not mentions.is_file():
        text_less = folder / name.replace("mentions-", "mentions_no_text-")
        hint = (f"{text_less.name} is the release without article text; run get-mewsli-x.sh to restore it"
                if text_less.is_file() else "check --split and the folder")  # fmt: skip
        raise DataNotFoundError(f"{mentions} is missing: {hint}")
    skipped = {lang: f"Mewsli-X has no mention language '{lang}' (it has {', '.join(LANGUAGES)})"
               for lang in dict.fromkeys(languages or ()) if lang not in LANGUAGES}  # fmt: skip
    return MewsliFiles(folder / CANDIDATES_FILE, mentions), skipped


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, json.loads(line)
    except FileNotFoundError:
        raise DataNotFoundError(f"Mewsli-X file {path} does not exist; check the data directory") from None
    except json.JSONDecodeError as error:
        raise CorruptDataError(f"{path}:{number}: not a JSON line ({error.msg}); the download may be truncated") from None
    except UnicodeDecodeError as error:
        raise CorruptDataError(f"{path} is not UTF-8 ({error.reason}); re-download it") from None


def read_candidates(path: Path) -> tuple[list[str], list[str]]:
    """(entity ids, entity texts) of the candidate set, in file order."""
    ids, texts = [], []
    for number, row in _jsonl(path):
        try:
            ids.append(str(row["entity_id"]))
            texts.append(entity_text(row["description"], row["sentence_spans"]))
        except (KeyError, TypeError):
            raise CorruptDataError(f"{path}:{number}: an entity needs entity_id, description and sentence_spans") from None
    duplicates = [entity for entity, count in Counter(ids).items() if count > 1]
    if duplicates:
        raise CorruptDataError(f"{path}: entity {duplicates[0]} appears {Counter(ids)[duplicates[0]]} times; the set is 1:1")
    return ids, texts


def read_mentions(path: Path) -> tuple[list[Mention], int]:
    """Every mention of the split (articles in file order), and how many had no sentence holding them."""
    mentions, outside = [], 0
    for number, row in _jsonl(path):
        context, items = _article(row, path, number)
        for item in items:
            start, end, surface = _span(item, path, number)
            if not context["text"]:
                raise CorruptDataError(f"{path}:{number}: the article text is empty; run get-mewsli-x.sh to restore it")
            if context["text"][start:end] != surface:
                raise CorruptDataError(f"{path}:{number}: mention {item.get('example_id')!r} ({surface!r}) does not match "
                                       f"the text at [{start}:{end}]")  # fmt: skip
            query, inside = mention_query(context["text"], context["sentence_spans"], start, end)
            outside += not inside
            mentions.append(Mention(str(item["example_id"]), str(context["language"]), str(item["entity_id"]), query))
    return mentions, outside


def _article(row: dict[str, Any], path: Path, number: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    context, items = row.get("context"), row.get("mentions")
    if not isinstance(context, dict) or not isinstance(items, list) or not {"language", "text", "sentence_spans"} <= set(context):
        raise CorruptDataError(f"{path}:{number}: expected an article with context {{language, text, sentence_spans}} and mentions")
    return context, items


def _span(item: dict[str, Any], path: Path, number: int) -> tuple[int, int, str]:
    try:
        if "example_id" not in item or "entity_id" not in item:
            raise KeyError("example_id")
        span = item["mention_span"]
        return int(span["start"]), int(span["end"]), str(span["text"])
    except (KeyError, TypeError, ValueError):
        raise CorruptDataError(f"{path}:{number}: a mention needs example_id, entity_id and mention_span {{start, end, text}}") from None


def read_wikipedia_pairs(path: str | Path) -> list[RetrievalExample]:
    """Mewsli-X's English fine-tuning pairs as (mention query, entity text) training examples."""
    path, examples = Path(path), []
    for number, row in _jsonl(path):
        try:
            context, mention, entity = row["contextual_mention"]["context"], row["contextual_mention"]["mention"], row["entity"]
            start, end = int(mention["mention_span"]["start"]), int(mention["mention_span"]["end"])
            query, _ = mention_query(context["text"], context["sentence_spans"], start, end)
            candidate = entity_text(entity["description"], entity["sentence_spans"])
            examples.append(RetrievalExample(query, candidate, None, str(entity["entity_id"])))
        except (KeyError, TypeError, ValueError):
            raise CorruptDataError(f"{path}:{number}: expected contextual_mention {{context, mention}} and entity") from None
    return examples


# ----------------------------------------------------------------------------------------------
# Scoring


def evaluate_mewsli(
    model: Any,
    data_dir: str | Path,
    languages: list[str] | None = None,
    *,
    max_length: int = 256,
    batch_size: int = 64,
    pooling: str = "mean",
    layer: int | None = None,
    split: str = "test",
    device: str | None = None,
) -> dict[str, Any]:
    """Mewsli-X MRR@20 (= mAP@20, one gold entity) of an encoder, per mention language and macro-averaged (percent).

    ``model`` is a name or directory (loaded with ``fastxlt.retrieval.embed``, last layer by default) or a
    loaded encoder with ``encode(texts)``. Returns ``{"task": "mewsli-x", "metric": "map@20", "languages":
    {lang: score}, "score": mean, "skipped": {lang: reason}, "details": {...}}``. A gold entity missing from
    the candidate set scores 0, as in the official scorer.
    """
    files, skipped = locate_mewsli(data_dir, languages, split=split)
    entity_ids, entity_texts = read_candidates(files.candidates)
    mentions, outside = read_mentions(files.mentions)
    by_language: dict[str, list[Mention]] = {}
    for mention in mentions:
        by_language.setdefault(mention.language, []).append(mention)
    wanted = [lang for lang in dict.fromkeys(languages or LANGUAGES) if lang not in skipped]
    for lang in wanted:
        if lang not in by_language:
            skipped[lang] = f"{files.mentions.name} has no mention in '{lang}'"
    scored = [lang for lang in wanted if lang in by_language]
    encoder = load_dual_encoder(model, max_length=max_length, batch_size=batch_size, pooling=pooling, layer=layer,
                                device=device)  # fmt: skip
    candidates = encoder.encode(entity_texts) if scored else np.zeros((0, 1), dtype=np.float32)
    column = {entity: i for i, entity in enumerate(entity_ids)}
    scores, missing = {}, {}
    for lang in scored:
        rows = by_language[lang]
        relevant = [[column[m.entity_id]] if m.entity_id in column else [] for m in rows]
        missing[lang] = sum(not r for r in relevant)
        values = retrieval_average_precision(encoder.encode([m.query for m in rows]), candidates, relevant, K,
                                             num_relevant=[1] * len(rows))  # fmt: skip
        scores[lang] = 100.0 * float(np.mean(values))
    return {
        "task": TASK,
        "metric": METRIC,
        "languages": scores,
        "score": float(statistics.fmean(scores.values())) if scores else None,
        "skipped": skipped,
        "details": {
            "model": str(model) if isinstance(model, (str, Path)) else type(model).__name__,
            "split": SPLITS[split],
            "mentions": {lang: len(by_language[lang]) for lang in scored},
            "candidates": len(entity_ids),
            "gold_not_in_candidates": {lang: n for lang, n in missing.items() if n},
            "mentions_outside_any_sentence": outside,
            "layer": getattr(encoder, "layer", layer),
            "num_layers": getattr(encoder, "num_layers", None),
            "pooling": getattr(encoder, "pooling", pooling),
            "max_length": getattr(encoder, "max_length", max_length),
        },
    }


# ----------------------------------------------------------------------------------------------
# The Mewsli-X training task: English Wikipedia (mention, entity) pairs, a retrieval-family record that
# registers when this module is imported (fastxlt.plugins lists it), beside the reader it needs.


def _mewslix_adapter(spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[RetrievalExample]:
    if data_dir is None:
        raise ConfigError("mewslix_wikipedia reads local files only (XTREME-R's download); set data: {mewslix_wikipedia: DIR}")
    return read_wikipedia_pairs(Path(data_dir) / f"wikipedia_pairs-{'train' if split == 'train' else 'dev'}.jsonl")


TRAINING_TASK = register(
    TaskSpec("mewslix_wikipedia", Family.RETRIEVAL, ("en",), ("train", "validation"), DEV_METRIC,
             _mewslix_adapter, head="dual_encoder", test_split="validation",
             description="Mewsli-X English Wikipedia (mention, entity) pairs (XTREME-R's training data)")
)  # fmt: skip
