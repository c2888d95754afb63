"""BUCC 2018 parallel sentence mining: margin-scored candidates, a threshold tuned on dev, F1 on test.

The recipe (LASER's and XTREME's BUCC scripts): embed the *unique* sentences of each side, search
the k=4 nearest neighbours in both directions, score them with the ratio margin, merge forward and
backward candidates with "max" retrieval (each sentence used once), map the mined sentence pairs back
to every id that carries those sentences, choose the threshold that maximises F1 on the dev (BUCC
"sample") gold, and keep the test candidates scoring at or above it.

A sentence repeated on one side (the same text under several ids). By default it is embedded and mined
once, and a mined pair credits every id that carries it, so a gold pair on any of those ids can be
found. XTREME's evaluation instead drops it: ``read_sent2id`` in google-research/xtreme
``third_party/utils_retrieve.py`` (from LASER's ``bucc.py``) records such a sentence as ``repeated`` and
deletes it from the sentence-to-id map, so no candidate involving it is ever extracted, while its gold
pairs still count in the recall. ``drop_duplicates=True`` (``--bucc-drop-duplicates``) does the same, for
numbers comparable to XTREME's.

Layouts (``--data DIR``), per language and split:

* official BUCC / XTREME files: ``de-en.{split}.de`` and ``de-en.{split}.en`` (``id<TAB>sentence``)
  and ``de-en.{split}.gold`` (``de_id<TAB>en_id``), in DIR or DIR/de-en/. BUCC names the splits
  ``sample`` and ``training``; XTREME renames them ``dev`` and ``test`` (and removes the test gold:
  then the test scores are not computed, only the mined pairs are counted).
* a local copy of the hub dataset (``bucc18.de/{validation,test}-*.parquet``), or the hub itself
  without ``--data``. The hub holds only the gold pairs (columns ``source_sentence``,
  ``target_sentence`` and the ids in ``source_lang`` / ``target_lang``), so its pools are just those
  sentences: an easier task than the full BUCC corpora, reported with ``layout: hub``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastxlt.errors import CorruptDataError, DataNotFoundError
from fastxlt.retrieval.embed import SentenceEncoder
from fastxlt.retrieval.files import hub_parquet_files, load_hub_rows, read_parquet_rows, read_tab_columns
from fastxlt.retrieval.languages import bucc_language
from fastxlt.retrieval.margin import MinedPairs, mine
from fastxlt.retrieval.search import two_way_knn

TUNE_SPLITS = ("dev", "sample")  # the split whose gold chooses the threshold (XTREME name, BUCC name)
EVAL_SPLITS = ("test", "training")
HUB_SPLITS = {"tune": "validation", "eval": "test"}
HUB_COLUMNS = ("source_sentence", "target_sentence", "source_lang", "target_lang")


@dataclass(frozen=True)
class BuccCorpus:
    """One split of one language pair: two id-tagged sentence pools and, when known, the gold pairs."""

    language: str
    split: str
    source_ids: list[str]
    source_sentences: list[str]
    target_ids: list[str]
    target_sentences: list[str]
    gold: frozenset[tuple[str, str]] | None
    layout: str


@dataclass(frozen=True)
class BuccSource:
    """Where a language's two splits are; found before the model is loaded so that bad input fails fast."""

    language: str
    layout: str  # "files", "hub-files" or "hub"
    tune_split: str
    eval_split: str
    folder: Path | None


@dataclass(frozen=True)
class Candidates:
    """Mined id pairs with their margin scores (a sentence pair expands to every id pair carrying it)."""

    source_ids: list[str]
    target_ids: list[str]
    scores: np.ndarray

    def correct(self, gold: frozenset[tuple[str, str]]) -> np.ndarray:
        return np.fromiter(
            ((s, t) in gold for s, t in zip(self.source_ids, self.target_ids)), dtype=bool, count=len(self.scores)
        )


@dataclass(frozen=True)
class Scores:
    """Precision, recall and F1 in percent of the candidates scoring at least ``threshold``."""

    precision: float
    recall: float
    f1: float
    threshold: float
    predicted: int


# ----------------------------------------------------------------------------------------------
# Reading


