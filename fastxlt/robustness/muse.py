"""MUSE bilingual dictionaries, cleaned for code-switching: one sense per word, in the evaluated script.

Why clean them: the raw ``en-XX.txt`` files are noisy for this use. The zh dictionary is written in
Traditional characters while XNLI and PAWS-X zh are Simplified; the hi dictionary pairs words with their
romanisations (है -> hai); entries mix scripts; and a word lists several senses, of which a random one is
often wrong. Rules, applied to every line ``english<TAB or SPACE>foreign``:

1. zh: the foreign side is converted to Simplified Chinese with OpenCC (``t2s``).
2. The English side is lower-case ASCII letters, two or more (``a`` and ``i`` aside: they are not
   content words worth switching); the foreign side is NFC and made only of the language's own letters
   (``scripts.Alphabet.letters``): no Latin, digits or punctuation in it.
3. Identical sides (names, loanwords spelled alike) are dropped: they would change nothing; so are
   foreign sides that are an Arabic article or clitic alone (ال, وال, بال, فال, لل: the -> ال), which are
   not words.
4. Transliterations are dropped: a pair whose English side has the same consonant skeleton as the
   foreign word's romanisation (``romanise``: the consonants of the letters' Unicode names for
   Devanagari, Thai, Arabic and Greek; a transliteration table for Cyrillic) is a spelling of the
   sound, not a translation. Han and kana have no romanisation here; instead, a Japanese word written
   only in katakana is a loanword (English spelled in kana: ユナイテッド -> united) and is dropped.
5. Rare English words are dropped: only the ``MAX_ENGLISH_RANK`` most frequent English words of the file
   (MUSE's own order) are kept, because its tail is where the junk pairs lie (लिए -> roleplay, at rank
   26,010 in en-hi); code-switching loses little coverage by it, common words being the ones that occur.
6. One sense: MUSE lists English words from the most to the least frequent, so the first English word
   seen for a foreign word is its most frequent English sense, and the first foreign word listed for an
   English word is kept for that direction.

The files are ``<muse_dir>/dictionaries/en-XX.txt`` (``../shared/data/muse`` here).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import regex

from fastxlt.errors import CorruptDataError, DataNotFoundError
from fastxlt.robustness.errors import require
from fastxlt.robustness.scripts import alphabet

MAX_ENGLISH_RANK = 20_000
_CLITICS = frozenset({"ال", "وال", "بال", "فال", "لل", "و", "ب", "ل", "ف"})
_KATAKANA_WORD = regex.compile(r"[\p{Script=Katakana}ー]+")
_ENGLISH = regex.compile(r"[a-z]{2,}")
_CYRILLIC = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюяґєіїў",
                     "a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh shch _ y _ e yu ya g e i i u".split()))
_VOICELESS = str.maketrans("dbgvz", "tpkfs")
_NOT_CONSONANTS = str.maketrans("", "", "aeiouyh")
_NAMED_SCRIPTS = ("DEVANAGARI", "THAI", "ARABIC", "GREEK")


@dataclass(frozen=True)
class Dictionary:
    """Word (lower case) -> its one translation, and the source and target languages."""

    source_language: str
    target_language: str
    entries: dict[str, str]

    def translate(self, word: str) -> str | None:
        return self.entries.get(word.lower())


def dictionary_path(muse_dir: str | Path, language: str) -> Path:
    return Path(muse_dir) / "dictionaries" / f"en-{language}.txt"


@lru_cache(maxsize=32)
def load_dictionary(muse_dir: str, language: str, to_english: bool) -> Dictionary:
    """MUSE ``en-XX.txt`` cleaned (module docstring) as en -> XX, or as XX -> en (``to_english``)."""
    entries: dict[str, str] = {}
    for english, foreign in clean_pairs(dictionary_path(muse_dir, language), language):
        source, target = (foreign, english) if to_english else (english, foreign)
        entries.setdefault(source, target)  # the first listed: the most frequent sense
    source_language, target_language = (language, "en") if to_english else ("en", language)
    return Dictionary(source_language, target_language, entries)


def clean_pairs(path: Path, language: str) -> list[tuple[str, str]]:
    """The (english, foreign) pairs of a MUSE file that pass rules 1-5, in file order."""
    return list(_clean_pairs(str(path), language))


@lru_cache(maxsize=32)
def _clean_pairs(file: str, language: str) -> tuple[tuple[str, str], ...]:
    path = Path(file)
    if not path.is_file():
        raise DataNotFoundError(f"MUSE dictionary '{path}' not found; pass the MUSE folder that holds dictionaries/en-XX.txt")
    convert = _simplified() if language == "zh" else (lambda text: text)
    pairs = []
    ranks: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        pair = line.split("\t") if "\t" in line else line.split(" ")
        if len(pair) != 2 or not all(pair):
            raise CorruptDataError(f"{path}:{number}: expected 'english<TAB or SPACE>translation', got {line!r}")
        english = pair[0].strip()
        if ranks.setdefault(english, len(ranks) + 1) > MAX_ENGLISH_RANK:
            continue
        foreign = convert(unicodedata.normalize("NFC", pair[1].strip())).lower()
        if keep_pair(english, foreign, language):
            pairs.append((english, foreign))
    return tuple(pairs)


def keep_pair(english: str, foreign: str, language: str) -> bool:
    """Rules 2-4 of the module docstring."""
    if not _ENGLISH.fullmatch(english) or english == foreign or foreign in _CLITICS:
        return False
    letters = alphabet(language)
    if not foreign or any(letters.script_of(char) is None for char in foreign if not _is_mark(char)):
        return False
    return not is_transliteration(english, foreign, language)


def is_transliteration(english: str, foreign: str, language: str) -> bool:
    """Whether ``english`` spells the sound of ``foreign`` (same consonant skeleton as its romanisation), or
    ``foreign`` is a katakana loanword."""
    if language == "ja":
        return bool(_KATAKANA_WORD.fullmatch(foreign))
    roman = romanise(foreign, language)
    return bool(roman) and _skeleton(roman) == _skeleton(english)


def romanise(word: str, language: str) -> str | None:
    """A rough romanisation (enough for consonant skeletons), None for scripts without one here."""
    if language in ("ru", "bg"):
        return "".join(_CYRILLIC.get(char, char) for char in word).replace("_", "")
    out = [_consonants_of(char) for char in word]
    return None if None in out else "".join(out)


@lru_cache(maxsize=4096)
def _consonants_of(char: str) -> str | None:
    """The initial consonants of a letter's Unicode name (None outside the named scripts)."""
    name = unicodedata.name(char, "")
    return _consonants_of_name(name) if name.startswith(_NAMED_SCRIPTS) else None


