"""BUCC 2018: threshold search, the file readers, and mining planted pairs end to end."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from fastxlt.errors import CorruptDataError, DataNotFoundError, UnknownLanguageError
from fastxlt.retrieval import bucc
from fastxlt.retrieval.embed import SentenceEncoder
from fastxlt.retrieval.margin import MinedPairs

# ----------------------------------------------------------------------------------------------
# Threshold search


def exhaustive_best_f1(scores: np.ndarray, correct: np.ndarray, n_gold: int) -> float:
    """Try every distinct score as the threshold (keep scores >= it): the reference."""
    best = 0.0
    for threshold in np.unique(scores):
        chosen = scores >= threshold
        tp = int((chosen & correct).sum())
        if tp:
            precision, recall = tp / chosen.sum(), tp / n_gold
            best = max(best, 100 * 2 * precision * recall / (precision + recall))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_best_threshold_equals_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    n = 300
    scores = np.round(rng.normal(1.0, 0.1, n), 2)  # rounding creates many ties
    correct = rng.random(n) < 1 / (1 + np.exp(-(scores - 1.0) * 20))
    n_gold = int(correct.sum()) + int(rng.integers(0, 30))  # some gold pairs never mined
    found = bucc.best_threshold(scores, correct, n_gold)
    expected = exhaustive_best_f1(scores, correct, n_gold)
    assert found.f1 == pytest.approx(expected)
    # the returned threshold, applied with >=, reproduces that F1 on the same candidates
    assert bucc.scores_at(scores, correct, n_gold, found.threshold).f1 == pytest.approx(expected)


def test_threshold_hand_computed():
    scores = np.array([1.3, 1.2, 1.1, 1.0, 0.9])
    correct = np.array([True, True, False, True, False])
    # cut after 1.2: P=1, R=2/3, F1=0.8; after 1.0: P=3/4, R=1, F1=6/7=0.857 (best); gold=3
    found = bucc.best_threshold(scores, correct, 3)
    assert found.f1 == pytest.approx(100 * 6 / 7)
    assert found.threshold == pytest.approx(0.95)
    assert (found.precision, found.recall, found.predicted) == (pytest.approx(75.0), pytest.approx(100.0), 4)


def test_threshold_with_nothing_to_find():
    assert bucc.best_threshold(np.array([]), np.array([], dtype=bool), 5).f1 == 0.0
    assert bucc.best_threshold(np.array([1.0, 2.0]), np.array([False, False]), 3).f1 == 0.0


# ----------------------------------------------------------------------------------------------
# A synthetic BUCC world: sentences whose text names a meaning, and an encoder that reads it


class MeaningEncoder:
    """Embeds 'xx m123 ...' as meaning 123's vector plus text-specific noise: translations are near."""

    def __init__(self, dim: int = 48, meanings: int = 5000, noise: float = 0.45):
        self.meanings = np.random.default_rng(0).standard_normal((meanings, dim))
        self.noise, self._dim = noise, dim
        self.calls: list[int] = []

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, sentences) -> np.ndarray:
        self.calls.append(len(sentences))
        rows = []
        for sentence in sentences:
            meaning = int(sentence.split()[1][1:])
            jitter = np.random.default_rng(zlib.crc32(sentence.encode())).standard_normal(self._dim)
            rows.append(self.meanings[meaning] + self.noise * jitter)
        vectors = np.asarray(rows, dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_bucc_split(folder: Path, language: str, split: str, seed: int, n_pairs: int, n_noise: int, gold: bool = True):
    """Official layout: id<TAB>sentence pools with planted translations, and their gold pairs."""
    rng = np.random.default_rng(seed)
    base = seed * 1000
    pairs = [(f"{language}-{base + i:06d}", f"en-{base + 500 + i:06d}", base + i) for i in range(n_pairs)]
    source = [(sid, f"{language} m{m} satz") for sid, _, m in pairs]
    source += [(f"{language}-{base + 300 + i:06d}", f"{language} m{base + 300 + i} nur") for i in range(n_noise)]
    target = [(tid, f"en m{m} sentence") for _, tid, m in pairs]
    target += [(f"en-{base + 800 + i:06d}", f"en m{base + 800 + i} only") for i in range(n_noise)]
    rng.shuffle(source)
    rng.shuffle(target)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{language}-en.{split}"
    Path(f"{stem}.{language}").write_text("".join(f"{i}\t{s}\n" for i, s in source), encoding="utf-8")
    Path(f"{stem}.en").write_text("".join(f"{i}\t{s}\n" for i, s in target), encoding="utf-8")
    if gold:
        Path(f"{stem}.gold").write_text("".join(f"{s}\t{t}\n" for s, t, _ in pairs), encoding="utf-8")
    return {(s, t) for s, t, _ in pairs}


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_planted_pairs_are_mined_with_full_f1(tmp_path, backend):
    write_bucc_split(tmp_path, "de", "sample", seed=1, n_pairs=60, n_noise=140)
    write_bucc_split(tmp_path, "de", "training", seed=2, n_pairs=80, n_noise=200)
    source = bucc.locate_bucc("de", tmp_path)
    assert (source.tune_split, source.eval_split, source.layout) == ("sample", "training", "files")
    result = bucc.evaluate_bucc(source, MeaningEncoder(), backend=backend)
    assert result["dev_f1"] == pytest.approx(100.0)
    assert (result["f1"], result["precision"], result["recall"]) == (pytest.approx(100.0),) * 3
    assert result["predicted"] == 80


def test_xtreme_names_and_a_test_split_without_gold(tmp_path):
    write_bucc_split(tmp_path / "fr-en", "fr", "dev", seed=3, n_pairs=40, n_noise=60)
    write_bucc_split(tmp_path / "fr-en", "fr", "test", seed=4, n_pairs=50, n_noise=70, gold=False)
    source = bucc.locate_bucc("fra", tmp_path)  # LASER code accepted; files in DIR/fr-en/
    assert (source.language, source.tune_split, source.eval_split) == ("fr", "dev", "test")
    result = bucc.evaluate_bucc(source, MeaningEncoder())
    assert result["f1"] is None and result["dev_f1"] == pytest.approx(100.0)
    assert result["predicted"] == 50


def test_duplicate_sentences_are_embedded_once_and_expand_to_every_id(tmp_path):
    folder = tmp_path
    (folder / "de-en.sample.de").write_text("d1\tde m1 a\nd2\tde m1 a\nd3\tde m2 b\n", encoding="utf-8")
    (folder / "de-en.sample.en").write_text("e1\ten m1 x\ne2\ten m2 y\n", encoding="utf-8")
    (folder / "de-en.sample.gold").write_text("d1\te1\nd2\te1\nd3\te2\n", encoding="utf-8")
    corpus = bucc.read_bucc(bucc.BuccSource("de", "files", "sample", "sample", folder), "sample")
    encoder = MeaningEncoder()
    candidates = bucc.mine_corpus(corpus, encoder, k=2)
    assert encoder.calls == [2, 2]  # unique sentences only
    pairs = set(zip(candidates.source_ids, candidates.target_ids))
    assert pairs == {("d1", "e1"), ("d2", "e1"), ("d3", "e2")}
    assert candidates.correct(corpus.gold).all()


def test_expand_to_ids_keeps_scores():
    mined = MinedPairs(source=np.array([1, 0]), target=np.array([0, 1]), score=np.array([2.0, 1.5]))
    candidates = bucc.expand_to_ids(mined, [["a"], ["b", "c"]], [["x", "y"], ["z"]])
    assert list(zip(candidates.source_ids, candidates.target_ids, candidates.scores.tolist())) == [
        ("b", "x", 2.0),
        ("b", "y", 2.0),
        ("c", "x", 2.0),
        ("c", "y", 2.0),
        ("a", "z", 1.5),
    ]


def test_hub_parquet_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, offset in (("validation", 0), ("test", 100)):
        rows = [
            {
                "source_sentence": f"ru m{offset + i} x",
                "target_sentence": f"en m{offset + i} y",
                "source_lang": f"ru-{offset + i}",
                "target_lang": f"en-{offset + i}",
            }
            for i in range(30)
        ]
        folder = tmp_path / "bucc18.ru"
        folder.mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}-00000-of-00001.parquet")
    source = bucc.locate_bucc("ru", tmp_path)
    assert source.layout == "hub-files"
    corpus = bucc.read_bucc(source, "test")
    assert len(corpus.source_ids) == 30 and ("ru-100", "en-100") in corpus.gold
    result = bucc.evaluate_bucc(source, MeaningEncoder())
    assert result["layout"] == "hub"
    assert result["dev_f1"] == pytest.approx(100.0) and result["f1"] > 90  # the dev threshold may cut a test pair


