"""Issue 21, one test per defect read on real text: typos per script (Thai clusters, Devanagari NFC and matras,
Arabic letter forms, Latin case, frequent Han homophones, Hangul jamo), word order on the field's segmenters
within a clause, code-switching in the evaluated script, label-changing perturbations refused, missing
libraries refused in one line."""

from __future__ import annotations

import sys
import unicodedata
from collections import Counter
from functools import lru_cache

import pytest
import regex

from fastxlt.robustness import PerturbationError, parse_perturbations
from fastxlt.robustness.errors import MissingLibraryError

THAI_LEADING = "เแโใไ"
THAI_CONSONANTS = {chr(c) for c in range(0x0E01, 0x0E2F)}
NUKTA_LETTERS = {chr(c) for c in range(0x0958, 0x0960)}
SEEDS = range(4)


@pytest.fixture(scope="module")
def libraries():
    for module in ("jieba", "pythainlp", "fugashi", "unidic_lite", "opencc", "pypinyin"):
        pytest.importorskip(module)


@lru_cache(maxsize=None)
def _texts(root: str, task: str, language: str, n: int = 40) -> tuple[str, ...]:
    from fastxlt.tasks.base import get_task

    examples = get_task(task).load("validation", language, f"{root}/{task}")[:n]
    return tuple(text for ex in examples for text in (ex.text_a, ex.text_b))


def _outputs(spec: str, texts, language: str):
    [perturbation] = parse_perturbations(spec)
    return [(text, perturbation.perturb_text(text, language, seed)) for seed in SEEDS for text in texts]


def _orphans(text: str) -> int:
    """Thai leading vowels not followed by a consonant."""
    return sum(1 for i, c in enumerate(text) if c in THAI_LEADING and (i + 1 == len(text) or text[i + 1] not in THAI_CONSONANTS))


# ------------------------------------------------------------------------------------------ character noise


def test_thai_typos_keep_leading_vowels_and_modern_letters(shared_data, libraries):
    for before, after in _outputs("char:0.5", _texts(str(shared_data), "xnli", "th"), "th"):
        assert _orphans(after) <= _orphans(before), (before, after)  # เขา never becomes เาข
        assert not (set(after) - set(before)) & set("ฃฅฦ"), after
        assert unicodedata.is_normalized("NFC", after)


def test_hindi_typos_are_nfc_matra_confusions_without_nukta_letters(shared_data, libraries):
    confusions = 0
    for before, after in _outputs("char_substitute:0.3", _texts(str(shared_data), "xnli", "hi"), "hi"):
        assert unicodedata.is_normalized("NFC", after), after
        assert not set(after) & NUKTA_LETTERS
        confusions += sum(1 for a, b in zip(before, after) if {a, b} == {"ि", "ी"})
    assert confusions > 20  # the commonest real typo happens
    for before, after in _outputs("char_insert:0.3", _texts(str(shared_data), "xnli", "hi"), "hi"):
        added = Counter(after) - Counter(unicodedata.normalize("NFC", before))
        assert not [c for c in added if 0x0904 <= ord(c) <= 0x0914]  # no independent vowel inside a word


def test_arabic_final_forms_only_end_words(shared_data, libraries):
    for before, after in _outputs("char:0.5", _texts(str(shared_data), "xnli", "ar"), "ar"):
        old = {m.start() for m in regex.finditer(r"[ةى](?=\p{Arabic})", before)}
        new = [m.group() for m in regex.finditer(r"\p{Arabic}*[ةى](?=[\p{Arabic}&&\p{L}])", after, flags=regex.V1)]
        assert len(new) <= len(old), (before, after)


def test_latin_insertions_do_not_copy_a_capital():
    [perturbation] = parse_perturbations("char_insert:1.0")
    for seed in SEEDS:
        out = perturbation.perturb_text("Hello World from Paris", "en", seed)
        assert sum(c.isupper() for c in out) == 3, out
        assert sum(c.isupper() for c in perturbation.perturb_text("NASA", "en", seed)) == len(
            perturbation.perturb_text("NASA", "en", seed))  # a word in capitals gets capitals


def test_han_typos_are_frequent_homophones(shared_data, libraries):
    import pypinyin

    from fastxlt.robustness.typos import _frequent_han

    frequent = set(_frequent_han())
    same, total = 0, 0
    for before, after in _outputs("char_substitute:0.2", _texts(str(shared_data), "xnli", "zh"), "zh"):
        if len(before) != len(after):
            continue
        for a, b in zip(before, after):
            if a != b and regex.match(r"\p{Han}", a):
                total += 1
                assert b in frequent, b
                same += pypinyin.lazy_pinyin(a) == pypinyin.lazy_pinyin(b)
    assert total > 50 and same / total > 0.5, (same, total)