def locate_bucc(code: str, data_dir: Path | None) -> BuccSource:
    """Find a language's tune and eval splits in ``data_dir`` (or plan a hub load)."""
    language = bucc_language(code)
    if data_dir is None:
        return BuccSource(language, "hub", HUB_SPLITS["tune"], HUB_SPLITS["eval"], None)
    if not data_dir.is_dir():
        raise DataNotFoundError(f"data directory {data_dir} does not exist; pass --data DIR with the BUCC files")
    for folder in (data_dir, data_dir / f"{language}-en"):
        tune = _first_split(folder, language, TUNE_SPLITS, need_gold=True)
        evaluate = _first_split(folder, language, EVAL_SPLITS, need_gold=False)
        if tune and evaluate:
            return BuccSource(language, "files", tune, evaluate, folder)
    hub_config = f"bucc18.{language}"
    if hub_parquet_files(data_dir, hub_config, HUB_SPLITS["tune"]) and hub_parquet_files(
        data_dir, hub_config, HUB_SPLITS["eval"]
    ):
        return BuccSource(language, "hub-files", HUB_SPLITS["tune"], HUB_SPLITS["eval"], data_dir)
    raise DataNotFoundError(
        f"no BUCC files for '{language}' in {data_dir}: need {language}-en.dev|sample.{{{language},en,gold}} and "
        f"{language}-en.test|training.{{{language},en}} (or {hub_config}/validation|test-*.parquet); check --data"
    )


def read_bucc(source: BuccSource, split: str) -> BuccCorpus:
    """Read one split of a located language."""
    if source.layout == "files":
        return _read_files(source.folder, source.language, split)
    config = f"bucc18.{source.language}"
    rows = (
        read_parquet_rows(hub_parquet_files(source.folder, config, split), HUB_COLUMNS)
        if source.layout == "hub-files"
        else load_hub_rows(config, split, HUB_COLUMNS)
    )
    return _corpus_from_hub_rows(rows, source.language, split)


def _first_split(folder: Path, language: str, splits: Sequence[str], need_gold: bool) -> str | None:
    for split in splits:
        stem = folder / f"{language}-en.{split}"
        needed = [Path(f"{stem}.{language}"), Path(f"{stem}.en")] + ([Path(f"{stem}.gold")] if need_gold else [])
        if all(path.is_file() for path in needed):
            return split
    return None


def _read_files(folder: Path, language: str, split: str) -> BuccCorpus:
    stem = folder / f"{language}-en.{split}"
    source = read_tab_columns(Path(f"{stem}.{language}"), 2)
    target = read_tab_columns(Path(f"{stem}.en"), 2)
    gold_path = Path(f"{stem}.gold")
    gold = (
        frozenset((row[0].strip(), row[1].strip()) for row in read_tab_columns(gold_path, 2))
        if gold_path.is_file()
        else None
    )
    return BuccCorpus(
        language=language,
        split=split,
        source_ids=[row[0].strip() for row in source],
        source_sentences=[row[1].strip() for row in source],
        target_ids=[row[0].strip() for row in target],
        target_sentences=[row[1].strip() for row in target],
        gold=gold,
        layout="files",
    )


def _corpus_from_hub_rows(rows: list[dict], language: str, split: str) -> BuccCorpus:
    if not rows:
        raise CorruptDataError(f"bucc18.{language} ({split}) has no rows; check the hub files")
    source = dict(zip((row["source_lang"] for row in rows), (row["source_sentence"].strip() for row in rows)))
    target = dict(zip((row["target_lang"] for row in rows), (row["target_sentence"].strip() for row in rows)))
    return BuccCorpus(
        language=language,
        split=split,
        source_ids=list(source),
        source_sentences=list(source.values()),
        target_ids=list(target),
        target_sentences=list(target.values()),
        gold=frozenset((row["source_lang"], row["target_lang"]) for row in rows),
        layout="hub",
    )


# ----------------------------------------------------------------------------------------------
# Mining


def mine_corpus(
    corpus: BuccCorpus,
    encoder: SentenceEncoder,
    *,
    k: int = 4,
    margin: str = "ratio",
    precision: str = "fp32",
    backend: str = "torch",
    drop_duplicates: bool = False,
) -> Candidates:
    """Embed the unique sentences of both sides, mine them, and expand the pairs back to ids.

    ``drop_duplicates``: a mined pair whose sentence carries several ids on its side yields no
    candidate (XTREME's handling; see the module docstring)."""
    source_texts, source_ids = unique_sentences(corpus.source_sentences, corpus.source_ids)
    target_texts, target_ids = unique_sentences(corpus.target_sentences, corpus.target_ids)
    if not source_texts or not target_texts:
        raise CorruptDataError(f"BUCC {corpus.language} {corpus.split} has an empty side; check the files")
    x, y = encoder.encode(source_texts), encoder.encode(target_texts)
    mined = mine_embeddings(x, y, k=k, margin=margin, precision=precision, backend=backend)
    if drop_duplicates:
        source_ids = [ids if len(ids) == 1 else [] for ids in source_ids]
        target_ids = [ids if len(ids) == 1 else [] for ids in target_ids]
    return expand_to_ids(mined, source_ids, target_ids)


