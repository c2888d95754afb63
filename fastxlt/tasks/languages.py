"""The language lists of the XTREME benchmark, per task.

Zero-shot evaluation runs a model over every language of a task, so these tuples decide what
"all languages" means everywhere in fastxlt. They follow the XTREME paper (Hu et al., 2020,
Table 5 / the task descriptions) and use ISO 639-1 codes, as the XTREME files do. Every tuple is
sorted alphabetically and contains English, the training language, unless noted.

Tatoeba and BUCC are bitext retrieval tasks: each language is paired with English, so their tuples
hold only the non-English side.
"""

from __future__ import annotations

from fastxlt.errors import UnknownLanguageError

ENGLISH = "en"

# Sentence-pair classification.
XNLI = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
PAWSX = ("de", "en", "es", "fr", "ja", "ko", "zh")

# Structured prediction.
PANX = (
    "af", "ar", "bg", "bn", "de", "el", "en", "es", "et", "eu",
    "fa", "fi", "fr", "he", "hi", "hu", "id", "it", "ja", "jv",
    "ka", "kk", "ko", "ml", "mr", "ms", "my", "nl", "pt", "ru",
    "sw", "ta", "te", "th", "tl", "tr", "ur", "vi", "yo", "zh",
)  # fmt: skip
UDPOS = (
    "af", "ar", "bg", "de", "el", "en", "es", "et", "eu", "fa",
    "fi", "fr", "he", "hi", "hu", "id", "it", "ja", "kk", "ko",
    "mr", "nl", "pt", "ru", "ta", "te", "th", "tl", "tr", "ur",
    "vi", "yo", "zh",
)  # fmt: skip

# Question answering. XQuAD: the English SQuAD v1.1 dev subset plus its 10 translations, as in
# XTREME (the XQuAD release later added Romanian, which XTREME does not evaluate).
XQUAD = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
MLQA = ("ar", "de", "en", "es", "hi", "vi", "zh")
TYDIQA = ("ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te")

# Retrieval (non-English side; the other side is English).
BUCC = ("de", "fr", "ru", "zh")

# Tatoeba: XTREME's 36 languages and LASER's three-letter file codes (tatoeba.XXX-eng.XXX).
# Three are not the plain ISO 639-2 code: Chinese is Mandarin (cmn), Persian is Iranian Persian
# (pes) and Swahili is the individual language (swh).
TATOEBA_LASER_CODES: dict[str, str] = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell",
    "es": "spa", "et": "est", "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra",
    "he": "heb", "hi": "hin", "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn",
    "jv": "jav", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar",
    "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel",
    "th": "tha", "tl": "tgl", "tr": "tur", "ur": "urd", "vi": "vie", "zh": "cmn",
}  # fmt: skip
TATOEBA = tuple(sorted(TATOEBA_LASER_CODES))
_TATOEBA_ISO_CODES = {laser: iso for iso, laser in TATOEBA_LASER_CODES.items()}

# Every language that appears in at least one XTREME task (40: the PAN-X set covers all others).
XTREME_ALL = tuple(sorted(set(PANX) | set(UDPOS) | set(XNLI) | set(PAWSX) | set(XQUAD) | set(MLQA) | set(TYDIQA)))

# XTREME-R (Ruder et al., 2021, arXiv 2104.07412): the language lists of its official scorer, google-research/xtreme
# evaluate.py XTREME_R_TASK2LANGS @ 838c13b69daafb9328785d16caae2711e4012123 (the download script, download_data.sh,
# fetches the same UD and PAN-X languages). XTREME-R drops PAWS-X and BUCC; the XTREME tasks it keeps gain languages.
# XTREME's tuples above stay what "all" means for a task; the XTREME-R suite (fastxlt.experiments.xtreme_r) asks for
# these lists, and the task registries accept the additions by name (TaskSpec.extra_languages).
XTREME_R_XNLI = XNLI  # 15
XTREME_R_XCOPA = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")  # 11; English COPA is training data
XTREME_R_UDPOS = tuple(sorted(UDPOS + ("lt", "pl", "ro", "uk", "wo")))  # 38 (wo: never predicted by train_udpos.sh)
XTREME_R_PANX = tuple(sorted(PANX + ("az", "gu", "lt", "pa", "pl", "qu", "ro", "uk")))  # 48 (WikiANN)
XTREME_R_XQUAD = tuple(sorted(XQUAD + ("ro",)))  # 12: XTREME's 11 + Romanian (which download_data.sh does not fetch)
XTREME_R_MLQA = MLQA  # 7
XTREME_R_TYDIQA = TYDIQA  # 9
XTREME_R_TATOEBA = tuple(sorted(TATOEBA + ("az", "lt", "pl", "ro", "uk")))  # 41 (non-English side)
# The retrieval tasks new in XTREME-R. LAReQA: the 11 XQuAD-R languages (the official scorer's list is empty);
# Mewsli-X: the 11 languages of its test set (evaluate.py, and mock_test_data/labels/mewslix/test-XX.json).
XTREME_R_LAREQA = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
XTREME_R_MEWSLIX = ("ar", "de", "en", "es", "fa", "ja", "pl", "ro", "ta", "tr", "uk")

# Every language of at least one XTREME-R task: 50, as the paper says.
XTREME_R_ALL = tuple(sorted(set().union(
    XTREME_R_XNLI, XTREME_R_XCOPA, XTREME_R_UDPOS, XTREME_R_PANX, XTREME_R_XQUAD, XTREME_R_MLQA, XTREME_R_TYDIQA,
    XTREME_R_TATOEBA, XTREME_R_LAREQA, XTREME_R_MEWSLIX,
)))  # fmt: skip


def tatoeba_laser_code(language: str) -> str:
    """ISO 639-1 code of an XTREME Tatoeba language -> the three-letter code in LASER's file names."""
    try:
        return TATOEBA_LASER_CODES[language]
    except KeyError:
        raise UnknownLanguageError(
            f"Tatoeba has no XTREME language '{language}'; choose from {', '.join(TATOEBA)}"
        ) from None


def tatoeba_iso_code(laser_code: str) -> str:
    """LASER's three-letter Tatoeba file code -> the ISO 639-1 code XTREME uses."""
    try:
        return _TATOEBA_ISO_CODES[laser_code]
    except KeyError:
        raise UnknownLanguageError(
            f"'{laser_code}' is not one of XTREME's 36 Tatoeba languages; "
            f"use a LASER code from {', '.join(sorted(_TATOEBA_ISO_CODES))}"
        ) from None
