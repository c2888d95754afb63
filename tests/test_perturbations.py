"""Text perturbations on real XNLI and PAWS-X text of every language: deterministic per (seed, example),
script-correct, never broken, labels and originals untouched, strength 0 the identity; code-switching
replaces only dictionary words by their dictionary translations (checked against the MUSE files read
here independently)."""

from __future__ import annotations

import copy
import unicodedata
from functools import lru_cache

import pytest

from fastxlt.robustness import PerturbationError, parse_perturbations
from fastxlt.robustness.code_switch import load_dictionary, switch_words, unavailable_reason
from fastxlt.robustness.scripts import alphabet, graphemes, segment_units, tokenizer_segmenter
from fastxlt.robustness.seeding import text_rng

PER_LANGUAGE = 30
XNLI = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
PAWSX = ("de", "en", "es", "fr", "ja", "ko", "zh")
CASES = [("xnli", lang) for lang in XNLI] + [("pawsx", lang) for lang in PAWSX]
TEXT_PERTURBATIONS = ("char", "char_swap", "char_drop", "char_insert", "char_substitute", "word_order",
                      "code_switch_to_en", "code_switch_from_en")


@lru_cache(maxsize=None)
def _examples(root: str, task: str, language: str):
    from fastxlt.tasks.base import get_task

    return tuple(get_task(task).load("validation", language, f"{root}/{task}")[:PER_LANGUAGE])


@pytest.fixture
def muse_dir(shared_data):
    return shared_data / "muse"


def _is_neutral(char: str) -> bool:
    """Punctuation, digits, symbols and spaces may appear anywhere."""
    return unicodedata.category(char)[0] in "PNZS" or char.isspace()


def _lone_marks(text: str) -> list[int]:
    """Positions of combining marks with no base letter before them (an independent check, code point by code point)."""
    lone = []
    for i, char in enumerate(text):
        if unicodedata.category(char) in ("Mn", "Mc", "Me"):
            j = i - 1
            while j >= 0 and unicodedata.category(text[j]) in ("Mn", "Mc", "Me"):
                j -= 1
            if j < 0 or text[j].isspace() or _is_neutral(text[j]) and text[j] not in "\u200c\u200d":
                lone.append(i)
    return lone


def _allowed_chars(name: str, language: str, original: str, muse_dir) -> set[str]:
    """What a perturbed text may contain besides neutral characters: the original text and the letters of the
    language's alphabet (for code-switching: the other language's dictionary words)."""
    return set(original) | _inventory(name, language, str(muse_dir))


@lru_cache(maxsize=None)
def _inventory(name: str, language: str, muse_dir: str) -> frozenset[str]:
    allowed: set[str] = set()
    for letters in alphabet(language).letters.values():
        allowed |= set(letters) | set(letters.upper())
    if name.startswith("code_switch"):
        dictionary = load_dictionary(muse_dir, language, name == "code_switch_to_en")
        allowed |= {c for translations in dictionary.entries.values() for t in translations for c in t.upper() + t}
    return frozenset(allowed)


@pytest.mark.parametrize("task,language", CASES)
@pytest.mark.parametrize("name", TEXT_PERTURBATIONS)
def test_text_perturbation_on_real_text(shared_data, muse_dir, task, language, name):
    examples = list(_examples(str(shared_data), task, language))
    assert len(examples) == PER_LANGUAGE
    [perturbation] = parse_perturbations(f"{name}:0.3")
    reason = perturbation.unavailable(language, muse_dir)
    if reason is not None:  # reported, not silently skipped
        assert name.startswith("code_switch") and (language in ("sw", "ur", "ko") or language == "en")
        with pytest.raises(PerturbationError, match=language):
            perturbation.perturb_text(examples[0].text_a, language, 0, muse_dir=muse_dir)
        return
    source = perturbation.source_language(language)
    if source != language:  # code_switch_from_en perturbs the English sentences of the same task
        examples = list(_examples(str(shared_data), task, source))
    originals = copy.deepcopy(examples)
    first = [perturbation.perturb_example(ex, language, 1, muse_dir) for ex in examples]
    again = [perturbation.perturb_example(ex, language, 1, muse_dir) for ex in examples]
    other_seed = [perturbation.perturb_example(ex, language, 2, muse_dir) for ex in examples]
    assert examples == originals  # the originals are never altered
    assert first == again  # deterministic per (seed, example)
    assert sum(a != b for a, b in zip(first, other_seed)) >= PER_LANGUAGE // 3  # another seed, other perturbations
    assert sum(p != e for p, e in zip(first, examples)) >= PER_LANGUAGE // 2  # it does perturb
    assert [p.label for p in first] == [e.label for e in examples]
    identity = parse_perturbations(f"{name}:0")[0]
    assert [identity.perturb_example(ex, language, 1, muse_dir) for ex in examples] == examples
    for original, perturbed in zip(examples, first):
        for before, after in ((original.text_a, perturbed.text_a), (original.text_b, perturbed.text_b)):
            _check_script(name, language, before, after, muse_dir)


def _check_script(name: str, language: str, before: str, after: str, muse_dir) -> None:
    after.encode("utf-8")  # no lone surrogates
    unicodedata.normalize("NFC", after)
    assert not _lone_marks(after), (language, after)
    allowed = _allowed_chars(name, language, before, muse_dir)
    foreign = {c for c in after if c not in allowed and not _is_neutral(c)}
    assert not foreign, (language, name, foreign, after)
    if name == "char_swap" or name == "word_order":
        assert sorted(after) == sorted(before)  # a permutation of letters (words)
    if name == "char_drop":
        assert len(after) <= len(before)
    if name == "char_insert":
        assert len(after) >= len(before)


