"""Word segmentation with the field's libraries, and the role of every piece of a sentence.

Why: word order moves words and code-switching replaces them, so both need the words a reader of the
language sees. A Han character, a Thai syllable piece or a Japanese verb stem is not one: Chinese is cut
by jieba, Thai by pythainlp (newmm, its dictionary-based maximal matching), Japanese by fugashi (MeCab)
with unidic-lite. A missing library is a one-line refusal (``errors.require``), never a fallback.
Languages written with spaces are cut on letters, marks and digits, keeping a word's inner apostrophes
and hyphens (``I'm``, ``l'homme``, ``well-known``, ``दो-दो``) in the word.

Every piece gets a role (``Kind``):

- ``WORD``: a word of the language's own script; word order may move it, code-switching may replace it.
- ``FIXED``: stays where it is: numbers, contractions and hyphenated words, words in another script
  than the language's (a Latin name in Chinese, Hindi or Russian text), and a word written against one of
  those or against a closing quote or bracket (a particle or postposition: Cougars에서, C124上).
- ``SPACE``: whitespace between words of one clause.
- ``BREAK``: punctuation (and, in Thai, whitespace, which ends phrases and sentences there): a clause or
  sentence boundary that no word crosses.

``pieces`` gives the segmenter's words; ``phrases`` gives what word order moves: the same words, except
Japanese, where a content word keeps its particles, auxiliaries and suffixes (a bunsetsu: 行きました moves
as one, never 行き without ました), consecutive nouns stay one compound, and a katakana run one loanword;
and in Japanese and Korean, verb-final languages whose particles mark the roles, the clause's last word
(its predicate) stays, so that word order scrambles the arguments around it.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

import regex

from fastxlt.robustness.errors import PerturbationError, require
from fastxlt.robustness.scripts import UNSPACED, alphabet

_SPACED_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+(?:['’\-‐][\p{L}\p{M}\p{N}]+)*")
VERB_FINAL = frozenset({"ja", "ko"})
_CLOSERS = frozenset("\"')]}」』）】〕”’»›")
_SHARED = regex.compile(r"[\p{Script=Common}\p{Script=Inherited}]")  # ー, 々: letters of no one script
_KATAKANA = regex.compile(r"[\p{Script=Katakana}ー]")
_JOINED = regex.compile(r"['’\-‐]|\p{N}")
# Japanese parts of speech (UniDic) that belong to the preceding content word.
_JA_DEPENDENT_POS = frozenset({"助詞", "助動詞", "接尾辞"})
_JA_DEPENDENT_POS2 = frozenset({"非自立可能"})


class Kind(str, Enum):
    WORD = "word"
    FIXED = "fixed"
    SPACE = "space"
    BREAK = "break"


@dataclass(frozen=True)
class Piece:
    """One piece of a sentence; the pieces of a sentence concatenate to it exactly."""

    text: str
    kind: Kind


def pieces(text: str, language: str) -> list[Piece]:
    """``text`` cut into the segmenter's words and the separators between them."""
    if language not in UNSPACED:
        return _glued(_spaced(text, language))
    return _glued([Piece(token, _kind(token, language)) for token in _tokens(text, language)])


def phrases(text: str, language: str) -> list[Piece]:
    """What word order moves: ``pieces``, with Japanese dependent words joined to their content word; in the
    verb-final languages (ja, ko) the last word of a clause, the predicate, stays."""
    parts = _glued(_bunsetsu(text)) if language == "ja" else pieces(text, language)
    return _predicate_stays(parts) if language in VERB_FINAL else parts


def _predicate_stays(parts: list[Piece]) -> list[Piece]:
    """The last movable word before each clause boundary (and the end) becomes fixed."""
    out = list(parts)
    last = None
    for i, part in enumerate(out + [Piece("", Kind.BREAK)]):
        if part.kind == Kind.BREAK and last is not None:
            out[last] = Piece(out[last].text, Kind.FIXED)
            last = None
        elif part.kind == Kind.WORD:
            last = i
    return out


def _glued(parts: list[Piece]) -> list[Piece]:
    """A word written against a fixed token or a closing quote or bracket belongs to it and stays: a particle
    or postposition after a name (Cougars에서, ""Black Adam""의, C124上)."""
    out = list(parts)
    for i in range(1, len(out)):
        previous = out[i - 1]
        closing = previous.kind == Kind.BREAK and unicodedata.category(previous.text[-1]) in ("Pe", "Pf", "Po")
        if out[i].kind == Kind.WORD and (previous.kind == Kind.FIXED or closing and previous.text[-1] in _CLOSERS):
            out[i] = Piece(out[i].text, Kind.FIXED)
    return out


