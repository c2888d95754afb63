"""The synthetic languages: one lexicon and one small grammar each, and how a meaning is said.

English (``en``) is real English. The other languages get seeded pseudo-words from their own sound
inventory and a fixed typological profile, so they share the semantic core but differ where real
languages differ: word order (SVO / SOV / VSO), negation (particle before / after the verb, prefix,
suffix, clause-initial), plural marking (suffix / prefix / none), number-noun order, a copula or
none, an object particle, pre- or postpositions. Names and digits are spelt the same everywhere:
they are the anchors that let a multilingual model line the languages up, as in real text.

Rendering is a pure function of the meaning (clause order and voice are part of the meaning tuple);
``borrow`` names concepts said with another language's stem, which makes code-switched text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Mapping

from fastxlt.synthetic.semantics import (
    COUNT_VERBS,
    NAMES,
    NOUNS,
    PROPERTY_VALUES,
    RELATION_VERBS,
    Clause,
    Count,
    Meaning,
    Prop,
)

CONTENT_CONCEPTS: tuple[str, ...] = RELATION_VERBS + COUNT_VERBS + NOUNS + PROPERTY_VALUES
FUNCTION_WORDS: tuple[str, ...] = ("AND", "NOT", "IS", "BY", "OBJ")
AFFIXES: tuple[str, ...] = ("PL", "NEG", "PASS")


@dataclass(frozen=True)
class Profile:
    """The typological settings of one language (what stays fixed whatever the seed)."""

    order: str  # "SVO" | "SOV" | "VSO"
    negation: str  # "do" (English do-support) | "before" | "after" | "prefix" | "suffix" | "initial"
    plural: str  # "english" | "suffix" | "prefix" | "none"
    number_after_noun: bool
    copula: bool
    object_marker: bool
    postpositions: bool
    consonants: str = ""
    vowels: str = ""
    cognate_rate: float = 0.0  # share of content words that are sound-shifted English words


PROFILES: dict[str, Profile] = {
    "en": Profile("SVO", "do", "english", False, True, False, False),
    # a close relative of English: SVO, a negation particle, plural suffix, most words cognates
    "xa": Profile("SVO", "before", "suffix", False, True, False, False, "ptkbdgmnlrs", "aeiou", 0.8),
    # verb-final with an object particle and postpositions, negation suffix, no copula, no cognates
    "xb": Profile("SOV", "suffix", "suffix", True, False, True, True, "kgtdnmrszj", "aiu", 0.0),
    # verb-initial, clause-initial negation, plural prefix, some cognates
    "xc": Profile("VSO", "initial", "prefix", False, True, False, False, "bdfghlmnrvw", "aeoy", 0.3),
    # verb-final, negation after the verb, no plural marking, object particle, no cognates
    "xd": Profile("SOV", "after", "none", True, True, True, True, "ptksxnmlh", "aeiou", 0.0),
    # SVO without copula, negation prefix, number after the noun, half cognates
    "xe": Profile("SVO", "prefix", "suffix", True, False, False, False, "zvdrlmnkt", "eiou", 0.5),
}

_ENGLISH_WORDS: dict[str, str] = {c: c for c in CONTENT_CONCEPTS} | {
    "AND": "and", "NOT": "not", "IS": "is", "BY": "by", "DOES": "does",
}
_ENGLISH_FORMS: dict[str, str] = {
    "help:3sg": "helps", "help:pp": "helped", "see:3sg": "sees", "see:pp": "seen",
    "call:3sg": "calls", "call:pp": "called", "visit:3sg": "visits", "visit:pp": "visited",
    "follow:3sg": "follows", "follow:pp": "followed", "thank:3sg": "thanks", "thank:pp": "thanked",
    "meet:3sg": "meets", "meet:pp": "met", "teach:3sg": "teaches", "teach:pp": "taught",
    "love:3sg": "loves", "love:pp": "loved", "blame:3sg": "blames", "blame:pp": "blamed",
    "have:3sg": "has", "buy:3sg": "buys", "sell:3sg": "sells", "want:3sg": "wants",
} | {f"{noun}:pl": noun + ("es" if noun.endswith("s") else "s") for noun in NOUNS}


@dataclass(frozen=True)
class Language:
    """A language = a profile + a lexicon (concept -> stem) + irregular forms (English only)."""

    code: str
    profile: Profile
    words: Mapping[str, str]
    forms: Mapping[str, str] = field(default_factory=dict)

    # ---- words -----------------------------------------------------------------------------
    def stem(self, concept: str, borrow: frozenset[str], donor: "Language | None") -> str:
        if donor is not None and concept in borrow:
            return donor.words[concept]
        return self.words[concept]

    def irregular(self, concept: str, form: str, borrow: frozenset[str]) -> str | None:
        """An irregular form (English "sees", "taught"), unless the stem is borrowed."""
        return None if concept in borrow else self.forms.get(f"{concept}:{form}")

    # ---- phrases ---------------------------------------------------------------------------
    def negate(self, word: str) -> list[str]:
        """Negate a verb-like word (a verb, a copula, a participle, a predicate adjective)."""
        rule = self.profile.negation
        if rule == "prefix":
            return [self.words["NEG"] + word]
        if rule == "suffix":
            return [word + self.words["NEG"]]
        if rule == "before":
            return [self.words["NOT"], word]
        if rule in ("after", "do"):
            return [word, self.words["NOT"]]
        return [word]  # "initial": the clause adds the particle in front

    def plural(self, noun: str, borrow: frozenset[str], donor: "Language | None") -> str:
        irregular = self.irregular(noun, "pl", borrow)
        if irregular is not None and self.profile.plural == "english":
            return irregular
        stem = self.stem(noun, borrow, donor)
        rule = self.profile.plural
        if rule in ("suffix", "english"):
            return stem + (self.words["PL"] if rule == "suffix" else "s")
        if rule == "prefix":
            return self.words["PL"] + stem
        return stem

    def finite_verb(self, verb: str, negated: bool, borrow: frozenset[str], donor: "Language | None") -> list[str]:
        stem = self.stem(verb, borrow, donor)
        if self.profile.negation == "do":  # English: "helps" / "does not help"
            if negated:
                return [self.words["DOES"], self.words["NOT"], stem]
            return [self.irregular(verb, "3sg", borrow) or stem + "s"]
        return self.negate(stem) if negated else [stem]

    def participle(self, verb: str, borrow: frozenset[str], donor: "Language | None") -> str:
        irregular = self.irregular(verb, "pp", borrow)
        if irregular is not None:
            return irregular
        stem = self.stem(verb, borrow, donor)
        return stem + ("ed" if self.profile.negation == "do" else self.words["PASS"])

    def number_phrase(self, clause: Count, borrow: frozenset[str], donor: "Language | None") -> list[str]:
        noun = self.plural(clause.noun, borrow, donor)
        if clause.number is None:
            phrase = [noun]
        elif self.profile.number_after_noun:
            phrase = [noun, str(clause.number)]
        else:
            phrase = [str(clause.number), noun]
        return phrase + ([self.words["OBJ"]] if self.profile.object_marker else [])

    def adposition_phrase(self, name: str) -> list[str]:
        by = self.words["BY"]
        return [name, by] if self.profile.postpositions else [by, name]

    # ---- clauses ---------------------------------------------------------------------------
    def arrange(self, subject: list[str], verb: list[str], obj: list[str], negated: bool) -> list[str]:
        """Put subject, verb group and object in the language's order (and its clause negation)."""
        order = self.profile.order
        if order == "SOV":
            words = subject + obj + verb
        elif order == "VSO":
            words = verb + subject + obj
        else:
            words = subject + verb + obj
        if negated and self.profile.negation == "initial":
            words = [self.words["NOT"]] + words
        return words

    def copula_group(self, predicate: str, negated: bool) -> tuple[list[str], list[str]]:
        """(verb group, object slot) of "X is (not) PREDICATE"; copula-less languages negate the predicate."""
        if self.profile.copula:
            copula = self.words["IS"]
            return (self.negate(copula) if negated else [copula]), [predicate]
        return [], (self.negate(predicate) if negated else [predicate])

    def passive_group(self, participle: str, negated: bool) -> list[str]:
        """The verb group of a passive ("is (not) helped"); verb-final languages put the auxiliary last."""
        if not self.profile.copula:
            return self.negate(participle) if negated else [participle]
        auxiliary = self.negate(self.words["IS"]) if negated else [self.words["IS"]]
        return [participle] + auxiliary if self.profile.order == "SOV" else auxiliary + [participle]

    def clause_words(self, clause: Clause, borrow: frozenset[str], donor: "Language | None") -> list[str]:
        if isinstance(clause, Prop):
            verb, obj = self.copula_group(self.stem(clause.value, borrow, donor), clause.negated)
            return self.arrange([clause.person], verb, obj, clause.negated)
        if isinstance(clause, Count):
            verb = self.finite_verb(clause.verb, clause.negated, borrow, donor)
            return self.arrange([clause.person], verb, self.number_phrase(clause, borrow, donor), clause.negated)
        if clause.passive:
            verb = self.passive_group(self.participle(clause.verb, borrow, donor), clause.negated)
            return self.arrange([clause.patient], verb, self.adposition_phrase(clause.agent), clause.negated)
        obj = [clause.patient] + ([self.words["OBJ"]] if self.profile.object_marker else [])
        verb = self.finite_verb(clause.verb, clause.negated, borrow, donor)
        return self.arrange([clause.agent], verb, obj, clause.negated)

    def render(self, meaning: Meaning, borrow: frozenset[str] = frozenset(), donor: "Language | None" = None) -> str:
        """Say a meaning: its clauses in order, joined by the language's "and", with a final period."""
        words: list[str] = []
        for index, clause in enumerate(meaning):
            if index:
                words.append(self.words["AND"])
            words.extend(self.clause_words(clause, borrow, donor))
        return " ".join(words) + " ."


