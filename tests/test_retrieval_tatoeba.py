"""Tatoeba: the three layouts, the accuracy against a numpy reference, and the real LASER files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastxlt.errors import CorruptDataError, DataNotFoundError, UnknownLanguageError
from fastxlt.retrieval.languages import TATOEBA_DEFAULT, tatoeba_language
from fastxlt.retrieval.tatoeba import locate_tatoeba, read_tatoeba, retrieve, tatoeba_accuracy

SHARED_TATOEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tatoeba"

SOURCE = ["Ich mag Katzen.", "Das Haus ist rot.", "Wo ist der Bahnhof?", "Guten Morgen!"]
ENGLISH = ["I like cats.", "The house is red.", "Where is the station?", "Good morning!"]


def write_laser(folder: Path, code: str = "deu") -> None:
    (folder / f"tatoeba.{code}-eng.{code}").write_text("\n".join(SOURCE) + "\n", encoding="utf-8")
    (folder / f"tatoeba.{code}-eng.eng").write_text("\n".join(ENGLISH) + "\n", encoding="utf-8")


def write_xtreme(folder: Path, gold_format: str = "index") -> list[int]:
    """XTREME's layout: the English side sorted, the gold in a separate file."""
    order = sorted(range(len(ENGLISH)), key=lambda i: ENGLISH[i])
    (folder / "de-en.de").write_text("\n".join(SOURCE) + "\n", encoding="utf-8")
    (folder / "de-en.en").write_text("\n".join(ENGLISH[i] for i in order) + "\n", encoding="utf-8")
    gold = [order.index(i) for i in range(len(SOURCE))]
    lines = [str(j) for j in gold] if gold_format == "index" else [f"{i}\t{j}" for i, j in enumerate(gold)]
    (folder / "de-en.gold").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return gold


def write_hub(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"source_sentence": s + "\n", "target_sentence": e + "\n", "source_lang": "deu", "target_lang": "eng"}
        for s, e in zip(SOURCE, ENGLISH)
    ]
    (folder / "tatoeba.deu").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "tatoeba.deu" / "validation-00000-of-00001.parquet")


@pytest.mark.parametrize("layout", ["laser", "xtreme", "xtreme-pairs", "hub-files"])
def test_every_layout_pairs_each_sentence_with_its_translation(tmp_path, layout):
    if layout == "laser":
        write_laser(tmp_path)
    elif layout == "hub-files":
        write_hub(tmp_path)
    else:
        write_xtreme(tmp_path, "index" if layout == "xtreme" else "pairs")
    data = read_tatoeba(locate_tatoeba("de", tmp_path))
    assert data.language == "de" and data.layout == layout.removesuffix("-pairs")
    assert data.source == SOURCE
    assert [data.english[j] for j in data.gold] == ENGLISH


def test_lines_split_only_on_newlines(tmp_path):
    """U+2028 inside a sentence must not shift the alignment (str.splitlines would split there)."""
    (tmp_path / "tatoeba.fra-eng.fra").write_text("a\u2028b\r\nc\n", encoding="utf-8")
    (tmp_path / "tatoeba.fra-eng.eng").write_text("x\ny\n", encoding="utf-8")
    data = read_tatoeba(locate_tatoeba("fr", tmp_path))
    assert data.source == ["a\u2028b", "c"] and data.english == ["x", "y"]


def reference_accuracy(source: np.ndarray, english: np.ndarray, gold: np.ndarray) -> float:
    predicted = np.argmax(source.astype(np.float64) @ english.astype(np.float64).T, axis=1)
    return 100.0 * float(np.mean(predicted == gold))


def noisy_pairs(seed: int, n: int, dim: int = 16, noise: float = 0.9):
    rng = np.random.default_rng(seed)
    english = rng.standard_normal((n, dim))
    permutation = rng.permutation(n)
    source = english[permutation] + noise * rng.standard_normal((n, dim))
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(source), unit(english), permutation


