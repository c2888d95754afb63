"""Tatoeba: for every non-English sentence, is its nearest English sentence the translation?

Three layouts are read (``--data DIR``), tried in this order for each language:

* LASER (``tatoeba.deu-eng.deu`` / ``tatoeba.deu-eng.eng``): line i translates line i, so the gold
  is the identity. This is the original release (``../shared/data/tatoeba``).
* XTREME (``de-en.de`` / ``de-en.en``): XTREME sorts the English side, so the gold comes in a
  separate file ``de-en.gold`` (per line: the 0-based index of the English line that translates
  source line i, or ``i<TAB>j``).
* a local copy of the hub dataset (``tatoeba.deu/validation-*.parquet``, columns ``source_sentence``
  and ``target_sentence``, aligned row by row); without ``--data`` the hub itself
  (``google/xtreme``, config ``tatoeba.deu``).

Accuracy is the percentage of source sentences whose retrieved English sentence has the gold index;
ties (identical English sentences) go to the lowest index, as ``np.argmax`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.retrieval.files import hub_parquet_files, load_hub_rows, read_lines, read_parquet_rows
from fastxlt.retrieval.languages import tatoeba_language
from fastxlt.retrieval.margin import best_candidates
from fastxlt.retrieval.options import DIRECTIONS
from fastxlt.retrieval.search import nearest, two_way_knn

SCORINGS = ("cosine", "margin")
HUB_COLUMNS = ("source_sentence", "target_sentence")


@dataclass(frozen=True)
class TatoebaSet:
    """One language pair: ``english[gold[i]]`` translates ``source[i]``."""

    language: str
    source: list[str]
    english: list[str]
    gold: np.ndarray
    layout: str


@dataclass(frozen=True)
class TatoebaSource:
    """Where a language's data is, found before any model is loaded so that bad input fails fast."""

    language: str
    laser_code: str
    layout: str  # "laser", "xtreme", "hub-files" or "hub"
    paths: tuple[Path, ...]


def locate_tatoeba(code: str, data_dir: Path | None) -> TatoebaSource:
    """Find one language's files in ``data_dir`` (any supported layout), or plan a hub load."""
    language, laser = tatoeba_language(code)
    if data_dir is None:
        return TatoebaSource(language, laser, "hub", ())
    if not data_dir.is_dir():
        raise DataNotFoundError(f"data directory {data_dir} does not exist; pass --data DIR with the Tatoeba files")
    laser_files = (data_dir / f"tatoeba.{laser}-eng.{laser}", data_dir / f"tatoeba.{laser}-eng.eng")
    if all(path.is_file() for path in laser_files):
        return TatoebaSource(language, laser, "laser", laser_files)
    xtreme_files = tuple(data_dir / f"{language}-en.{suffix}" for suffix in (language, "en", "gold"))
    if all(path.is_file() for path in xtreme_files[:2]):
        if not xtreme_files[2].is_file():
            raise DataNotFoundError(
                f"{xtreme_files[0].name} is in the XTREME layout (English side shuffled) but {xtreme_files[2]} is "
                "missing; add the gold indices or use LASER's line-aligned files"
            )
        return TatoebaSource(language, laser, "xtreme", xtreme_files)
    parquet = hub_parquet_files(data_dir, f"tatoeba.{laser}", "validation")
    if parquet:
        return TatoebaSource(language, laser, "hub-files", tuple(parquet))
    raise DataNotFoundError(
        f"no Tatoeba files for '{code}' in {data_dir}: looked for {laser_files[0].name}, "
        f"{xtreme_files[0].name} and tatoeba.{laser}/validation-*.parquet; check --data and --languages"
    )


def read_tatoeba(source: TatoebaSource) -> TatoebaSet:
    """Read one located language pair."""
    if source.layout == "laser":
        sentences, english = (_clean(read_lines(path)) for path in source.paths)
        _check_aligned(source.paths[0], sentences, english)
        gold = np.arange(len(sentences), dtype=np.int64)
    elif source.layout == "xtreme":
        sentences, english = (_clean(read_lines(path)) for path in source.paths[:2])
        gold = _read_gold(source.paths[2], len(sentences), len(english))
    else:
        config = f"tatoeba.{source.laser_code}"
        rows = (
            read_parquet_rows(list(source.paths), HUB_COLUMNS)
            if source.layout == "hub-files"
            else load_hub_rows(config, "validation", HUB_COLUMNS)
        )
        sentences = _clean([row["source_sentence"] for row in rows])
        english = _clean([row["target_sentence"] for row in rows])
        gold = np.arange(len(sentences), dtype=np.int64)
    if not sentences:
        raise CorruptDataError(f"Tatoeba '{source.language}' has no sentences; check the files in --data")
    return TatoebaSet(source.language, sentences, english, gold, source.layout)


def tatoeba_accuracy(
    source_embeddings: np.ndarray,
    english_embeddings: np.ndarray,
    gold: np.ndarray,
    *,
    scoring: str = "cosine",
    direction: str = "xx-en",
    k: int = 4,
    margin: str = "ratio",
    backend: str = "torch",
) -> float:
    """Percentage of queries whose retrieved sentence is the gold translation.

    ``xx-en`` (XTREME's protocol) queries with the non-English sentences; ``en-xx`` queries with the
    gold English sentences and expects the source sentence back. ``scoring="margin"`` re-ranks the
    k nearest neighbours by the margin (Artetxe & Schwenk, 2019) instead of the plain cosine.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction '{direction}'; choose {' or '.join(DIRECTIONS)}")
    if direction == "xx-en":
        queries, database, target = source_embeddings, english_embeddings, gold
    else:
        queries, database, target = english_embeddings[gold], source_embeddings, np.arange(len(gold))
    predicted = retrieve(queries, database, scoring=scoring, k=k, margin=margin, backend=backend)
    return float(100.0 * np.mean(predicted == target))


def retrieve(
    queries: np.ndarray,
    database: np.ndarray,
    *,
    scoring: str,
    k: int = 4,
    margin: str = "ratio",
    backend: str = "torch",
) -> np.ndarray:
    """Index of the retrieved database sentence for every query, by cosine or by margin."""
    if scoring == "cosine":
        return nearest(queries, database)
    if scoring == "margin":
        return best_candidates(two_way_knn(queries, database, k, backend=backend), margin)[0]
    raise ConfigError(f"unknown Tatoeba scoring '{scoring}'; choose {' or '.join(SCORINGS)}")


def _clean(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines]


def _check_aligned(path: Path, sentences: list[str], english: list[str]) -> None:
    if len(sentences) != len(english):
        raise CorruptDataError(
            f"{path} has {len(sentences)} lines but its English side has {len(english)}; "
            "LASER's files must be line-aligned"
        )


def _read_gold(path: Path, n_source: int, n_english: int) -> np.ndarray:
    """XTREME gold: one English index per source line (``j``), or ``i<TAB>j`` lines."""
    gold = np.full(n_source, -1, dtype=np.int64)
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            source_index, english_index = (number - 1, int(fields[0])) if len(fields) == 1 else map(int, fields[:2])
        except ValueError:
            raise CorruptDataError(
                f"{path}:{number} is not an index ('{line[:40]}'); expected 'j' or 'i<TAB>j'"
            ) from None
        if not (0 <= source_index < n_source and 0 <= english_index < n_english):
            raise CorruptDataError(f"{path}:{number} points outside the files ({source_index}, {english_index})")
        gold[source_index] = english_index
    if (gold < 0).any():
        raise CorruptDataError(f"{path} gives no gold for {int((gold < 0).sum())} source line(s); add them")
    return gold
