"""What a typist of each script gets wrong: the letters character noise substitutes, inserts and drops.

Why per script: a uniform draw from a Unicode block is not a typo. It inserts characters no reader has
seen (覵, 鬶), obsolete letters (Thai ฃ ฅ ฦ), letter forms that cannot stand mid-word (Arabic ة ى) and
misses the errors people actually make (Hindi ि for ी). The rules, per script:

- Alphabets (Latin, Cyrillic, Greek, Arabic, Devanagari consonants and vowels, Thai consonants, kana):
  a new letter is drawn from the language's modern letters (``Alphabet.typing``) with the frequencies
  they have in the text being perturbed (plus 0.5 for every letter, so that a short text still has
  every letter), within the class of the letter it replaces (a Devanagari consonant for a consonant, a
  vowel for a vowel, hiragana for hiragana). A substitution keeps the replaced letter's case; an
  insertion is lower case unless its word is written in capitals.
- Devanagari: a substitution is a matra confusion (ि/ी, ु/ू, े/ै, ो/ौ, ं/ँ) when the akshara has a matra,
  else its first consonant changes (its matras, virama and conjunct stay). Insertions are consonants,
  never an independent vowel inside a word.
- Arabic (ar): half the substitutions are the confusions of Arabic spelling (ا/أ/إ/آ where a word or its
  article ال starts; word-final ه/ة, ي/ى, ت/ة); ة and ى are only ever produced at the end of a word, ء and آ only by a confusion; a swap never
  moves ة or ى and an insertion next to them goes before them.
- Thai: the unit is a character cluster; a substitution swaps ่ and ้ when the cluster has a tone mark
  (half the time), else changes its consonant, keeping the leading vowel and the marks around it.
  Insertions are consonants, placed between clusters, so a leading vowel never loses its consonant.
- Han (Chinese): a substitution is a homophone (same pinyin without tone, pypinyin) among the 2,500
  most frequent characters of jieba's dictionary, drawn by frequency (a pinyin input method's error),
  else a frequent character; an insertion is a frequent homophone of the character before it.
- Japanese: only kana are edited (typos happen at kana input, before kanji conversion); kanji stay; a
  unit is a mora (a small kana stays with its kana) and small kana are never drawn.
- Hangul: jamo-level confusions inside the syllable: ㅐ/ㅔ, ㅒ/ㅖ, ㅙ/ㅚ/ㅞ, ㅢ/ㅣ, plain/tense initials
  (ㄱ/ㄲ, ㄷ/ㄸ, ㅂ/ㅃ, ㅅ/ㅆ, ㅈ/ㅉ, the shift-key slip), final ㅅ/ㅆ/ㄷ, ㄱ/ㄲ, ㅂ/ㅍ, ㅈ/ㅊ, ㄴ/ㅇ; an
  insertion adds a final consonant to an open syllable; a drop removes a final consonant (else the syllable).
"""

from __future__ import annotations

import random
from collections import Counter
from functools import lru_cache

from fastxlt.robustness.errors import require
from fastxlt.robustness.scripts import alphabet

SMOOTHING = 0.5
FREQUENT_HAN = 2500

_MATRA_CONFUSIONS = {"ि": "ी", "ी": "ि", "ु": "ू", "ू": "ु", "े": "ै", "ै": "े", "ो": "ौ", "ौ": "ो", "ं": "ँ", "ँ": "ं"}
_DEVANAGARI_CONSONANTS = frozenset(chr(c) for c in range(0x0915, 0x093A))
_ARABIC_CONFUSIONS = {"ا": "أإ", "أ": "اإ", "إ": "اأ", "آ": "ا"}
_ARABIC_FINAL_CONFUSIONS = {"ه": "ة", "ة": "ه", "ي": "ى", "ى": "ي", "ت": "ة"}
_ARABIC_FINAL_ONLY = frozenset("ةى")
_ARABIC_NEVER_DRAWN = frozenset("ءآ")
_THAI_CONSONANTS = frozenset(chr(c) for c in range(0x0E01, 0x0E2F))
_THAI_TONES = {"่": "้", "้": "่"}

# Hangul: syllable = 0xAC00 + (initial * 21 + medial) * 28 + final
_HANGUL_INITIAL = {0: 1, 1: 0, 3: 4, 4: 3, 7: 8, 8: 7, 9: 10, 10: 9, 12: 13, 13: 12}
_HANGUL_MEDIAL = {1: (5,), 5: (1,), 3: (7,), 7: (3,), 10: (11, 15), 11: (10, 15), 15: (10, 11), 19: (20,), 20: (19,)}
_HANGUL_FINAL = {19: (20, 7), 20: (19,), 7: (19,), 1: (2,), 2: (1,), 17: (26,), 26: (17,), 22: (23,), 23: (22,),
                 4: (21,), 21: (4,)}  # fmt: skip
