"""Perturbation specs: ``NAME[:strength][,NAME[:strength]...]`` -> ``Perturbation`` records.

| name                  | strength means                                                | default |
|-----------------------|---------------------------------------------------------------|---------|
| char                  | share of own-script units swapped/dropped/inserted/replaced   | 0.1     |
| char_swap, char_drop, char_insert, char_substitute | the same, one operation only     | 0.1     |
| word_order            | share of 3-word windows (within a clause) that are permuted   | 0.3     |
| code_switch_to_en     | share of the sentence's words replaced by English (XX -> en)  | 0.3     |
| code_switch_from_en   | share of the English sentence's words replaced by XX words    | 0.3     |
| pgd                   | epsilon: L2 radius of the embedding perturbation per example  | 1.0     |
| pgd_linf              | epsilon: L-inf radius (per embedding element)                 | 0.01    |

Text strengths are in [0, 1]; an epsilon is any number >= 0. Strength 0 is the identity. Units per script
are defined in ``fastxlt.robustness.scripts``; ``Perturbation.apply`` returns the edit rate actually applied
(and, for code-switching, the dictionary coverage) with the text. Every text perturbation is deterministic
per (seed, example): see ``fastxlt.robustness.seeding``.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import fastxlt.robustness.code_switch as code_switch
import fastxlt.robustness.text as text
from fastxlt.robustness.errors import PerturbationError
from fastxlt.robustness.labels import label_changing_reason
from fastxlt.robustness.muse import load_dictionary
from fastxlt.robustness.seeding import text_rng

_CHAR = {"char": text.CHAR_OPERATIONS, "char_swap": ("swap",), "char_drop": ("drop",),
         "char_insert": ("insert",), "char_substitute": ("substitute",)}
_TEXT_DEFAULTS = {**{name: 0.1 for name in _CHAR}, "word_order": 0.3, "code_switch_to_en": 0.3,
                  "code_switch_from_en": 0.3}
_ATTACK_DEFAULTS = {"pgd": 1.0, "pgd_linf": 0.01}
NAMES = tuple(_TEXT_DEFAULTS) + tuple(_ATTACK_DEFAULTS)


@dataclass(frozen=True)
class Outcome:
    """One perturbed text, the share of its units actually edited, and (code-switching) its dictionary coverage."""

    text: str
    edit_rate: float
    coverage: float | None = None


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one strength (for attacks, the radius epsilon)."""

    name: str
    strength: float

    @property
    def is_attack(self) -> bool:
        return self.name in _ATTACK_DEFAULTS

    @property
    def key(self) -> str:
        """``name:strength``: the key of its results."""
        return f"{self.name}:{self.strength:g}"

    def folder(self, seed: int) -> str:
        """The cache folder of its per-language results: name, strength and seed."""
        return f"{self.name}-{self.strength:g}-seed{seed}"

    def source_language(self, language: str) -> str:
        """Whose examples are perturbed for ``language``'s result: English for ``code_switch_from_en``."""
        return "en" if self.name == "code_switch_from_en" else language

    def unavailable(self, language: str, muse_dir: str | Path | None, task: str | None = None) -> str | None:
        """Why this perturbation has no result for ``language`` (None when it has one): no dictionary, or
        (when ``task`` is given) a perturbation that would change the task's labels."""
        if task is not None and label_changing_reason(task, self.name):
            return f"refused on {task}: {label_changing_reason(task, self.name)}"
        if self.name.startswith("code_switch"):
            return code_switch.unavailable_reason(muse_dir, language)
        return None

    def apply(self, value: str, language: str, seed: int, role: str = "a",
              muse_dir: str | Path | None = None) -> Outcome:
        """``value`` perturbed for ``language``, with what was done (a text perturbation; attacks need the model).

        The text is NFC (XNLI hi has precomposed nukta letters): what a perturbation writes is normalised, so
        that a changed or unchanged sentence never mixes the two forms."""
        if self.is_attack:
            raise PerturbationError(f"'{self.name}' is an embedding-space attack, not a text perturbation")
        if self.strength == 0:
            return Outcome(value, 0.0)
        outcome = self._apply(value, language, text_rng(seed, self.name, self.strength, language, role, value), muse_dir)
        return dataclasses.replace(outcome, text=unicodedata.normalize("NFC", outcome.text))

    def _apply(self, value: str, language: str, rng, muse_dir: str | Path | None) -> Outcome:
        if self.name in _CHAR or self.name == "word_order":
            noised = (text.char_noise(value, language, self.strength, rng, _CHAR[self.name]) if self.name in _CHAR
                      else text.word_order(value, language, self.strength, rng))
            return Outcome(noised.text, noised.edit_rate)
        reason = self.unavailable(language, muse_dir)
        if reason:
            raise PerturbationError(f"{self.name} for '{language}': {reason}")
        dictionary = load_dictionary(str(muse_dir), language, self.name == "code_switch_to_en")
        switched = code_switch.switch_words(value, dictionary, self.strength, rng)
        return Outcome(switched.text, switched.edit_rate, switched.coverage)

    def perturb_text(self, value: str, language: str, seed: int, role: str = "a",
                     muse_dir: str | Path | None = None) -> str:
        """``value`` perturbed for ``language``."""
        return self.apply(value, language, seed, role, muse_dir).text

    def perturb_pair(self, example, language: str, seed: int,
                     muse_dir: str | Path | None = None) -> tuple[Any, list[Outcome]]:
        """A perturbed copy of a pair example (both sentences) and the outcome of each sentence; the label and the
        original are untouched."""
        outcomes = [self.apply(example.text_a, language, seed, "a", muse_dir)]
        if example.text_b is not None:
            outcomes.append(self.apply(example.text_b, language, seed, "b", muse_dir))
        text_b = outcomes[1].text if example.text_b is not None else None
        return dataclasses.replace(example, text_a=outcomes[0].text, text_b=text_b), outcomes

    def perturb_example(self, example, language: str, seed: int, muse_dir: str | Path | None = None):
        """A perturbed copy of a pair example (both sentences); the label and the original are untouched."""
        return self.perturb_pair(example, language, seed, muse_dir)[0]