@pytest.mark.parametrize("task,language", CASES)
def test_alphabet_covers_the_language_text(shared_data, task, language):
    """Every alphabet is the language's own: >= 97% of the own-script letters of its real text are in it."""
    letters = alphabet(language)
    seen = [c[0] for ex in _examples(str(shared_data), task, language) for c in graphemes(ex.text_a + ex.text_b)
            if letters.script_of(c) is not None]
    assert seen
    covered = sum(letters.contains(c) for c in seen) / len(seen)
    assert covered >= 0.97, (language, covered)


def test_char_noise_never_puts_latin_into_thai_and_keeps_clusters(shared_data):
    [perturbation] = parse_perturbations("char:0.8")
    for ex in _examples(str(shared_data), "xnli", "th"):
        out = perturbation.perturb_text(ex.text_a, "th", 0)
        new_latin = {c for c in out if "LATIN" in unicodedata.name(c, "")} - set(ex.text_a)
        assert not new_latin
        assert not _lone_marks(out)
    hindi = parse_perturbations("char:1.0")[0].perturb_text("क्षत्रिय हिन्दी", "hi", 0)
    assert not _lone_marks(hindi) and hindi != "क्षत्रिय हिन्दी"


@pytest.mark.parametrize("language", ["de", "fr", "ru", "hi", "ar", "zh", "ja", "th", "vi", "tr", "el", "bg", "es"])
def test_code_switching_replaces_only_dictionary_words(shared_data, muse_dir, language):
    pairs = _raw_pairs(muse_dir / "dictionaries" / f"en-{language}.txt")
    for to_english in (True, False):
        dictionary = load_dictionary(str(muse_dir), language, to_english)
        task = "pawsx" if language == "ja" else "xnli"
        source = language if to_english else "en"
        edits_seen = 0
        for i, ex in enumerate(_examples(str(shared_data), task, source)):
            text = ex.text_a
            out, edits, words, known = switch_words(text, dictionary, 0.5, text_rng(0, "cs", 0.5, language, "a", text))
            rebuilt, position = "", 0
            for edit in edits:
                assert edit.start >= position and text[edit.start:edit.end] == edit.source
                english, foreign = (edit.target, edit.source) if to_english else (edit.source, edit.target)
                assert (english.lower(), foreign.lower()) in pairs, (english, foreign)
                if language not in ("zh", "ja", "th") or not to_english:  # whole words in spaced text
                    assert edit.start == 0 or not text[edit.start - 1].isalpha()
                    assert edit.end == len(text) or not text[edit.end].isalpha()
                rebuilt += text[position:edit.start] + edit.target
                position = edit.end
            assert rebuilt + text[position:] == out
            assert len(edits) <= known <= words
            edits_seen += len(edits)
        assert edits_seen >= PER_LANGUAGE // 2, (language, to_english, edits_seen)


def _raw_pairs(path) -> set[tuple[str, str]]:
    pairs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        english, _, foreign = line.partition("\t") if "\t" in line else line.partition(" ")
        pairs.add((english.strip().lower(), foreign.strip().lower()))
    return pairs


def test_languages_without_a_dictionary_are_reported(muse_dir, tmp_path):
    for language in ("sw", "ur", "ko"):
        assert f"en-{language}" in unavailable_reason(muse_dir, language)
    assert "English" in unavailable_reason(muse_dir, "en")
    assert "no MUSE directory" in unavailable_reason(None, "de")


def test_word_segmentation_is_lossless_and_grapheme_safe(shared_data, synthetic_model):
    from fastxlt.models.encoder import load_tokenizer

    by_tokenizer = tokenizer_segmenter(load_tokenizer(synthetic_model))
    for task, language in CASES:
        for ex in _examples(str(shared_data), task, language)[:5]:
            boundaries = {0}
            for cluster in graphemes(ex.text_a):
                boundaries.add(max(boundaries) + len(cluster))
            for segment in (segment_units, by_tokenizer):
                parts = segment(ex.text_a, language)
                assert "".join(piece for piece, _ in parts) == ex.text_a
                position = 0
                for piece, _ in parts:
                    position += len(piece)
                    assert position in boundaries  # no cut inside a grapheme cluster
    assert [p for p, w in segment_units("他说，妈妈", "zh") if w] == ["他", "说", "妈", "妈"]
    assert [p for p, w in segment_units("เขาพูด", "th") if w] == ["เข", "า", "พู", "ด"] or \
        "".join(p for p, _ in segment_units("เขาพูด", "th")) == "เขาพูด"


def test_specs_fail_in_one_line():
    assert [p.key for p in parse_perturbations("char:0.1, word_order,pgd:0.5")] == ["char:0.1", "word_order:0.3", "pgd:0.5"]
    assert parse_perturbations(["char:0.1", "char:0.1"])[0].folder(3) == "char-0.1-seed3"
    for bad, message in (("nope", "unknown perturbation"), ("char:x", "not a number"), ("char:1.5", r"\[0, 1\]"),
                         ("pgd:-1", ">= 0")):
        with pytest.raises(PerturbationError, match=message) as error:
            parse_perturbations(bad)
        assert "\n" not in str(error.value)
    with pytest.raises(PerturbationError, match="no alphabet"):
        parse_perturbations("char")[0].perturb_text("abc", "xx", 0)
