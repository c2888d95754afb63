"""The shared semantic core of the synthetic world: concepts, clauses and what they mean.

Every synthetic language renders the same meanings, so the labels of the synthetic tasks are decided
here, once, on the meaning and never on a surface form. A meaning is a tuple of clauses; each clause
constrains exactly one *variable* of a small world state:

* ``Prop``  -- "Anna is (not) happy": the value of one property dimension of a person (exactly one
  value per dimension, so "happy" conflicts with "sad" and, for two-valued dimensions, "not tall"
  means "short");
* ``Rel``   -- "Anna (does not) help(s) Marco" / "Marco is helped by Anna": a yes/no relation between
  two people (the voice is surface only; swapping the roles is a different variable);
* ``Count`` -- "Anna has (no | 3) dogs": how many things of a kind a person has / buys / ...
  (0-9; a bare plural means "at least one", its negation "none").

Because each clause touches one variable, entailment and contradiction reduce to comparing, per
variable, the set of values a text allows; ``nli_label`` and ``equivalent`` do exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

# Names and digits are the anchors: identical in every language, like names and numbers in real text.
NAMES: tuple[str, ...] = (
    "Anna", "Marco", "Lena", "Omar", "Sara", "Ivan", "Yuki", "Pablo", "Nora", "Felix", "Maya", "Hugo",
    "Rosa", "Karim", "Elif", "Tomas", "Ines", "Ravi", "Leila", "Bruno", "Alma", "Jonas", "Mina", "Diego",
)
NUMBERS: tuple[int, ...] = tuple(range(2, 10))
COUNT_DOMAIN: tuple[int, ...] = tuple(range(0, 10))

PROPERTY_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "mood": ("happy", "sad", "angry"),
    "height": ("tall", "short"),
    "age": ("young", "old"),
    "wealth": ("rich", "poor"),
}
PROPERTY_VALUES: tuple[str, ...] = tuple(v for values in PROPERTY_DIMENSIONS.values() for v in values)
DIMENSION_OF: dict[str, str] = {v: dim for dim, values in PROPERTY_DIMENSIONS.items() for v in values}

RELATION_VERBS: tuple[str, ...] = (
    "help", "see", "call", "visit", "follow", "thank", "meet", "teach", "love", "blame",
)
COUNT_VERBS: tuple[str, ...] = ("have", "buy", "sell", "want")
NOUNS: tuple[str, ...] = (
    "dog", "cat", "car", "book", "apple", "house", "bird", "chair",
    "boat", "flower", "key", "letter", "horse", "cup", "lamp", "shoe",
)


@dataclass(frozen=True)
class Prop:
    """``person`` is (not) ``value``; constrains (person, dimension of value)."""

    person: str
    value: str
    negated: bool = False


@dataclass(frozen=True)
class Rel:
    """``agent`` (does not) ``verb`` ``patient``; ``passive`` only changes how it is said."""

    agent: str
    verb: str
    patient: str
    negated: bool = False
    passive: bool = False


@dataclass(frozen=True)
class Count:
    """``person`` (does not) ``verb`` ``number`` ``noun``s; number None = a bare plural ("dogs")."""

    person: str
    verb: str
    noun: str
    number: int | None = None
    negated: bool = False


Clause = Union[Prop, Rel, Count]
Meaning = tuple[Clause, ...]
Variable = tuple

ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2
NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
PARA_LABELS: tuple[str, ...] = ("different", "paraphrase")


def variable(clause: Clause) -> Variable:
    """The one world-state variable that a clause talks about."""
    if isinstance(clause, Prop):
        return ("prop", clause.person, DIMENSION_OF[clause.value])
    if isinstance(clause, Rel):
        return ("rel", clause.agent, clause.verb, clause.patient)
    return ("count", clause.person, clause.verb, clause.noun)


def domain(var: Variable) -> tuple:
    """Every value a variable can take."""
    kind = var[0]
    if kind == "prop":
        return PROPERTY_DIMENSIONS[var[2]]
    if kind == "rel":
        return (False, True)
    return COUNT_DOMAIN


def holds(clause: Clause, value) -> bool:
    """Whether the clause is true when its variable has ``value``."""
    if isinstance(clause, Prop):
        truth = value == clause.value
    elif isinstance(clause, Rel):
        truth = bool(value)
    elif clause.number is None:
        truth = value >= 1
    else:
        truth = value == clause.number
    return truth != clause.negated


def allowed_values(meaning: Meaning, var: Variable) -> frozenset:
    """The values of ``var`` that every clause of ``meaning`` about it accepts."""
    values = set(domain(var))
    for clause in meaning:
        if variable(clause) == var:
            values = {value for value in values if holds(clause, value)}
    return frozenset(values)


def variables(meaning: Meaning) -> list[Variable]:
    """The variables a meaning talks about, in first-mention order."""
    seen: dict[Variable, None] = {}
    for clause in meaning:
        seen.setdefault(variable(clause), None)
    return list(seen)


def is_consistent(meaning: Meaning) -> bool:
    return all(allowed_values(meaning, var) for var in variables(meaning))


def nli_label(premise: Meaning, hypothesis: Meaning) -> int:
    """0 entailment / 1 neutral / 2 contradiction of a consistent premise and a hypothesis.

    Contradiction: some variable has no value both texts accept. Entailment: on every variable the
    hypothesis mentions, the premise already rules out every value the hypothesis rejects.
    """
    entailed = True
    for var in variables(hypothesis):
        by_premise = allowed_values(premise, var)
        by_hypothesis = allowed_values(hypothesis, var)
        if not by_premise & by_hypothesis:
            return CONTRADICTION
        entailed = entailed and by_premise <= by_hypothesis
    return ENTAILMENT if entailed else NEUTRAL


def equivalent(first: Meaning, second: Meaning) -> bool:
    """Same meaning: both texts allow exactly the same values on every variable either mentions."""
    return all(
        allowed_values(first, var) == allowed_values(second, var)
        for var in variables(first + second)
    )


def people(meaning: Meaning) -> set[str]:
    found: set[str] = set()
    for clause in meaning:
        if isinstance(clause, Rel):
            found.update((clause.agent, clause.patient))
        else:
            found.add(clause.person)
    return found
