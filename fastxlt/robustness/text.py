"""Text perturbations that need no model: character noise and word order within a clause.

- Character noise, strength = the share of the language's own units (``scripts.units``: a letter, an
  akshara, a Thai character cluster, a Han character, a Hangul syllable) that get a typo. Each chosen unit
  is swapped with its neighbour in the same word, dropped, followed by an inserted letter, or substituted
  (``typos`` says what each means per script). ``char`` mixes the four operations uniformly; ``char_swap``,
  ``char_drop``, ``char_insert`` and ``char_substitute`` apply one. Under ``char`` a swap, drop or insertion
  that cannot apply (a one-unit word) becomes a substitution; under a single operation the unit stays as it
  is. The edit rate actually applied (edits / units) is returned with the text. Output is NFC.
- Word order, strength = the share of windows of ``WINDOW`` consecutive movable words whose words are
  permuted. Words come from ``segment.phrases`` (jieba, pythainlp, fugashi; spaces elsewhere); a window
  never crosses punctuation (a clause or sentence boundary) nor a fixed token (a number, a contraction, a
  hyphenated word, a word in another script), and those stay in place, as do spaces. The applied rate is
  the share of words that moved.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass

from fastxlt.robustness.scripts import alphabet, is_word_char_cluster, units
from fastxlt.robustness.seeding import affected_count
from fastxlt.robustness.segment import Kind, phrases
from fastxlt.robustness.typos import Typist

CHAR_OPERATIONS = ("swap", "drop", "insert", "substitute")
WINDOW = 3


@dataclass(frozen=True)
class Noised:
    """A perturbed text and what was done to it: ``edits`` of its ``units`` changed."""

    text: str
    units: int
    edits: int

    @property
    def edit_rate(self) -> float:
        return self.edits / self.units if self.units else 0.0


# ------------------------------------------------------------------------------------------ characters


def char_noise(text: str, language: str, strength: float, rng: random.Random,
               operations: tuple[str, ...] = CHAR_OPERATIONS) -> Noised:
    """``text`` with ``strength`` of its own-script units given one typo each (an operation from ``operations``)."""
    pieces = units(text, language)
    scripts = [alphabet(language).script_of(piece) for piece in pieces]
    typist = Typist(language, text, rng)
    own = [i for i, script in enumerate(scripts) if script is not None and typist.edits(script)]
    if strength <= 0 or not own:
        return Noised(text, len(own), 0)
    chosen = sorted(rng.sample(own, affected_count(rng, strength, len(own))))
    out = list(pieces)
    edits = sum(_edit(i, rng.choice(operations), len(operations) == 1, out, pieces, scripts, typist) for i in chosen)
    return Noised(unicodedata.normalize("NFC", "".join(out)), len(own), edits)


def _edit(i: int, operation: str, only: bool, out: list[str], pieces: list[str], scripts: list[str | None],
          typist: Typist) -> bool:
    """Apply one operation to unit ``i`` of ``out``; whether the text changed."""
    script, before = scripts[i], out[i]
    start, end = _word_span(i, pieces, scripts)
    partner = _swap_partner(i, pieces, scripts)
    movable = partner is not None and typist.movable(out[i], script) and typist.movable(out[partner], script)
    if operation == "swap" and movable:
        out[i], out[partner] = _cased_like(out[partner], out[i]), _cased_like(out[i], out[partner])
        return out[i] != out[partner]
    if operation == "drop" and end - start > 1:
        out[i] = typist.drop(out[i], script)
        return out[i] != before
    if operation == "insert":
        inserted = typist.insertion(out[i], script, upper=_all_caps(pieces[start:end]))
        if inserted is not None:
            out[i] = inserted
            return True
    if only and operation != "substitute":
        return False  # char_swap / char_drop / char_insert apply one operation: this unit cannot take it
    initial = i == start or "".join(pieces[start:i]) == "ال"
    out[i] = typist.substitute(out[i], script, final=i == end - 1, initial=initial)
    return out[i] != before


def _cased_like(unit: str, place: str) -> str:
    """``unit`` moved to where ``place`` was, with that place's case (Kuna -> Ukna, not uKna); the dotted and
    dotless i are left alone (their case pairs are Turkish, not Unicode's)."""
    letters = unit[:1].isalpha() and place[:1].isalpha()
    if not letters or unit[:1].isupper() == place[:1].isupper() or unit[:1] in "Iıİi":
        return unit
    cased = unit.upper() if place[:1].isupper() else unit.lower()
    return cased if len(cased) == len(unit) else unit


def _word_span(i: int, pieces: list[str], scripts: list[str | None]) -> tuple[int, int]:
    """[start, end) of the own-script units around unit ``i`` (its word)."""
    start = i
    while start > 0 and scripts[start - 1] is not None and is_word_char_cluster(pieces[start - 1]):
        start -= 1
    end = i + 1
    while end < len(pieces) and scripts[end] is not None and is_word_char_cluster(pieces[end]):
        end += 1
    return start, end


def _swap_partner(i: int, pieces: list[str], scripts: list[str | None]) -> int | None:
    """The next (else the previous) unit of the same word and script that differs from unit ``i``."""
    for j in (i + 1, i - 1):
        if 0 <= j < len(pieces) and scripts[j] == scripts[i] and pieces[j] != pieces[i]:
            return j
    return None


def _all_caps(word: list[str]) -> bool:
    letters = "".join(word)
    return len(letters) > 1 and letters.isupper()


# ------------------------------------------------------------------------------------------ word order


def word_order(text: str, language: str, strength: float, rng: random.Random, window: int = WINDOW) -> Noised:
    """``text`` with the words of ``strength`` of its windows permuted (within a clause; see the module docstring)."""
    parts = phrases(text, language)
    windows = [w for w in _windows(parts, window) if len({parts[i].text for i in w}) > 1]
    words = sum(part.kind == Kind.WORD for part in parts)
    if strength <= 0 or not windows:
        return Noised(text, words, 0)
    out = [part.text for part in parts]
    moved = 0
    for slots in rng.sample(windows, affected_count(rng, strength, len(windows))):
        before = [parts[i].text for i in slots]
        shuffled = list(before)
        while shuffled == before:
            rng.shuffle(shuffled)
        for slot, word in zip(slots, shuffled):
            out[slot] = word
        moved += sum(a != b for a, b in zip(before, shuffled))
    return Noised("".join(out), words, moved)


def _windows(parts, window: int) -> list[list[int]]:
    """Indices of consecutive movable words, cut at every break and fixed token, in windows of ``window``."""
    runs: list[list[int]] = [[]]
    for i, part in enumerate(parts):
        if part.kind == Kind.WORD:
            runs[-1].append(i)
        elif part.kind != Kind.SPACE:
            runs.append([])
    return [run[k:k + window] for run in runs for k in range(0, len(run), window) if len(run[k:k + window]) > 1]