def test_hangul_typos_change_one_jamo():
    [perturbation] = parse_perturbations("char_substitute:1.0")
    text = "학교에 갔습니다 그래서 세계"
    for seed in SEEDS:
        out = perturbation.perturb_text(text, "ko", seed)
        assert len(out) == len(text)
        for a, b in zip(text, out):
            if a != b:
                assert 0xAC00 <= ord(b) <= 0xD7A3  # a syllable, never loose jamo
                parts = lambda s: ((ord(s) - 0xAC00) // 588, (ord(s) - 0xAC00) % 588 // 28, (ord(s) - 0xAC00) % 28)
                assert sum(x != y for x, y in zip(parts(a), parts(b))) == 1, (a, b)


# ------------------------------------------------------------------------------------------ word order


def _prefix_counts(text: str, punctuation: str = "。，、！？,.!?;:") -> list[Counter]:
    """The characters before each punctuation mark: equal before and after a shuffle iff no word crossed it."""
    return [Counter(text[:i]) for i, c in enumerate(text) if c in punctuation]


def test_word_order_moves_whole_words_within_a_clause(libraries):
    [perturbation] = parse_perturbations("word_order:1.0")
    cases = {
        "zh": ("他们出现在机场，退休了。”里克说他的922 Ex-O在这里工作了很多年", ("出现", "机场", "退休", "922", "Ex", "很多")),
        "th": ("เขาพูดว่าฉันขึ้นมาแล้ว ฉันไม่ได้คิดอะไรเกี่ยวกับเรื่องนี้", ("เขา", "ขึ้น", "เรื่อง", "เกี่ยวกับ")),
        "ja": ("彼は学校に行きました。私は家で本を読みました。", ("行きました", "読みました", "学校に")),
        "en": ("I'm sure that 42 well-known cats sat here, and they don't mind the dogs at all.", ()),
    }
    for language, (text, words) in cases.items():
        for seed in SEEDS:
            out = perturbation.perturb_text(text, language, seed)
            assert sorted(out) == sorted(text) and out != text
            assert _prefix_counts(out) == _prefix_counts(text), (language, out)
            for word in words:
                assert out.count(word) == text.count(word), (language, word, out)
    for seed in SEEDS:  # verb-final languages: the predicate ends its clause, the arguments move around it
        out = perturbation.perturb_text("타바시 강은 루마니아 류드라 강의 지류이다.", "ko", seed)
        assert out.endswith("지류이다.") and out != "타바시 강은 루마니아 류드라 강의 지류이다."
        assert perturbation.perturb_text(cases["ja"][0], "ja", seed).endswith("読みました。")
    out = perturbation.perturb_text(cases["en"][0], "en", 0)
    for token in ("I'm", "42", "well-known", "don't"):
        assert out.index(token) == cases["en"][0].index(token), out  # fixed tokens stay in place


def test_paws_word_order_is_refused_and_forcible():
    from fastxlt.robustness.labels import check_label_preserving

    [order] = parse_perturbations("word_order")
    with pytest.raises(PerturbationError, match="refused on pawsx") as error:
        check_label_preserving("pawsx", [order.name])
    assert "\n" not in str(error.value) and "--allow-label-changing" in str(error.value)
    check_label_preserving("pawsx", [order.name], allow=True)
    check_label_preserving("xnli", [order.name])
    check_label_preserving("pawsx", ["char", "code_switch_to_en"])
    assert "refused on pawsx" in order.unavailable("de", None, task="pawsx")
    assert order.unavailable("de", None, task="xnli") is None


def test_a_missing_segmenter_is_refused_in_one_line(monkeypatch):
    from fastxlt.robustness import segment

    segment._jieba.cache_clear()
    monkeypatch.setitem(sys.modules, "jieba", None)
    try:
        with pytest.raises(MissingLibraryError, match=r"jieba.*pip install 'fastxlt\[robustness\]'") as error:
            parse_perturbations("word_order")[0].perturb_text("他说你好", "zh", 0)
        assert "\n" not in str(error.value)
    finally:
        segment._jieba.cache_clear()


# ------------------------------------------------------------------------------------------ code-switching


def test_code_switching_in_the_evaluated_script(shared_data, libraries):
    import opencc

    from fastxlt.robustness.muse import load_dictionary
    from fastxlt.robustness.segment import pieces

    muse = str(shared_data / "muse")
    to_simplified = opencc.OpenCC("t2s").convert
    from_en = load_dictionary(muse, "zh", False)
    assert all(to_simplified(word) == word for word in from_en.entries.values())
    hindi = load_dictionary(muse, "hi", True)
    assert hindi.translate("है") != "hai" and hindi.translate("लिए") != "roleplay"
    [to_en] = parse_perturbations("code_switch_to_en:1.0")
    for text in _texts(str(shared_data), "xnli", "zh", 20):
        out = to_en.perturb_text(text, "zh", 0, muse_dir=muse)
        words = [p.text for p in pieces(text, "zh")]
        for english in regex.findall(r"[a-z]+", out):  # every replacement took a whole jieba word
            assert any(load_dictionary(muse, "zh", True).translate(w) == english for w in words) or english in text
    for text in _texts(str(shared_data), "xnli", "th", 20):
        out = to_en.perturb_text(text, "th", 0, muse_dir=muse)
        assert not regex.search(r"[A-Za-z][\p{Thai}]|[\p{Thai}][A-Za-z]", out), out  # English set off by spaces
        assert not regex.search(r"[a-z]{2,}[A-Z]", out)


def test_coverage_is_recorded_and_a_cap_warned(shared_data, libraries):
    from fastxlt.robustness.dump import coverage_warning

    [switch] = parse_perturbations("code_switch_to_en:1.0")
    text = _texts(str(shared_data), "xnli", "zh", 1)[0]
    outcome = switch.apply(text, "zh", 0, muse_dir=shared_data / "muse")
    assert 0 < outcome.coverage < 1 and outcome.edit_rate == pytest.approx(outcome.coverage)
    assert "covers" in coverage_warning(switch, "zh", outcome.coverage)
    assert coverage_warning(parse_perturbations("code_switch_to_en:0.1")[0], "zh", 0.5) is None
