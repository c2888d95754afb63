"""How well resourced each XTREME / XTREME-R language is, so figures can group and highlight languages.

Source: the language taxonomy of Joshi, Santy, Budhiraja, Bali and Choudhury (2020), "The State and Fate
of Linguistic Diversity and Inclusion in the NLP World", ACL 2020, pp. 6282-6293, released as
https://microsoft.github.io/linguisticdiversity/assets/lang2tax.txt. It puts every language in a class
from 0 ("The Left-Behinds") to 5 ("The Winners") by how much labelled and unlabelled data it has. Only the
classes of the XTREME (40 languages) and XTREME-R additions (az, lt, pl, ro, uk) and XCOPA languages (ht,
qu) are listed here, keyed by the ISO 639-1 codes the benchmarks use.

Groups follow one stated rule: low = class 0-2, mid = class 3, high = class 4-5. A language outside this
table (e.g. the synthetic world's) is "unknown" and is never highlighted as low-resource.
"""

from __future__ import annotations

SOURCE = ("Joshi et al. (2020), The State and Fate of Linguistic Diversity and Inclusion in the NLP World, ACL; "
          "classes from https://microsoft.github.io/linguisticdiversity/assets/lang2tax.txt")  # fmt: skip

JOSHI_CLASS: dict[str, int] = {
    # class 5, "The Winners"
    "ar": 5, "de": 5, "en": 5, "es": 5, "fr": 5, "ja": 5, "zh": 5,
    # class 4, "The Underdogs"
    "eu": 4, "fa": 4, "fi": 4, "hi": 4, "hu": 4, "it": 4, "ko": 4, "nl": 4, "pl": 4, "pt": 4, "ru": 4, "tr": 4,
    "vi": 4,
    # class 3, "The Rising Stars"
    "af": 3, "bg": 3, "bn": 3, "el": 3, "et": 3, "he": 3, "id": 3, "ka": 3, "kk": 3, "lt": 3, "ms": 3, "ro": 3,
    "ta": 3, "th": 3, "tl": 3, "uk": 3, "ur": 3,
    # class 2, "The Hopefuls"
    "ht": 2, "mr": 2, "sw": 2, "yo": 2,
    # class 1, "The Scraping-Bys"
    "az": 1, "jv": 1, "ml": 1, "my": 1, "qu": 1, "te": 1,
}  # fmt: skip

GROUPS = ("high", "mid", "low", "unknown")


def resource_class(language: str) -> int | None:
    """Joshi et al.'s class (0-5) of an ISO 639-1 code, None when the table does not list it."""
    return JOSHI_CLASS.get(language.split("-")[0].lower())


def resource_group(language: str) -> str:
    """'high' (class 4-5), 'mid' (class 3), 'low' (class 0-2) or 'unknown'."""
    value = resource_class(language)
    if value is None:
        return "unknown"
    return "high" if value >= 4 else "mid" if value == 3 else "low"


def is_low_resource(language: str) -> bool:
    return resource_group(language) == "low"