# ------------------------------------------------------------------------------------ spaced languages


def _spaced(text: str, language: str) -> list[Piece]:
    out: list[Piece] = []
    position = 0
    for match in _SPACED_WORD.finditer(text):
        if match.start() > position:
            out.extend(_separators(text[position:match.start()], language))
        out.append(Piece(match.group(), _kind(match.group(), language)))
        position = match.end()
    if position < len(text):
        out.extend(_separators(text[position:], language))
    return out


def _separators(gap: str, language: str) -> list[Piece]:
    """Whitespace runs are ``SPACE``, anything else ``BREAK`` (split so that a space next to a comma stays a space)."""
    return [Piece(run, _kind(run, language)) for run in regex.findall(r"\s+|\S+", gap)]


def _kind(token: str, language: str) -> Kind:
    """The role of one segmenter token (see the module docstring)."""
    if token.isspace():
        return Kind.BREAK if language == "th" else Kind.SPACE
    if not regex.search(r"[\p{L}\p{M}\p{N}]", token):
        return Kind.BREAK
    if _JOINED.search(token):
        return Kind.FIXED
    letters = _alphabet(language)
    if letters and any(letters.script_of(c) is None for c in token if c.isalpha() and not _SHARED.match(c)):
        return Kind.FIXED
    return Kind.WORD


def _alphabet(language: str):
    """The language's alphabet; None for a language without one (the synthetic world's): all its letters are own."""
    try:
        return alphabet(language)
    except PerturbationError:
        return None


# ------------------------------------------------------------------------------------ libraries


def _tokens(text: str, language: str) -> list[str]:
    tokens = {"zh": _jieba_tokens, "th": _thai_tokens, "ja": _japanese_tokens}[language](text)
    if "".join(tokens) != text:  # the segmenters keep every character; a change would break the offsets
        raise AssertionError(f"{language} segmentation lost characters of {text!r}")
    return tokens


@lru_cache(maxsize=1)
def _jieba():
    jieba = require("jieba", "Chinese word segmentation (zh)")
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def _jieba_tokens(text: str) -> list[str]:
    return _jieba().lcut(text)


@lru_cache(maxsize=1)
def _thai_tokenizer():
    require("pythainlp", "Thai word segmentation (th)")
    from pythainlp.tokenize import word_tokenize

    return word_tokenize


def _thai_tokens(text: str) -> list[str]:
    return _thai_tokenizer()(text, engine="newmm", keep_whitespace=True)


@lru_cache(maxsize=1)
def _japanese_tagger():
    fugashi = require("fugashi", "Japanese word segmentation (ja)", "fugashi' and 'unidic-lite")
    require("unidic_lite", "Japanese word segmentation (ja)", "unidic-lite")
    return fugashi.Tagger()


def _morphemes(text: str) -> list[tuple[str, str, str, str]]:
    """(preceding whitespace, surface, pos1, pos2) of every Japanese morpheme."""
    return [(word.white_space, word.surface, word.feature.pos1 or "", word.feature.pos2 or "")
            for word in _japanese_tagger()(text)]


def _japanese_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for space, surface, _, _ in _morphemes(text):
        tokens += [space, surface] if space else [surface]
    return tokens


def _bunsetsu(text: str) -> list[Piece]:
    """Japanese phrases: a content word with the particles, auxiliaries, suffixes and dependent verbs that follow
    it, and consecutive nouns (a compound) together."""
    out: list[Piece] = []
    previous_pos = ""
    for space, surface, pos1, pos2 in _morphemes(text):
        if space:
            out.append(Piece(space, Kind.SPACE))
            previous_pos = ""
        kind = _kind(surface, "ja")
        dependent = pos1 in _JA_DEPENDENT_POS or pos2 in _JA_DEPENDENT_POS2 or (pos1 == previous_pos == "名詞")
        katakana = bool(out) and _KATAKANA.match(out[-1].text[-1:]) and _KATAKANA.match(surface)  # one loanword
        attaches = kind == Kind.WORD and out and out[-1].kind == Kind.WORD and (
            dependent or katakana or previous_pos == "接頭辞")
        if attaches:
            out[-1] = Piece(out[-1].text + surface, Kind.WORD)
        else:  # a particle that cannot join its word (after a bracket or a number) stays where it is
            out.append(Piece(surface, Kind.FIXED if kind == Kind.WORD and pos1 in _JA_DEPENDENT_POS else kind))
        previous_pos = pos1 if kind == Kind.WORD else ""
    return out