def parse_perturbations(specs: str | Iterable[str] | None) -> list[Perturbation]:
    """``"char:0.1,word_order"`` or ``["char:0.1", "pgd:0.5"]`` -> perturbations (duplicates dropped)."""
    if specs is None:
        return []
    items = specs.split(",") if isinstance(specs, str) else [part for spec in specs for part in str(spec).split(",")]
    parsed: list[Perturbation] = []
    for item in (part.strip() for part in items):
        if item:
            perturbation = parse_one(item)
            if perturbation not in parsed:
                parsed.append(perturbation)
    return parsed


def parse_one(spec: str) -> Perturbation:
    """``NAME[:strength]`` -> a perturbation, with a one-line error for a bad name or strength."""
    name, _, raw = spec.partition(":")
    name = name.strip()
    if name not in NAMES:
        raise PerturbationError(f"unknown perturbation '{name}'; choose from {', '.join(NAMES)}")
    if not raw.strip():
        return Perturbation(name, float({**_TEXT_DEFAULTS, **_ATTACK_DEFAULTS}[name]))
    try:
        strength = float(raw)
    except ValueError:
        raise PerturbationError(f"perturbation '{spec}': strength '{raw}' is not a number; write e.g. {name}:0.1") from None
    if not strength >= 0 or strength == float("inf"):
        raise PerturbationError(f"perturbation '{spec}': strength must be a finite number >= 0")
    if name in _TEXT_DEFAULTS and strength > 1:
        raise PerturbationError(f"perturbation '{spec}': strength is a share of words or letters, in [0, 1]")
    return Perturbation(name, strength)
