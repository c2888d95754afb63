"""Code-switching with the cleaned MUSE dictionaries (``muse``), in both directions.

- ``code_switch_to_en``: words of a language-XX sentence are replaced by their English translations.
- ``code_switch_from_en``: words of the *English* sentence are replaced by their XX translations; the
  result is reported under language XX (English with XX words mixed in).

Words are the segmenter's (``segment.pieces``: jieba, pythainlp, fugashi, spaces elsewhere), so a
replacement never takes half a word or crosses into the next one; numbers, contractions, hyphenated and
foreign-script words are never replaced. An English word put into a script written without spaces gets
a space on each side where it touches a letter or digit ("ขึ้น more มา", never "toomore").

Strength = the share of a sentence's words replaced. Only words with a dictionary entry can be: the
share that has one is the sentence's ``coverage``, returned with every text (``Switched``) and recorded
per example and per language by ``fastxlt perturb`` and the evaluation, with a warning when the strength
asked for exceeds it (the applied rate is then the coverage, not the strength). A translation takes the
source word's capitalisation where its script has case.

MUSE has no dictionary for sw and ur, and none was found for ko: those languages are reported as
unavailable, never silently skipped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import regex

from fastxlt.robustness.muse import Dictionary, dictionary_path
from fastxlt.robustness.scripts import UNSPACED
from fastxlt.robustness.seeding import affected_count
from fastxlt.robustness.segment import Kind, pieces

_WORDLIKE = regex.compile(r"[\p{L}\p{M}\p{N}]")  # a Thai word may end in a tone mark (ได้)


@dataclass(frozen=True)
class Switched:
    """A code-switched text: ``edits`` of its ``words`` replaced; ``known`` of them had a dictionary entry."""

    text: str
    words: int
    known: int
    edits: int

    @property
    def coverage(self) -> float:
        return self.known / self.words if self.words else 0.0

    @property
    def edit_rate(self) -> float:
        return self.edits / self.words if self.words else 0.0


def unavailable_reason(muse_dir: str | Path | None, language: str) -> str | None:
    """Why code-switching cannot run for ``language`` (None when it can)."""
    if language == "en":
        return "English is the pivot language: code-switching needs a non-English language"
    if muse_dir is None:
        return "no MUSE directory given (--muse DIR or evaluate.muse_dir)"
    if not dictionary_path(muse_dir, language).is_file():
        return f"no MUSE en-{language} dictionary in {Path(muse_dir) / 'dictionaries'}"
    return None


def switch_words(text: str, dictionary: Dictionary, strength: float, rng: random.Random) -> Switched:
    """Replace ``strength`` of the words of ``text`` (at most those the dictionary knows) by their translations."""
    parts = pieces(text, dictionary.source_language)
    words = [i for i, part in enumerate(parts) if part.kind in (Kind.WORD, Kind.FIXED) and _has_letter(part.text)]
    known = [i for i in words if parts[i].kind == Kind.WORD and dictionary.translate(parts[i].text)]
    count = min(len(known), affected_count(rng, strength, len(words))) if strength > 0 else 0
    chosen = set(rng.sample(known, count))
    out = [_cased(dictionary.translate(part.text), part.text) if i in chosen else part.text
           for i, part in enumerate(parts)]
    if dictionary.source_language in UNSPACED:
        out = _spaced_out(out, chosen)
    return Switched("".join(out), len(words), len(known), len(chosen))


def _spaced_out(out: list[str], chosen: set[int]) -> list[str]:
    """English words in unspaced text, separated by a space from any neighbouring letter or digit."""
    result = list(out)
    for i in sorted(chosen):
        if i > 0 and i - 1 not in chosen and _WORDLIKE.match(out[i - 1][-1:]):
            result[i] = " " + result[i]
        if i + 1 < len(out) and _WORDLIKE.match(out[i + 1][:1]):
            result[i] = result[i] + " "
    return result


def _has_letter(text: str) -> bool:
    return any(char.isalpha() for char in text)


def _cased(translation: str, source: str) -> str:
    """The translation with the source word's capitalisation (Title or UPPER), where its script has case."""
    if len(source) > 1 and source.isupper():
        return translation.upper()
    if source[:1].isupper():
        return translation[:1].upper() + translation[1:]
    return translation
