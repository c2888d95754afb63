"""Scripts, alphabets and the units of character noise for every XNLI and PAWS-X language.

Text perturbations must never produce broken text: a combining mark separated from its base, half a
Devanagari conjunct, a Thai leading vowel split from its consonant, half a Hangul syllable written as jamo,
or a Latin letter inserted into Thai. So they never operate on code points or bytes but on *units*:

| script                         | unit                                                                 |
|--------------------------------|----------------------------------------------------------------------|
| Latin, Cyrillic, Greek, Arabic | a letter with its combining marks (an extended grapheme cluster)     |
| Devanagari                     | an akshara: a grapheme cluster, conjuncts and matras included (GB9c) |
| Thai                           | a Thai character cluster (TCC, pythainlp): leading vowel + consonant + marks + following vowel |
| Han                            | one character                                                        |
| kana                           | one mora: a kana with the small kana after it (ファ, しょ, っ stays with its kana) |
| Hangul                         | one syllable (its typos are made at the jamo level, see ``typos``)   |

Grapheme clusters are Unicode UAX #29 clusters (the ``regex`` module's ``\\X``). Each language has two
letter sets: ``letters``, every letter of its orthography (to recognise its own text: Thai ฤ, Hindi's
precomposed nukta letters), and ``typing``, the modern letters a typist produces (what character noise may
insert: no obsolete Thai ฃ ฅ ฦ, no precomposed nukta letters, which NFC decomposes anyway, no Hindi ऌ ऍ).
Both hold base letters only, in NFC, lowercase where the script has case.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import regex

from fastxlt.robustness.errors import PerturbationError, require

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


# Letters of ``letters`` that a modern typist never produces (obsolete, or precomposed forms NFC decomposes).
_NOT_TYPED = {
    "hi": _span(0x0958, 0x095F) + "ऄऌऍऎऑऒऋऩऱऴ",
    "th": "ฃฅฤฦ",
    "ja": "ゐゑヰヱヵヶヷヸヹヺ" + "ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮ",  # small kana only follow a kana
}


@dataclass(frozen=True)
class Alphabet:
    """A language's own letters, per script, and how to recognise a cluster written in them."""

    language: str
    letters: dict[str, str]  # script -> letters
    typing: dict[str, str]  # script -> the modern letters character noise may produce

    def script_of(self, cluster: str) -> str | None:
        """The script of ``cluster`` if its base is a letter of one of the language's scripts, else None.

        Foreign-script words (Latin names in Chinese text) and punctuation, digits and spaces are None:
        perturbations leave them alone."""
        return _script_among(cluster[0], tuple(self.letters)) if cluster else None

    def contains(self, char: str) -> bool:
        """Whether ``char`` (one code point, any case) is one of the language's letters."""
        lower = char.lower()
        return any(lower in letters or char in letters for letters in self.letters.values())


@lru_cache(maxsize=65536)
def _script_among(char: str, scripts: tuple[str, ...]) -> str | None:
    """The first of ``scripts`` that letter ``char`` is written in (None for a non-letter or another script)."""
    if not char.isalpha():
        return None
    for script in scripts:
        if regex.match(rf"\p{{Script={script}}}", char):
            return script
    return None


@lru_cache(maxsize=None)
def alphabet(language: str) -> Alphabet:
    """The alphabet of an XNLI / PAWS-X language; a one-line error for a language without one."""
    alphabets = _own_alphabets()
    if language not in alphabets:
        raise PerturbationError(
            f"no alphabet for language '{language}'; text perturbations support {', '.join(sorted(alphabets))}"
        )
    letters = alphabets[language]
    dropped = _NOT_TYPED.get(language, "")
    typing = {script: "".join(c for c in chars if c not in dropped) for script, chars in letters.items()}
    return Alphabet(language, letters, typing)


def graphemes(text: str) -> list[str]:
    """Extended grapheme clusters of ``text`` (their concatenation is ``text``)."""
    return regex.findall(r"\X", text)


def is_word_char_cluster(cluster: str) -> bool:
    """Letters, marks and digits make words; everything else (space, punctuation, symbols) separates them."""
    return bool(regex.match(r"[\p{L}\p{M}\p{N}]", cluster))


def units(text: str, language: str) -> list[str]:
    """The units of character noise (see the table above); their concatenation is ``text``."""
    if language == "ja":
        return _morae(graphemes(text))
    if language != "th":
        return graphemes(text)
    require("pythainlp", "Thai character noise (th)")
    from pythainlp.tokenize import tcc

    return [unit for piece in tcc.segment(text) for unit in ([piece] if _is_thai(piece) else graphemes(piece))]


_SMALL_KANA = frozenset("ぁぃぅぇぉゃゅょゎァィゥェォャュョヮ")


def _morae(clusters: list[str]) -> list[str]:
    """Japanese clusters with each small kana joined to the kana before it (a small kana alone is no unit)."""
    out: list[str] = []
    for cluster in clusters:
        if cluster in _SMALL_KANA and out and regex.match(r"[\p{Hiragana}\p{Katakana}]", out[-1][-1]):
            out[-1] += cluster
        else:
            out.append(cluster)
    return out


def _is_thai(piece: str) -> bool:
    return bool(regex.match(r"\p{Script=Thai}", piece))


def is_broken(text: str) -> bool:
    """True when ``text`` has a combining mark without a base (at the start or after a space or punctuation)."""
    for cluster in graphemes(text):
        if unicodedata.category(cluster[0]) in ("Mn", "Mc", "Me"):
            return True
    return False
