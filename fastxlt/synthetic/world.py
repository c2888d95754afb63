"""A seeded multilingual world: the languages, and every data set drawn from them.

``World(seed)`` is a pure function of its seed: the lexicons of the generated languages and every
sample come from random streams derived from (seed, purpose) with a stable hash, so the same seed
gives byte-identical data on any machine and Python version. Splits are disjoint by construction:
each semantic item (a meaning, or a pair of meanings) hashes to exactly one split, and a split only
keeps the items that hash to it. Test and validation sets are parallel across languages (the same
meanings said in every language), as in XNLI and PAWS-X.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Callable

from fastxlt.synthetic import generate
from fastxlt.synthetic.languages import CONTENT_CONCEPTS, PROFILES, Language, build_languages
from fastxlt.synthetic.semantics import Meaning, equivalent, nli_label

DEFAULT_SEED = 20240917
LANGUAGES: tuple[str, ...] = tuple(PROFILES)  # "en" first: the source language
SPLITS: tuple[str, ...] = ("train", "validation", "test")
TASK_MAX_CLAUSES = 2  # per premise / first sentence: short pairs a tiny model learns in a minute
TEXT_MAX_CLAUSES = 3  # per sentence of raw and parallel text
MLM_CODE_SWITCH, MLM_PARALLEL, MLM_MAX_SENTENCES = 0.4, 0.4, 2  # shares of sentences; sentences per document
# share of the hash space each split owns (out of 20): 80% / 10% / 10%
_SPLIT_BUCKETS: dict[str, range] = {"train": range(0, 16), "validation": range(16, 18), "test": range(18, 20)}


@dataclass(frozen=True)
class NliItem:
    premise: Meaning
    hypothesis: Meaning
    label: int  # 0 entailment, 1 neutral, 2 contradiction


@dataclass(frozen=True)
class ParaItem:
    first: Meaning
    second: Meaning
    label: int  # 1 same meaning, 0 different


def stable_seed(*parts: object) -> int:
    """A seed derived from ``parts`` that does not depend on Python's per-process hash salt."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def split_of(item: object) -> str:
    """The one split a semantic item belongs to."""
    bucket = stable_seed("split", repr(item)) % 20
    return next(split for split, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)