def mine_embeddings(
    x: np.ndarray, y: np.ndarray, *, k: int = 4, margin: str = "ratio", precision: str = "fp32", backend: str = "torch"
) -> MinedPairs:
    """kNN both ways (one pass with the torch backend), margin scores, "max" retrieval."""
    return mine(two_way_knn(x, y, k, backend=backend, precision=precision), margin=margin, retrieval="max")


def unique_sentences(sentences: Sequence[str], ids: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Distinct sentences in first-seen order, and for each the ids that carry it."""
    carriers: dict[str, list[str]] = {}
    for sentence, sentence_id in zip(sentences, ids):
        carriers.setdefault(sentence, []).append(sentence_id)
    return list(carriers), list(carriers.values())


def expand_to_ids(mined: MinedPairs, source_ids: list[list[str]], target_ids: list[list[str]]) -> Candidates:
    sources, targets, scores = [], [], []
    for src, trg, score in zip(mined.source.tolist(), mined.target.tolist(), mined.score.tolist()):
        for source_id in source_ids[src]:
            for target_id in target_ids[trg]:
                sources.append(source_id)
                targets.append(target_id)
                scores.append(score)
    return Candidates(sources, targets, np.asarray(scores, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# Threshold and scores


def best_threshold(scores: np.ndarray, correct: np.ndarray, n_gold: int) -> Scores:
    """The threshold whose candidate set ``scores >= threshold`` has the highest F1 (the highest such threshold).

    All cut points at once: sort by score, count true positives cumulatively, and consider only the
    last position of each run of equal scores (a threshold cannot split equal scores). The returned
    threshold lies halfway to the next lower score, so it keeps the same set on these candidates and
    is less brittle on new ones.
    """
    if len(scores) == 0 or n_gold == 0:
        return Scores(0.0, 0.0, 0.0, float("inf"), 0)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], correct[order]
    true_positives = np.cumsum(hits)
    extracted = np.arange(1, len(ranked) + 1)
    run_end = np.append(ranked[1:] < ranked[:-1], True)
    f1 = np.where(run_end, 2 * true_positives / (extracted + n_gold), -1.0)
    best = int(np.argmax(f1))
    threshold = float(ranked[best])
    if best + 1 < len(ranked):
        halfway = float((ranked[best] + ranked[best + 1]) / 2)
        threshold = halfway if halfway > ranked[best + 1] else threshold
    return _scores(int(true_positives[best]), best + 1, n_gold, threshold)


def scores_at(scores: np.ndarray, correct: np.ndarray, n_gold: int, threshold: float) -> Scores:
    """Precision, recall and F1 of the candidates scoring at least ``threshold``."""
    chosen = scores >= threshold
    return _scores(int((correct & chosen).sum()), int(chosen.sum()), n_gold, threshold)


def _scores(true_positives: int, predicted: int, n_gold: int, threshold: float) -> Scores:
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if true_positives else 0.0
    return Scores(100 * precision, 100 * recall, 100 * f1, threshold, predicted)


def evaluate_bucc(
    source: BuccSource,
    encoder: SentenceEncoder,
    *,
    k: int = 4,
    margin: str = "ratio",
    precision: str = "fp32",
    backend: str = "torch",
    drop_duplicates: bool = False,
) -> dict:
    """Tune the threshold on the dev gold, apply it to test; F1 / precision / recall in percent.

    ``drop_duplicates`` follows XTREME for sentences repeated on one side (see the module docstring)."""
    options = {"k": k, "margin": margin, "precision": precision, "backend": backend, "drop_duplicates": drop_duplicates}
    tune = read_bucc(source, source.tune_split)
    tune_candidates = mine_corpus(tune, encoder, **options)
    tuned = best_threshold(tune_candidates.scores, tune_candidates.correct(tune.gold), len(tune.gold))
    test = read_bucc(source, source.eval_split)
    test_candidates = mine_corpus(test, encoder, **options)
    result = {
        "threshold": tuned.threshold,
        "dev_f1": tuned.f1,
        "dev_precision": tuned.precision,
        "dev_recall": tuned.recall,
        "tune_split": source.tune_split,
        "eval_split": source.eval_split,
        "layout": tune.layout,
        "duplicates": "dropped" if drop_duplicates else "every id",
        "predicted": int((test_candidates.scores >= tuned.threshold).sum()),
        "f1": None,
        "precision": None,
        "recall": None,
    }
    if test.gold is not None:
        final = scores_at(test_candidates.scores, test_candidates.correct(test.gold), len(test.gold), tuned.threshold)
        result.update(f1=final.f1, precision=final.precision, recall=final.recall, gold=len(test.gold))
    return result