def test_accuracy_equals_the_numpy_reference_in_both_directions():
    source, english, gold = noisy_pairs(0, 300)
    expected = reference_accuracy(source, english, gold)
    assert 20 < expected < 95  # a task that is neither trivial nor hopeless
    assert tatoeba_accuracy(source, english, gold) == pytest.approx(expected)
    inverse = reference_accuracy(english[gold], source, np.arange(300))
    assert tatoeba_accuracy(source, english, gold, direction="en-xx") == pytest.approx(inverse)


def test_margin_scoring_re_ranks_the_cosine_neighbours():
    source, english, gold = noisy_pairs(1, 250)
    predicted = retrieve(source, english, scoring="margin", k=4)
    # reference: ratio margin over the 4 cosine neighbours, one query at a time
    cos = source.astype(np.float64) @ english.astype(np.float64).T
    fwd_mean = np.sort(cos, axis=1)[:, -4:].mean(axis=1)
    bwd_mean = np.sort(cos, axis=0)[-4:, :].mean(axis=0)
    for i in range(len(source)):
        neighbours = np.argsort(-cos[i])[:4]
        margins = [cos[i, j] / ((fwd_mean[i] + bwd_mean[j]) / 2) for j in neighbours]
        assert predicted[i] == neighbours[int(np.argmax(margins))]
    margin_accuracy = tatoeba_accuracy(source, english, gold, scoring="margin")
    assert margin_accuracy == pytest.approx(100 * np.mean(predicted == gold))


def test_language_codes():
    assert tatoeba_language("de") == ("de", "deu") == tatoeba_language("deu")
    assert tatoeba_language("zh") == ("zh", "cmn") and tatoeba_language("ca") == ("ca", "cat")
    assert tatoeba_language("yue") == ("yue", "yue")
    with pytest.raises(UnknownLanguageError, match="unknown Tatoeba language 'german'"):
        tatoeba_language("german")
    assert len(TATOEBA_DEFAULT) == 36


def test_missing_and_broken_files_raise_one_line_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="no Tatoeba files for 'de'") as error:
        locate_tatoeba("de", tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        locate_tatoeba("de", tmp_path / "missing")
    write_xtreme(tmp_path)
    (tmp_path / "de-en.gold").unlink()
    with pytest.raises(DataNotFoundError, match="de-en.gold is missing"):
        locate_tatoeba("de", tmp_path)
    (tmp_path / "de-en.gold").write_text("0\n1\nseven\n2\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match="de-en.gold:3 is not an index"):
        read_tatoeba(locate_tatoeba("de", tmp_path))
    write_laser(tmp_path, "ita")
    (tmp_path / "tatoeba.ita-eng.eng").write_text("only one line\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match="line-aligned"):
        read_tatoeba(locate_tatoeba("it", tmp_path))


@pytest.mark.skipif(not SHARED_TATOEBA.is_dir(), reason="shared Tatoeba data not present")
def test_real_laser_files_of_the_36_xtreme_languages_are_line_aligned():
    sizes = {}
    for code in TATOEBA_DEFAULT:
        data = read_tatoeba(locate_tatoeba(code, SHARED_TATOEBA))
        assert data.layout == "laser" and len(data.source) == len(data.english)
        assert all(data.source) and all(data.english)
        sizes[data.language] = len(data.source)
    # sizes from the data manifest (LASER's release)
    assert sizes["de"] == 1000 and sizes["jv"] == 205 and sizes["sw"] == 390 and sizes["te"] == 234
    assert sum(sizes.values()) == 28 * 1000 + 205 + 746 + 575 + 687 + 390 + 307 + 234 + 548  # MANIFEST.md


def test_without_data_the_hub_dataset_is_read(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return [
            {"source_sentence": s + "\n", "target_sentence": e + "\n", "source_lang": "deu"}
            for s, e in zip(SOURCE, ENGLISH)
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = read_tatoeba(locate_tatoeba("deu", None))
    assert calls == [("google/xtreme", "tatoeba.deu", "validation")]
    assert data.layout == "hub" and data.source == SOURCE and data.english == ENGLISH


def test_an_unreachable_hub_is_a_one_line_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'google/xtreme' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataNotFoundError, match=r"cannot load google/xtreme 'tatoeba.deu'.*pass --data DIR") as error:
        read_tatoeba(locate_tatoeba("de", None))
    assert "\n" not in str(error.value)
