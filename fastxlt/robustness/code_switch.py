"""Code-switching with the MUSE bilingual dictionaries, in both directions.

- ``code_switch_to_en``: words of a language-XX sentence are replaced by their English translations
  (the XX -> en direction, read from MUSE's ``en-XX.txt`` inverted).
- ``code_switch_from_en``: words of the *English* sentence are replaced by their XX translations
  (``en-XX.txt``); the result is reported under language XX (English with XX words mixed in).

Strength = the share of a sentence's words that are replaced, bounded by the words the dictionary
knows (a word without an entry is never replaced; ``coverage`` reports the share that has one). When a
word has several translations one is drawn at random. Words are looked up lower-cased and a translation
takes the source word's capitalisation. Chinese, Japanese and Thai words are found by forward maximum
matching against the dictionary's words (the classic dictionary segmentation), within runs of the
language's own script. Pairs whose two sides are identical (MUSE lists names and loanwords such as
``was was``) are dropped: they would change nothing.

MUSE has no dictionary for sw and ur, and none was found for ko: those languages are reported as
unavailable, never silently skipped. Dictionaries live in ``<muse_dir>/dictionaries/en-XX.txt``
(``../shared/data/muse`` here); the separator is a tab or a single space, as in the MUSE release.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import regex

from fastxlt.errors import CorruptDataError, DataNotFoundError
from fastxlt.robustness.scripts import UNSPACED, alphabet, graphemes
from fastxlt.robustness.seeding import affected_count

MAX_MATCH = 8  # longest dictionary word tried by maximum matching (characters)
_WORD = regex.compile(r"[\p{L}\p{M}]+")


@dataclass(frozen=True)
class Edit:
    """One replacement: ``text[start:end]`` (== ``source``) became ``target``."""

    start: int
    end: int
    source: str
    target: str


@dataclass(frozen=True)
class Dictionary:
    """Word -> its translations (in file order), keys lower-cased."""

    source_language: str
    target_language: str
    entries: dict[str, tuple[str, ...]]

    @property
    def longest(self) -> int:
        return max((len(word) for word in self.entries), default=0)


def dictionary_path(muse_dir: str | Path, language: str) -> Path:
    return Path(muse_dir) / "dictionaries" / f"en-{language}.txt"


def unavailable_reason(muse_dir: str | Path | None, language: str) -> str | None:
    """Why code-switching cannot run for ``language`` (None when it can)."""
    if language == "en":
        return "English is the pivot language: code-switching needs a non-English language"
    if muse_dir is None:
        return "no MUSE directory given (--muse DIR or evaluate.muse_dir)"
    if not dictionary_path(muse_dir, language).is_file():
        return f"no MUSE en-{language} dictionary in {Path(muse_dir) / 'dictionaries'}"
    return None


@lru_cache(maxsize=32)
def load_dictionary(muse_dir: str, language: str, to_english: bool) -> Dictionary:
    """MUSE ``en-XX.txt`` as en -> XX, or inverted as XX -> en (``to_english``)."""
    path = dictionary_path(muse_dir, language)
    if not path.is_file():
        raise DataNotFoundError(f"MUSE dictionary '{path}' not found; pass the MUSE folder that holds dictionaries/en-XX.txt")
    entries: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        pair = line.split("\t") if "\t" in line else line.split(" ")
        if len(pair) != 2 or not all(pair):
            raise CorruptDataError(f"{path}:{number}: expected 'english<TAB or SPACE>translation', got {line!r}")
        english, foreign = (p.strip() for p in pair)
        if english.lower() == foreign.lower():
            continue
        source, target = (foreign, english) if to_english else (english, foreign)
        translations = entries.setdefault(source.lower(), [])
        if target not in translations:
            translations.append(target)
    source_language, target_language = (language, "en") if to_english else ("en", language)
    return Dictionary(source_language, target_language, {k: tuple(v) for k, v in entries.items()})


def switch_words(text: str, dictionary: Dictionary, strength: float, rng: random.Random) -> tuple[str, list[Edit], int, int]:
    """Replace ``strength`` of the words of ``text`` by dictionary translations.

    Returns the new text, the edits (in text order), the number of words and how many of them the
    dictionary knows."""
    words = find_words(text, dictionary)
    known = [w for w in words if w[2] in dictionary.entries]
    count = min(len(known), affected_count(rng, strength, len(words))) if strength > 0 else 0
    chosen = sorted(rng.sample(known, count))
    edits = [Edit(start, end, text[start:end], _cased(rng.choice(dictionary.entries[key]), text[start:end]))
             for start, end, key in chosen]
    return apply_edits(text, edits), edits, len(words), len(known)


def find_words(text: str, dictionary: Dictionary) -> list[tuple[int, int, str]]:
    """(start, end, lookup key) of every word of ``text`` in the dictionary's source language."""
    if dictionary.source_language not in UNSPACED:
        return [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    return _maximum_matching(text, dictionary)


def _maximum_matching(text: str, dictionary: Dictionary) -> list[tuple[int, int, str]]:
    """Forward maximum matching within runs of the language's own letters; unknown characters are one-character words."""
    letters = alphabet(dictionary.source_language)
    words: list[tuple[int, int, str]] = []
    clusters = graphemes(text)
    starts = [0]
    for cluster in clusters:
        starts.append(starts[-1] + len(cluster))
    own = [letters.script_of(c) is not None for c in clusters]
    longest = min(MAX_MATCH, dictionary.longest)
    i = 0
    while i < len(clusters):
        if not own[i]:
            i += 1
            continue
        match = i + 1
        for j in range(min(len(clusters), i + longest), i, -1):
            if all(own[i:j]) and text[starts[i]:starts[j]].lower() in dictionary.entries:
                match = j
                break
        words.append((starts[i], starts[match], text[starts[i]:starts[match]].lower()))
        i = match
    return words


def _cased(translation: str, source: str) -> str:
    """The translation with the source word's capitalisation (Title or UPPER), where its script has case."""
    if len(source) > 1 and source.isupper():
        return translation.upper()
    if source[:1].isupper():
        return translation[:1].upper() + translation[1:]
    return translation


def apply_edits(text: str, edits: list[Edit]) -> str:
    """``text`` with non-overlapping ``edits`` (in text order) applied."""
    out, position = [], 0
    for edit in edits:
        out.append(text[position:edit.start])
        out.append(edit.target)
        position = edit.end
    out.append(text[position:])
    return "".join(out)
