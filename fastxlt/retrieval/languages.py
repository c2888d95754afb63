"""Language codes for the retrieval tasks: ISO 639-1 as XTREME names them, LASER's codes accepted too.

XTREME's 36 Tatoeba languages and the BUCC languages come from ``fastxlt.tasks.languages``. LASER's
Tatoeba release has 112 languages; ``LASER_ISO_EXTRA`` names the ISO 639-1 code of those outside
XTREME that have one, so ``--languages ca,da`` finds ``tatoeba.cat-eng.cat``. Any other LASER code
(``ber``, ``yue``...) is used as it is.
"""

from __future__ import annotations

from fastxlt.errors import UnknownLanguageError
from fastxlt.tasks.languages import BUCC, TATOEBA, TATOEBA_LASER_CODES

# LASER Tatoeba languages outside XTREME's 36 that have an ISO 639-1 code (ISO -> LASER file code).
LASER_ISO_EXTRA: dict[str, str] = {
    "am": "amh", "az": "aze", "be": "bel", "br": "bre", "bs": "bos", "ca": "cat", "ch": "cha",
    "cs": "ces", "cy": "cym", "da": "dan", "eo": "epo", "fo": "fao", "fy": "fry", "ga": "gle",
    "gd": "gla", "gl": "glg", "hr": "hrv", "hy": "hye", "ia": "ina", "ie": "ile", "io": "ido",
    "is": "isl", "km": "khm", "ku": "kur", "kw": "cor", "la": "lat", "lt": "lit", "lv": "lvs",
    "mk": "mkd", "mn": "mon", "ms": "zsm", "nb": "nob", "nn": "nno", "oc": "oci", "pl": "pol",
    "ro": "ron", "sk": "slk", "sl": "slv", "sq": "sqi", "sr": "srp", "sv": "swe", "tk": "tuk",
    "tt": "tat", "ug": "uig", "uk": "ukr", "uz": "uzb", "xh": "xho", "yi": "yid",
}  # fmt: skip

ISO_TO_LASER: dict[str, str] = {**TATOEBA_LASER_CODES, **LASER_ISO_EXTRA}
LASER_TO_ISO: dict[str, str] = {laser: iso for iso, laser in ISO_TO_LASER.items()}

TATOEBA_DEFAULT = TATOEBA  # the 36 XTREME languages
BUCC_DEFAULT = BUCC


def tatoeba_language(code: str) -> tuple[str, str]:
    """A user's language code -> (name used in reports, LASER file code).

    ``de`` and ``deu`` both give ``("de", "deu")``; a LASER code without an ISO 639-1 code, such as
    ``yue``, gives ``("yue", "yue")``. Whether the files exist is checked by the reader.
    """
    code = code.strip().lower()
    if code in ISO_TO_LASER:
        return code, ISO_TO_LASER[code]
    if code in LASER_TO_ISO:
        return LASER_TO_ISO[code], code
    if len(code) == 3 and code.isalpha():
        return code, code
    raise UnknownLanguageError(
        f"unknown Tatoeba language '{code}'; use an ISO 639-1 code ({', '.join(TATOEBA)}) or a LASER three-letter code"
    )


def bucc_language(code: str) -> str:
    """A user's BUCC language code (``de`` or ``deu``) -> the ISO 639-1 code of the BUCC files."""
    code = code.strip().lower()
    iso = LASER_TO_ISO.get(code, code)
    if iso not in BUCC:
        raise UnknownLanguageError(f"BUCC 2018 has no language '{code}'; choose from {', '.join(BUCC)}")
    return iso


def split_languages(languages: str | list[str] | None, default: tuple[str, ...]) -> list[str]:
    """'all' / None / '' -> the default list; 'de,fr' or ['de', 'fr'] -> that list, in order, deduplicated."""
    if languages is None or languages == "all" or languages == ["all"] or languages == "":
        return list(default)
    if isinstance(languages, str):
        languages = languages.split(",")
    chosen = [code.strip() for code in languages if code.strip()]
    return list(dict.fromkeys(chosen))