def test_missing_and_malformed_files_raise_one_line_errors(tmp_path):
    with pytest.raises(UnknownLanguageError, match="BUCC 2018 has no language 'ja'"):
        bucc.locate_bucc("ja", tmp_path)
    with pytest.raises(DataNotFoundError, match="no BUCC files for 'de'"):
        bucc.locate_bucc("de", tmp_path)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        bucc.locate_bucc("de", tmp_path / "nowhere")
    write_bucc_split(tmp_path, "zh", "dev", seed=5, n_pairs=3, n_noise=2)
    write_bucc_split(tmp_path, "zh", "test", seed=6, n_pairs=3, n_noise=2)
    (tmp_path / "zh-en.test.en").write_text("en-1 no tab here\n", encoding="utf-8")
    source = bucc.locate_bucc("zh", tmp_path)
    with pytest.raises(CorruptDataError, match=r"zh-en.test.en:1 has 1 tab-separated field") as error:
        bucc.read_bucc(source, "test")
    assert "\n" not in str(error.value)


def test_encoder_protocol_is_satisfied_by_the_test_encoder():
    assert isinstance(MeaningEncoder(), SentenceEncoder)


def test_without_data_both_hub_splits_are_read(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        offset = 0 if split == "validation" else 100
        return [
            {
                "source_sentence": f"de m{offset + i} a",
                "target_sentence": f"en m{offset + i} b",
                "source_lang": f"de-{offset + i}",
                "target_lang": f"en-{offset + i}",
            }
            for i in range(20)
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = bucc.locate_bucc("de", None)
    result = bucc.evaluate_bucc(source, MeaningEncoder())
    assert calls == [("google/xtreme", "bucc18.de", "validation"), ("google/xtreme", "bucc18.de", "test")]
    assert result["layout"] == "hub" and result["dev_f1"] == pytest.approx(100.0)
