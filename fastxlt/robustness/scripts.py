"""Scripts, alphabets and grapheme-safe units for every XNLI and PAWS-X language.

Text perturbations must never produce broken text: a combining mark separated from its base, half a
Devanagari conjunct, half a Hangul syllable written as jamo, or a Latin letter inserted into Thai. So
they never operate on code points or bytes: they operate on *extended grapheme clusters* (Unicode
UAX #29, including the Indic conjunct rule GB9c, via the ``regex`` module's ``\\X``), and they only
insert letters from the language's own alphabet.

Each language's alphabet is derived from its script: Unicode ranges for the large scripts (Han,
kana, Hangul syllables, Arabic, Thai consonants, Devanagari letters) and the orthography's letter
inventory for alphabets that differ between languages of one script (Bulgarian has no ы, Turkish has
ı and no q, Vietnamese has tone-marked vowels). Alphabets hold *base letters only* (no combining
marks), in NFC, lowercase where the script has case.

Words: languages written with spaces split on anything that is not a letter, mark or digit.
Chinese, Japanese and Thai are written without spaces; their documented, model-free segmentation
(``segment_units``) is: Chinese, one Han character per word; Japanese, runs of one script (a kanji
run, a hiragana run, a katakana run); Thai, Thai character clusters (a leading vowel, the consonant
with its marks, and following vowels stay together). ``tokenizer_segmenter`` gives the model's own
pieces instead.
"""

from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import regex

from fastxlt.robustness.errors import PerturbationError

# Languages whose words are not separated by spaces.
UNSPACED = frozenset({"zh", "ja", "th"})

# language -> the Unicode scripts its own letters are written in
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "en": ("Latin",), "de": ("Latin",), "es": ("Latin",), "fr": ("Latin",), "tr": ("Latin",),
    "sw": ("Latin",), "vi": ("Latin",),
    "ar": ("Arabic",), "ur": ("Arabic",),
    "bg": ("Cyrillic",), "ru": ("Cyrillic",),
    "el": ("Greek",),
    "hi": ("Devanagari",),
    "th": ("Thai",),
    "zh": ("Han",),
    "ja": ("Han", "Hiragana", "Katakana"),
    "ko": ("Hangul",),
}

_LATIN = "abcdefghijklmnopqrstuvwxyz"


def _span(first: int, last: int) -> str:
    return "".join(chr(c) for c in range(first, last + 1))


def _vietnamese() -> str:
    """Vietnamese letters: 29 base letters and every vowel with each of the five tone marks (NFC)."""
    base = "aăâbcdđeêghiklmnoôơpqrstuưvxy"
    vowels = "aăâeêioôơuưy"
    tones = "\u0300\u0301\u0303\u0309\u0323"  # grave, acute, tilde, hook above, dot below
    toned = [unicodedata.normalize("NFC", v + t) for v in vowels for t in tones]
    return base + "".join(toned)


def _own_alphabets() -> dict[str, dict[str, str]]:
    """language -> script -> its letters (base letters only; lowercase where the script has case)."""
    cyrillic_ru = _span(0x0430, 0x044F) + "ё"
    return {
        "en": {"Latin": _LATIN},
        "sw": {"Latin": _LATIN},
        "de": {"Latin": _LATIN + "äöüß"},
        "es": {"Latin": _LATIN + "áéíóúñü"},
        "fr": {"Latin": _LATIN + "àâæçéèêëîïôœùûüÿ"},
        "tr": {"Latin": "abcçdefgğhıijklmnoöprsştuüvyz"},
        "vi": {"Latin": _vietnamese()},
        "ar": {"Arabic": _span(0x0621, 0x063A) + _span(0x0641, 0x064A)},
        "ur": {"Arabic": "آابپتٹثجچحخدڈذرڑزژسشصضطظعغفقکگلمنںوہھءیےئؤۂۓ"},
        "ru": {"Cyrillic": cyrillic_ru},
        "bg": {"Cyrillic": "абвгдежзийклмнопрстуфхцчшщъьюя"},
        "el": {"Greek": "αβγδεζηθικλμνξοπρσςτυφχψω" + "άέήίόύώϊϋΐΰ"},
        "hi": {"Devanagari": _span(0x0905, 0x0914) + _span(0x0915, 0x0939) + _span(0x0958, 0x095F)},
        "th": {"Thai": _span(0x0E01, 0x0E2E) + "ะา" + _span(0x0E40, 0x0E44)},  # consonants, vowel letters
        "zh": {"Han": _span(0x4E00, 0x9FA5)},
        "ja": {"Han": _span(0x4E00, 0x9FA5), "Hiragana": _span(0x3041, 0x3093), "Katakana": _span(0x30A1, 0x30F6)},
        "ko": {"Hangul": _span(0xAC00, 0xD7A3)},
    }


@dataclass(frozen=True)
class Alphabet:
    """A language's own letters, per script, and how to recognise a cluster written in them."""

    language: str
    letters: dict[str, str]  # script -> letters

    def script_of(self, cluster: str) -> str | None:
        """The script of ``cluster`` if its base is a letter of one of the language's scripts, else None.

        Foreign-script words (Latin names in Chinese text) and punctuation, digits and spaces are None:
        perturbations leave them alone."""
        base = cluster[0]
        if not base.isalpha():
            return None
        for script in self.letters:
            if regex.match(rf"\p{{Script={script}}}", base):
                return script
        return None

    def contains(self, char: str) -> bool:
        """Whether ``char`` (one code point, any case) is one of the language's letters."""
        lower = char.lower()
        return any(lower in letters or char in letters for letters in self.letters.values())

    def cased_choice(self, script: str, like: str, pick: Callable[[str], str]) -> str:
        """A letter of ``script`` drawn by ``pick``, upper-cased when ``like`` is an upper-case letter."""
        letter = pick(self.letters[script])
        upper = letter.upper()
        return upper if like[:1].isupper() and len(upper) == 1 else letter


