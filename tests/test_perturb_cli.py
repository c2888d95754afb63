"""``fastxlt perturb`` on 200 real XNLI test texts per language (issue 21's 'done when'): every output NFC, no
new orphaned Thai leading vowel, no added precomposed nukta letter, inserted Han characters frequent in XNLI zh,
jieba / pythainlp words kept whole by word order, sentence-final punctuation in place, English -> Chinese
insertions Simplified, English put into Thai made of dictionary words, PAWS-X word order refused, and the same
seed writing the same file."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
import regex

from fastxlt.cli import main

EXAMPLES = 100  # two texts each: 200 texts
THAI_LEADING = "เแโใไ"
THAI_CONSONANTS = {chr(c) for c in range(0x0E01, 0x0E2F)}
FINAL = "。！？.!?"


@pytest.fixture(scope="module")
def libraries():
    for module in ("jieba", "pythainlp", "fugashi", "unidic_lite", "opencc", "pypinyin"):
        pytest.importorskip(module)


def perturb(shared_data, tmp_path: Path, language: str, spec: str, *, task: str = "xnli", seed: int = 0,
            name: str = "out.jsonl") -> list[dict]:
    out = tmp_path / name
    code = main(["perturb", "--task", task, "--data", str(shared_data / task), "--language", language,
                 "--perturb", spec, "--split", "test", "--seed", str(seed), "--max-examples", str(EXAMPLES),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 * EXAMPLES and all(r["original"] and "perturbed" in r for r in rows)
    for row in rows:
        assert unicodedata.is_normalized("NFC", row["perturbed"]), row
    return rows


def _orphans(text: str) -> int:
    return sum(1 for i, c in enumerate(text) if c in THAI_LEADING and (i + 1 == len(text) or text[i + 1] not in THAI_CONSONANTS))


@lru_cache(maxsize=1)
def _xnli_zh_counts(root: str) -> Counter:
    counts: Counter = Counter()
    for path in sorted(Path(root, "xnli", "xtreme_format").glob("*-zh.tsv")):
        counts.update(path.read_text(encoding="utf-8"))
    return counts


def test_char_noise_done_when(shared_data, tmp_path, libraries):
    for row in perturb(shared_data, tmp_path, "th", "char:0.1"):
        assert _orphans(row["perturbed"]) <= _orphans(row["original"]), row
    for row in perturb(shared_data, tmp_path, "hi", "char:0.1"):
        added = Counter(row["perturbed"]) - Counter(row["original"])
        assert not [c for c in added if 0x0958 <= ord(c) <= 0x095F], row
    counts = _xnli_zh_counts(str(shared_data))
    inserted = []
    for row in perturb(shared_data, tmp_path, "zh", "char:0.1"):
        added = Counter(row["perturbed"]) - Counter(row["original"])
        inserted += [c for c in added.elements() if regex.match(r"\p{Han}", c)]
    frequent = sum(counts[c] >= 3 for c in inserted) / len(inserted)
    assert len(inserted) > 50 and frequent >= 0.9, (frequent, len(inserted))
    for language in ("ar", "ru", "de"):
        perturb(shared_data, tmp_path, language, "char:0.1")


def _whole_words(rows: list[dict], language: str) -> float:
    from fastxlt.robustness.segment import pieces

    kept = total = 0
    for row in rows:
        words = Counter(p.text for p in pieces(row["original"], language) if len(p.text) > 1 and p.text.strip())
        total += sum(words.values())
        kept += sum(min(n, row["perturbed"].count(word)) for word, n in words.items())
    return kept / total


def _final_punctuation(text: str) -> list[tuple[int, Counter]]:
    """Each sentence-final mark with everything before it: equal iff no word crossed it."""
    return [(i, Counter(text[:i])) for i, c in enumerate(text) if c in FINAL]


def test_word_order_done_when(shared_data, tmp_path, libraries):
    for language in ("zh", "th", "hi", "en"):
        rows = perturb(shared_data, tmp_path, language, "word_order:0.3")
        assert sum(r["perturbed"] != r["original"] for r in rows) > EXAMPLES
        assert _whole_words(rows, language) >= 0.95
        for row in rows:
            assert _final_punctuation(row["perturbed"]) == _final_punctuation(row["original"]), row


def test_code_switching_done_when(shared_data, tmp_path, libraries):
    import opencc

    from fastxlt.robustness.muse import load_dictionary

    simplified = opencc.OpenCC("t2s").convert
    rows = perturb(shared_data, tmp_path, "zh", "code_switch_from_en:0.3")
    added = [c for r in rows for c in (Counter(r["perturbed"]) - Counter(r["original"])) if regex.match(r"\p{Han}", c)]
    assert added and simplified("".join(added)) == "".join(added)
    english = set(load_dictionary(str(shared_data / "muse"), "th", True).entries.values())
    rows = perturb(shared_data, tmp_path, "th", "code_switch_to_en:0.3")
    inserted = [w for r in rows for w in regex.findall(r"[A-Za-z]+", r["perturbed"]) if w not in r["original"]]
    assert len(inserted) > 50 and all(w.lower() in english for w in inserted), inserted[:20]
    assert all(0 <= r["coverage"] <= 1 for r in rows)


def test_paws_word_order_refused_and_same_seed_same_file(shared_data, tmp_path, libraries, capsys):
    code = main(["perturb", "--task", "pawsx", "--data", str(shared_data / "pawsx"), "--language", "ja",
                 "--perturb", "word_order", "--out", str(tmp_path / "paws.jsonl")])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 2 and "refused on pawsx" in error and "\n" not in error
    assert not (tmp_path / "paws.jsonl").exists()
    for spec in ("char:0.1", "word_order:0.3", "code_switch_to_en:0.3"):
        perturb(shared_data, tmp_path, "th", spec, name="a.jsonl")
        perturb(shared_data, tmp_path, "th", spec, name="b.jsonl")
        assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
        perturb(shared_data, tmp_path, "th", spec, seed=1, name="c.jsonl")
        assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