def english() -> Language:
    return Language("en", PROFILES["en"], dict(_ENGLISH_WORDS), dict(_ENGLISH_FORMS))


def generated_language(code: str, rng: random.Random) -> Language:
    """A language with ``code``'s profile and a lexicon of distinct words drawn from ``rng``.

    A ``cognate_rate`` share of the content words are English words put through the language's sound
    changes ("dog" -> "toga"); the rest, and every function word and affix, are fresh pseudo-words.
    """
    profile = PROFILES[code]
    shift = _sound_changes(rng, profile)
    taken = {name.lower() for name in NAMES}
    words: dict[str, str] = {}
    for concept, syllables in _word_shapes(rng):
        word = shift(concept) if concept in CONTENT_CONCEPTS and rng.random() < profile.cognate_rate else ""
        while not word or word in taken:
            word = "".join(_syllable(rng, profile, closed=concept in FUNCTION_WORDS + AFFIXES) for _ in range(syllables))
        taken.add(word)
        words[concept] = word
    return Language(code, profile, words)


def _sound_changes(rng: random.Random, profile: Profile) -> Callable[[str], str]:
    """A regular letter-for-letter sound shift into the language's inventory, plus a final vowel or not."""
    def shifted(letters: str, inventory: str) -> dict[str, str]:
        return {c: c if c in inventory and rng.random() < 0.85 else rng.choice(inventory) for c in letters}

    table = shifted("bcdfghjklmnpqrstvwxyz", profile.consonants) | shifted("aeiou", profile.vowels)
    ending = rng.choice(profile.vowels) if rng.random() < 0.5 else ""
    return lambda word: "".join(table[c] for c in word) + (ending if word[-1] not in "aeiou" else "")


def _word_shapes(rng: random.Random) -> list[tuple[str, int]]:
    """How many syllables each concept gets: content words 1-3 (mostly 2), function words and affixes 1."""
    shapes = [(concept, rng.choice((1, 2, 2, 2, 3))) for concept in CONTENT_CONCEPTS]
    return shapes + [(word, 1) for word in FUNCTION_WORDS + AFFIXES]


def _syllable(rng: random.Random, profile: Profile, closed: bool) -> str:
    syllable = rng.choice(profile.consonants) + rng.choice(profile.vowels)
    if closed or rng.random() < 0.3:
        syllable += rng.choice(profile.consonants)
    return syllable


def build_languages(rng_for: Callable[[str], random.Random]) -> dict[str, Language]:
    """English plus every generated language; ``rng_for(code)`` gives each lexicon its own stream."""
    languages = {"en": english()}
    for code in PROFILES:
        if code != "en":
            languages[code] = generated_language(code, rng_for(code))
    return languages