@lru_cache(maxsize=None)
def alphabet(language: str) -> Alphabet:
    """The alphabet of an XNLI / PAWS-X language; a one-line error for a language without one."""
    alphabets = _own_alphabets()
    if language not in alphabets:
        raise PerturbationError(
            f"no alphabet for language '{language}'; text perturbations support {', '.join(sorted(alphabets))}"
        )
    return Alphabet(language, alphabets[language])


def graphemes(text: str) -> list[str]:
    """Extended grapheme clusters of ``text`` (their concatenation is ``text``)."""
    return regex.findall(r"\X", text)


def is_word_char_cluster(cluster: str) -> bool:
    """Letters, marks and digits make words; everything else (space, punctuation, symbols) separates them."""
    return bool(regex.match(r"[\p{L}\p{M}\p{N}]", cluster))


_THAI_LEADING = frozenset("เแโใไ")
_THAI_FOLLOWING = frozenset("ะาๅๆ")


def segment_units(text: str, language: str) -> list[tuple[str, bool]]:
    """``text`` cut into consecutive (piece, is_word) parts whose concatenation is ``text``.

    Words are what word-order perturbations move; the other parts (spaces, punctuation) stay put.
    Spaced languages: runs of letters, marks and digits. zh, ja, th: see the module docstring.
    """
    clusters = graphemes(text)
    if language not in UNSPACED:
        return _runs(clusters, lambda c: "w" if is_word_char_cluster(c) else None)
    if language == "zh":
        counter = itertools.count()
        return _runs(clusters, lambda c: (None if not is_word_char_cluster(c) else
                                          ("han", next(counter)) if regex.match(r"\p{Script=Han}", c) else "other"))
    if language == "ja":
        return _runs(clusters, _japanese_class)
    return _thai_units(clusters)


def _japanese_class(cluster: str):
    if not is_word_char_cluster(cluster) and cluster != "ー":
        return None
    for script in ("Han", "Hiragana", "Katakana"):
        if regex.match(rf"\p{{Script={script}}}", cluster):
            return script
    return "Katakana" if cluster == "ー" else "other"


def _runs(clusters: list[str], key) -> list[tuple[str, bool]]:
    """Group consecutive clusters with the same non-None key into one word; None-key clusters are separators.

    A key that never repeats (Chinese Han characters) makes every such cluster a word of its own."""
    parts: list[tuple[str, bool]] = []
    previous = object()
    for cluster in clusters:
        k = key(cluster)
        if k is not None and parts and parts[-1][1] and k == previous:
            parts[-1] = (parts[-1][0] + cluster, True)
        elif k is None and parts and not parts[-1][1]:
            parts[-1] = (parts[-1][0] + cluster, False)
        else:
            parts.append((cluster, k is not None))
        previous = k
    return parts


def _thai_units(clusters: list[str]) -> list[tuple[str, bool]]:
    """Thai character clusters: a leading vowel joins the next cluster, following vowels and ๆ the previous one;
    non-Thai words are runs as in spaced languages."""
    parts: list[tuple[str, bool]] = []
    pending = ""  # a leading vowel waiting for its consonant
    for cluster in clusters:
        thai = _is_thai(cluster) and is_word_char_cluster(cluster)
        if thai and cluster in _THAI_LEADING:
            pending += cluster
            continue
        previous_thai_word = bool(parts) and parts[-1][1] and _is_thai(parts[-1][0][-1])
        if thai and cluster in _THAI_FOLLOWING and not pending and previous_thai_word:
            parts[-1] = (parts[-1][0] + cluster, True)
            continue
        piece, had_pending, pending = pending + cluster, bool(pending), ""
        word = had_pending or is_word_char_cluster(cluster)
        if word and not thai and not had_pending and parts and parts[-1][1] and not previous_thai_word:
            parts[-1] = (parts[-1][0] + piece, True)  # a non-Thai word (a Latin name, digits) continues
        elif not word and parts and not parts[-1][1]:
            parts[-1] = (parts[-1][0] + piece, False)
        else:
            parts.append((piece, word))
    if pending:
        parts.append((pending, True))
    return parts


def _is_thai(piece: str) -> bool:
    return bool(regex.match(r"\p{Script=Thai}", piece))


def tokenizer_segmenter(tokenizer) -> Callable[[str, str], list[tuple[str, bool]]]:
    """Segmentation by the model's own pieces (a fast Hugging Face tokenizer's offsets), snapped to grapheme
    boundaries so that no piece boundary splits a cluster; spaces and punctuation are separators."""

    def segment(text: str, language: str) -> list[tuple[str, bool]]:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        grapheme_ends = set()
        position = 0
        for cluster in graphemes(text):
            position += len(cluster)
            grapheme_ends.add(position)
        cuts = sorted({end for _, end in offsets if end in grapheme_ends} | {0, len(text)})
        parts: list[tuple[str, bool]] = []
        for start, end in zip(cuts, cuts[1:]):
            for piece, is_word in _runs(graphemes(text[start:end]), lambda c: "w" if is_word_char_cluster(c) else None):
                parts.append((piece, is_word))
        return parts

    return segment


def is_broken(text: str) -> bool:
    """True when ``text`` has a combining mark without a base (at the start or after a space or punctuation)."""
    for cluster in graphemes(text):
        if unicodedata.category(cluster[0]) in ("Mn", "Mc", "Me"):
            return True
    return False