class World:
    """The languages of one seed and the samplers of the synthetic tasks."""

    def __init__(self, seed: int = DEFAULT_SEED) -> None:
        self.seed = seed

    @cached_property
    def languages(self) -> dict[str, Language]:
        return build_languages(lambda code: self.rng("lexicon", code))

    def rng(self, *purpose: object) -> random.Random:
        return random.Random(stable_seed(self.seed, *purpose))

    def language(self, code: str) -> Language:
        return self.languages[code]

    def render(self, meaning: Meaning, language: str) -> str:
        return self.languages[language].render(meaning)

    # ---- task items (language-independent meanings) ------------------------------------------------
    def nli_items(self, split: str, size: int) -> list[NliItem]:
        """``size`` NLI items with labels balanced 0/1/2 (exactly, up to size % 3)."""
        rng = self.rng("nli", split)
        items: list[NliItem] = []
        for target in _balanced_labels(rng, size, 3):
            items.append(_draw(split, lambda: self._nli_candidate(rng, target)))
        return items

    def para_items(self, split: str, size: int) -> list[ParaItem]:
        """``size`` paraphrase items, half same meaning (1), half close but different (0)."""
        rng = self.rng("para", split)
        items: list[ParaItem] = []
        for target in _balanced_labels(rng, size, 2):
            items.append(_draw(split, lambda: self._para_candidate(rng, target)))
        return items

    def sentence_meanings(self, split: str, size: int, purpose: str = "sentences") -> list[Meaning]:
        """Single meanings (1 to ``TEXT_MAX_CLAUSES`` clauses) for raw text and parallel sentences."""
        rng = self.rng(purpose, split)
        return [_draw(split, lambda: generate.random_meaning(rng, rng.randint(1, TEXT_MAX_CLAUSES))) for _ in range(size)]

    def _nli_candidate(self, rng: random.Random, target: int) -> NliItem | None:
        premise = generate.random_meaning(rng, rng.randint(1, TASK_MAX_CLAUSES))
        hypothesis = generate.nli_hypothesis(rng, premise, target)
        if not generate.usable(hypothesis) or nli_label(premise, hypothesis) != target:
            return None
        return NliItem(premise, hypothesis, target)

    def _para_candidate(self, rng: random.Random, target: int) -> ParaItem | None:
        first = generate.random_meaning(rng, rng.randint(1, TASK_MAX_CLAUSES))
        second = generate.paraphrase_candidate(rng, first, positive=target == 1)
        if second == first or not generate.usable(second) or int(equivalent(first, second)) != target:
            return None
        return ParaItem(first, second, target)

    # ---- raw text -------------------------------------------------------------------------------------
    def mlm_texts(
        self,
        language: str,
        split: str,
        size: int,
        code_switch: float = MLM_CODE_SWITCH,
        parallel: float = MLM_PARALLEL,
        max_sentences: int = MLM_MAX_SENTENCES,
    ) -> list[str]:
        """``size`` short documents (1 to ``max_sentences`` sentences) of raw text in ``language``.

        Each sentence is monolingual, code-switched or a translation pair (see ``_mlm_sentence``).
        Code-switching and parallel text are what let an MLM trained from scratch line the languages
        up, as anchors, loanwords and mixed text do in real multilingual pretraining.
        """
        rng = self.rng("mlm", language, split)
        lengths = [rng.randint(1, max_sentences) for _ in range(size)]
        meanings = iter(self.sentence_meanings(split, sum(lengths), purpose=f"mlm-{language}"))
        partners = [code for code in LANGUAGES if code != language] if language == "en" else ["en"]
        texts: list[str] = []
        for length in lengths:
            sentences = [
                self._mlm_sentence(rng, next(meanings), language, rng.choice(partners), code_switch, parallel)
                for _ in range(length)
            ]
            texts.append(" ".join(sentences))
        return texts

    def _mlm_sentence(
        self, rng: random.Random, meaning: Meaning, language: str, partner: str, code_switch: float, parallel: float
    ) -> str:
        """One sentence of ``language``'s raw text, mixed with ``partner`` (English, or any language for English).

        Code-switched: said in ``language`` with about half its content stems taken from ``partner``,
        so stems of both languages fill the same slots. Parallel: the partner's sentence, then its
        translation, so a masked word can be recovered from the other side (translation language modelling).
        """
        ours, theirs = self.languages[language], self.languages[partner]
        roll = rng.random()
        if roll < code_switch:
            borrow = frozenset(c for c in CONTENT_CONCEPTS if rng.random() < 0.5)
            return ours.render(meaning, borrow, theirs)
        if roll < code_switch + parallel:
            return f"{theirs.render(meaning)} {ours.render(meaning)}"
        return ours.render(meaning)

    def parallel_pairs(self, language: str, split: str, size: int) -> list[tuple[str, str]]:
        """(English, ``language``) translations of the same meanings, for retrieval tasks."""
        meanings = self.sentence_meanings(split, size, purpose="parallel")
        english, other = self.languages["en"], self.languages[language]
        return [(english.render(meaning), other.render(meaning)) for meaning in meanings]


def _balanced_labels(rng: random.Random, size: int, classes: int) -> list[int]:
    labels = [index % classes for index in range(size)]
    rng.shuffle(labels)
    return labels


def _draw(split: str, candidate: Callable[[], object]) -> object:
    """The first candidate that exists and hashes to ``split`` (rejection sampling)."""
    while True:
        item = candidate()
        if item is not None and split_of(item) == split:
            return item


@lru_cache(maxsize=8)
def get_world(seed: int = DEFAULT_SEED) -> World:
    """One shared ``World`` per seed (the lexicons are built once)."""
    return World(seed)