def _consonants_of_name(name: str) -> str:
    """The initial consonants of a letter's name: DEVANAGARI LETTER KHA -> kh, THAI CHARACTER KHO KHAI -> kh;
    vowel signs, tone marks and vowel letters give nothing; anusvara and candrabindu give n."""
    words = name.split()
    if "ANUSVARA" in words or "CANDRABINDU" in words:
        return "n"
    if not {"LETTER", "CHARACTER"} & set(words) or "VOWEL" in words or "SARA" in words or "MAI" in words:
        return ""
    key = words[words.index("LETTER" if "LETTER" in words else "CHARACTER") + 1:]
    key = [w for w in key if w not in ("SMALL", "CAPITAL")]
    return regex.match(r"[^AEIOU]*", key[0]).group().lower() if key else ""


def _skeleton(word: str) -> str:
    """Consonants only, a few spellings of one sound merged (and voiced with voiceless: scripts differ in how
    they write them: Thai ด for English th), doubled letters collapsed."""
    word = word.lower().replace("ph", "f").replace("ck", "k").replace("c", "k").replace("q", "k").replace("w", "v")
    consonants = word.translate(_NOT_CONSONANTS).translate(_VOICELESS)
    return "".join(c for i, c in enumerate(consonants) if i == 0 or c != consonants[i - 1])


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


@lru_cache(maxsize=1)
def _simplified():
    opencc = require("opencc", "Chinese code-switching (zh: MUSE is Traditional, XNLI and PAWS-X are Simplified)")
    return opencc.OpenCC("t2s").convert