_HANGUL_ADDED_FINALS = (4, 8, 21, 16, 1)  # ㄴ ㄹ ㅇ ㅁ ㄱ: the commonest finals


class Typist:
    """The typo rules of one language, with letter frequencies taken from the text being perturbed."""

    def __init__(self, language: str, text: str, rng: random.Random):
        self.language = language
        self.rng = rng
        self.letters = alphabet(language)
        self.counts = Counter(char.lower() for char in text)

    def edits(self, script: str) -> bool:
        """Whether units of ``script`` are edited at all (Japanese kanji are not)."""
        return not (self.language == "ja" and script == "Han")

    @staticmethod
    def movable(unit: str, script: str) -> bool:
        """Whether a swap may move ``unit``: not Arabic ة and ى, which only end a word."""
        return not (script == "Arabic" and unit[:1] in _ARABIC_FINAL_ONLY)

    # ---------------------------------------------------------------- the operations

    def substitute(self, unit: str, script: str, final: bool, initial: bool = False) -> str:
        """``unit`` with one typo that keeps its length class (see the module docstring)."""
        if script == "Han":
            return _draw_han(self.rng, _homophones(unit[0]), avoid=unit)
        if script == "Hangul":
            return _hangul_confusion(unit, self.rng)
        if script == "Devanagari":
            return self._devanagari(unit)
        if script == "Thai":
            return self._thai(unit)
        if self.language == "ar" and self.rng.random() < 0.5:  # Urdu spells with other letters
            confused = _arabic_confusion(unit, final, initial, self.rng)
            if confused:
                return confused
        letter = self._draw(script, unit[0], final)
        return (letter.upper() if unit[0].isupper() else letter) + unit[1:]

    def insertion(self, unit: str, script: str, upper: bool) -> str | None:
        """What follows ``unit`` after an insertion (the unit itself included); None when none is possible."""
        if script == "Han":
            return unit + _draw_han(self.rng, _homophones(unit[0]))
        if script == "Hangul":
            return _hangul_add_final(unit, self.rng)
        letter = self._draw(script, _consonant_like(script), final=False)
        if script == "Arabic" and unit[0] in _ARABIC_FINAL_ONLY:
            return letter + unit  # ة and ى end their word: the new letter goes before them
        return unit + (letter.upper() if upper else letter)

    @staticmethod
    def drop(unit: str, script: str) -> str:
        """What is left of a dropped unit: nothing, or a Hangul syllable without its final consonant."""
        if script == "Hangul":
            return _hangul_drop_final(unit)
        return ""

    # ---------------------------------------------------------------- per script

    def _devanagari(self, unit: str) -> str:
        for i, char in enumerate(unit):
            if char in _MATRA_CONFUSIONS:
                return unit[:i] + _MATRA_CONFUSIONS[char] + unit[i + 1:]
        return self._draw("Devanagari", unit[0], final=False) + unit[1:]

    def _thai(self, unit: str) -> str:
        tones = [i for i, char in enumerate(unit) if char in _THAI_TONES]
        if tones and self.rng.random() < 0.5:
            i = tones[0]
            return unit[:i] + _THAI_TONES[unit[i]] + unit[i + 1:]
        consonants = [i for i, char in enumerate(unit) if char in _THAI_CONSONANTS]
        if not consonants:
            return unit
        i = consonants[0]
        return unit[:i] + self._draw("Thai", unit[i], final=False, avoid=unit[i]) + unit[i + 1:]

    def _draw(self, script: str, like: str, final: bool, avoid: str | None = None) -> str:
        """A letter of the same class as ``like``, by its frequency in the text (smoothed)."""
        pool = _same_class(self.letters.typing[script], script, like, final)
        weights = [self.counts.get(letter, 0) + SMOOTHING for letter in pool]
        avoid = like.lower() if avoid is None else avoid
        for _ in range(8):
            letter = self.rng.choices(pool, weights)[0]
            if letter != avoid:
                return letter
        return letter


def _consonant_like(script: str) -> str:
    """A representative of the class an insertion draws from: consonants where the script separates them."""
    return {"Devanagari": "क", "Thai": "ก"}.get(script, "a")


