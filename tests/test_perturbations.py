"""Text perturbations on real XNLI and PAWS-X text of every language: deterministic per (seed, example),
script-correct, never broken, NFC, labels and originals untouched, strength 0 the identity; code-switching
puts only cleaned dictionary translations (checked against the MUSE files read here independently);
and the issue-21 defects, one test each: typos per script, word order on the field's segmenters,
code-switching in the evaluated script, label-changing perturbations refused."""

from __future__ import annotations

import copy
import unicodedata
from functools import lru_cache

import pytest
import regex

from fastxlt.robustness import PerturbationError, parse_perturbations
from fastxlt.robustness.code_switch import switch_words, unavailable_reason
from fastxlt.robustness.muse import load_dictionary
from fastxlt.robustness.scripts import alphabet, graphemes
from fastxlt.robustness.seeding import text_rng
from fastxlt.robustness.segment import Kind, pieces

PER_LANGUAGE = 20  # sentences per language and task (two texts each): seconds per case with the segmenters
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
    return set(original) | set(original.swapcase()) | _inventory(name, language, str(muse_dir))


@lru_cache(maxsize=None)
def _inventory(name: str, language: str, muse_dir: str) -> frozenset[str]:
    allowed: set[str] = set()
    for script, letters in alphabet(language).letters.items():
        allowed |= set(letters) | set(letters.upper())
        if name.startswith("char"):  # a typo may change a vowel sign or tone mark (ि/ी, ่/้): the script's marks
            allowed |= _marks(script)
    if name.startswith("code_switch"):
        dictionary = load_dictionary(muse_dir, language, name == "code_switch_to_en")
        allowed |= {c for t in dictionary.entries.values() for c in t.upper() + t}
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
    if not _capped(perturbation, examples, language, muse_dir):  # all covered words replaced: no choice left
        assert sum(a != b for a, b in zip(first, other_seed)) >= PER_LANGUAGE // 3  # another seed, other perturbations
    assert sum(p != e for p, e in zip(first, examples)) >= PER_LANGUAGE // 2  # it does perturb
    assert [p.label for p in first] == [e.label for e in examples]
    identity = parse_perturbations(f"{name}:0")[0]
    assert [identity.perturb_example(ex, language, 1, muse_dir) for ex in examples] == examples
    for original, perturbed in zip(examples, first):
        for before, after in ((original.text_a, perturbed.text_a), (original.text_b, perturbed.text_b)):
            _check_script(name, language, before, after, muse_dir)


def _capped(perturbation, examples, language: str, muse_dir) -> bool:
    """Whether code-switching asks for more words than the dictionary covers (then every seed replaces them all)."""
    if not perturbation.name.startswith("code_switch"):
        return False
    outcomes = [o for ex in examples for o in perturbation.perturb_pair(ex, language, 1, muse_dir)[1]]
    return sum(o.coverage for o in outcomes) / len(outcomes) < perturbation.strength


@lru_cache(maxsize=None)
def _marks(script: str) -> frozenset[str]:
    pattern = regex.compile(rf"[\p{{Script={script}}}&&\p{{M}}]", regex.V1)
    return frozenset(chr(c) for c in range(0x0300, 0x3100) if pattern.match(chr(c)))


def _check_script(name: str, language: str, before: str, after: str, muse_dir) -> None:
    after.encode("utf-8")  # no lone surrogates
    if after != before:
        assert unicodedata.is_normalized("NFC", after), (language, name, after)
    before = unicodedata.normalize("NFC", before) if after != before else before
    assert not _lone_marks(after), (language, after)
    allowed = _allowed_chars(name, language, before, muse_dir)
    foreign = {c for c in after if c not in allowed and not _is_neutral(c)}
    assert not foreign, (language, name, foreign, after)
    if name == "word_order":
        assert sorted(after) == sorted(before)  # a permutation of words
    if name == "char_swap":
        assert sorted(after.lower()) == sorted(before.lower())  # a permutation of letters (case stays in place)
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
def test_code_switching_puts_only_dictionary_translations(shared_data, muse_dir, language):
    """Every word code-switching adds is the cleaned dictionary's translation of a word that was there, and the
    cleaned dictionary is a subset of the raw MUSE file (zh: after OpenCC t2s)."""
    pairs = _raw_pairs(muse_dir / "dictionaries" / f"en-{language}.txt", language)
    for to_english in (True, False):
        dictionary = load_dictionary(str(muse_dir), language, to_english)
        for source, target in list(dictionary.entries.items())[:2000]:
            assert ((target, source) if to_english else (source, target)) in pairs
        task = "pawsx" if language == "ja" else "xnli"
        source = language if to_english else "en"
        edits_seen = 0
        for ex in _examples(str(shared_data), task, source):
            text = ex.text_a
            result = switch_words(text, dictionary, 0.5, text_rng(0, "cs", 0.5, language, "a", text))
            after = [p.text.lower() for p in pieces(result.text, source) if p.kind in (Kind.WORD, Kind.FIXED)]
            targets = set(dictionary.entries.values())
            added = [w for w in after if w not in text.lower()]  # words that were not in the text
            assert added or not result.edits
            assert all(w in targets for w in added), (language, to_english, added)
            assert result.edits <= result.known <= result.words
            edits_seen += result.edits
        assert edits_seen >= PER_LANGUAGE // 2, (language, to_english, edits_seen)


def _raw_pairs(path, language: str) -> set[tuple[str, str]]:
    convert = (lambda text: text)
    if language == "zh":
        import opencc

        convert = opencc.OpenCC("t2s").convert
    pairs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        english, _, foreign = line.partition("\t") if "\t" in line else line.partition(" ")
        pairs.add((english.strip().lower(), convert(unicodedata.normalize("NFC", foreign.strip())).lower()))
    return pairs


def test_languages_without_a_dictionary_are_reported(muse_dir, tmp_path):
    for language in ("sw", "ur", "ko"):
        assert f"en-{language}" in unavailable_reason(muse_dir, language)
    assert "English" in unavailable_reason(muse_dir, "en")
    assert "no MUSE directory" in unavailable_reason(None, "de")


def test_word_segmentation_is_lossless_and_grapheme_safe(shared_data):
    for task, language in CASES:
        for ex in _examples(str(shared_data), task, language)[:5]:
            boundaries = {0}
            for cluster in graphemes(ex.text_a):
                boundaries.add(max(boundaries) + len(cluster))
            parts = pieces(ex.text_a, language)
            assert "".join(part.text for part in parts) == ex.text_a
            position = 0
            for part in parts:
                position += len(part.text)
                assert position in boundaries  # no cut inside a grapheme cluster


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