@lru_cache(maxsize=256)
def _same_class(letters: str, script: str, like: str, final: bool) -> tuple[str, ...]:
    """The letters ``like`` may become: consonants for a Devanagari or Thai consonant, Devanagari vowels for
    a vowel; in Arabic, ة and ى at the end of a word only, ء and آ never."""
    if script == "Devanagari":
        consonant = like in _DEVANAGARI_CONSONANTS
        return tuple(c for c in letters if (c in _DEVANAGARI_CONSONANTS) == consonant)
    if script == "Thai":
        return tuple(c for c in letters if c in _THAI_CONSONANTS)
    if script == "Arabic":
        return tuple(c for c in letters if c not in _ARABIC_NEVER_DRAWN and (final or c not in _ARABIC_FINAL_ONLY))
    return tuple(letters)


def _arabic_confusion(unit: str, final: bool, initial: bool, rng: random.Random) -> str | None:
    """Hamza on an alef is confused where a word (or its article) starts; ه/ة, ي/ى, ت/ة where it ends."""
    options = (_ARABIC_CONFUSIONS.get(unit[0], "") if initial else "") + (
        _ARABIC_FINAL_CONFUSIONS.get(unit[0], "") if final else "")
    return rng.choice(options) + unit[1:] if options else None


# ---------------------------------------------------------------------------------------------- Han


@lru_cache(maxsize=1)
def _frequent_han() -> dict[str, int]:
    """The ``FREQUENT_HAN`` most frequent characters of jieba's dictionary (summed word frequencies)."""
    jieba = require("jieba", "Chinese character noise (zh)")
    from pathlib import Path

    counts: Counter[str] = Counter()
    with open(Path(jieba.__file__).parent / "dict.txt", encoding="utf-8") as lines:
        for line in lines:
            word, frequency, *_ = line.split(" ")
            for char in word:
                if "\u4e00" <= char <= "\u9fff":
                    counts[char] += int(frequency)
    return dict(counts.most_common(FREQUENT_HAN))


@lru_cache(maxsize=1)
def _by_pinyin() -> dict[str, tuple[str, ...]]:
    pypinyin = require("pypinyin", "Chinese character noise (zh)")
    groups: dict[str, list[str]] = {}
    for char in _frequent_han():
        groups.setdefault(pypinyin.lazy_pinyin(char)[0], []).append(char)
    return {sound: tuple(chars) for sound, chars in groups.items()}


@lru_cache(maxsize=4096)
def _homophones(char: str) -> tuple[str, ...]:
    """Frequent characters pronounced like ``char`` (tone ignored), else all frequent characters."""
    pypinyin = require("pypinyin", "Chinese character noise (zh)")
    same = tuple(c for c in _by_pinyin().get(pypinyin.lazy_pinyin(char)[0], ()) if c != char)
    return same or tuple(_frequent_han())


def _draw_han(rng: random.Random, pool: tuple[str, ...], avoid: str | None = None) -> str:
    frequency = _frequent_han()
    choices = [c for c in pool if c != avoid] or list(frequency)
    return rng.choices(choices, [frequency[c] for c in choices])[0]


# ---------------------------------------------------------------------------------------------- Hangul


def _jamo(syllable: str) -> tuple[int, int, int] | None:
    code = ord(syllable[0]) - 0xAC00
    if len(syllable) != 1 or not 0 <= code < 11172:
        return None
    return code // 588, (code % 588) // 28, code % 28


def _syllable(initial: int, medial: int, final: int) -> str:
    return chr(0xAC00 + (initial * 21 + medial) * 28 + final)


def _hangul_confusion(unit: str, rng: random.Random) -> str:
    parts = _jamo(unit)
    if parts is None:
        return unit
    initial, medial, final = parts
    options = [_syllable(_HANGUL_INITIAL[initial], medial, final)] if initial in _HANGUL_INITIAL else []
    options += [_syllable(initial, m, final) for m in _HANGUL_MEDIAL.get(medial, ())]
    options += [_syllable(initial, medial, f) for f in _HANGUL_FINAL.get(final, ())]
    if not options:  # no confusion applies: the final consonant is added or removed instead
        options = [_hangul_add_final(unit, rng) or _hangul_drop_final(unit)]
    return rng.choice(options)


def _hangul_add_final(unit: str, rng: random.Random) -> str | None:
    parts = _jamo(unit)
    if parts is None or parts[2] != 0:
        return None
    return _syllable(parts[0], parts[1], rng.choice(_HANGUL_ADDED_FINALS))


def _hangul_drop_final(unit: str) -> str:
    parts = _jamo(unit)
    if parts is None or parts[2] == 0:
        return ""
    return _syllable(parts[0], parts[1], 0)
