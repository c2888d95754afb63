"""Sampling meanings and the meaning edits that build the synthetic NLI and paraphrase examples.

The generators only *propose*: a hypothesis is built by an edit aimed at a label, and the caller keeps
it only if ``semantics.nli_label`` / ``semantics.equivalent`` agree, so the labels always follow the
semantics, never the recipe. The same small set of edits serves both tasks, which is the designed
link between the intermediate and the target task: NLI teaches the encoder to line up two texts
clause by clause and to notice a changed value, number, negation or role; paraphrase detection asks
for the same comparison in both directions.
"""

from __future__ import annotations

import random
from dataclasses import replace

from fastxlt.synthetic.semantics import (
    COUNT_VERBS,
    DIMENSION_OF,
    NAMES,
    NOUNS,
    NUMBERS,
    PROPERTY_DIMENSIONS,
    PROPERTY_VALUES,
    RELATION_VERBS,
    Clause,
    Count,
    Meaning,
    Prop,
    Rel,
    is_consistent,
    people,
    variable,
)


# ---- random meanings ------------------------------------------------------------------------------
def random_cast(rng: random.Random, size: int) -> list[str]:
    return rng.sample(NAMES, size)


def random_clause(rng: random.Random, cast: list[str]) -> Clause:
    kind = rng.randrange(3)
    if kind == 0:
        return Prop(rng.choice(cast), rng.choice(PROPERTY_VALUES), negated=rng.random() < 0.25)
    if kind == 1:
        agent, patient = rng.sample(cast, 2)
        return Rel(agent, rng.choice(RELATION_VERBS), patient, negated=rng.random() < 0.25, passive=rng.random() < 0.3)
    number = rng.choice(NUMBERS) if rng.random() < 0.7 else None
    return Count(rng.choice(cast), rng.choice(COUNT_VERBS), rng.choice(NOUNS), number, negated=rng.random() < 0.2)


def random_meaning(rng: random.Random, clauses: int, cast: list[str] | None = None) -> Meaning:
    """``clauses`` clauses about distinct variables (so the meaning is always consistent)."""
    cast = cast or random_cast(rng, rng.choice((2, 3)))
    chosen: list[Clause] = []
    seen = set()
    while len(chosen) < clauses:
        clause = random_clause(rng, cast)
        if variable(clause) not in seen:
            seen.add(variable(clause))
            chosen.append(clause)
    return tuple(chosen)


# ---- edits on one clause ------------------------------------------------------------------------------
def restate(clause: Clause) -> Clause:
    """Same meaning, other words: active <-> passive, "tall" <-> "not short" (two-valued dimensions)."""
    if isinstance(clause, Rel):
        return replace(clause, passive=not clause.passive)
    if isinstance(clause, Prop):
        values = PROPERTY_DIMENSIONS[DIMENSION_OF[clause.value]]
        if len(values) == 2:
            other = values[1 - values.index(clause.value)]
            return Prop(clause.person, other, negated=not clause.negated)
    return clause


def weaken(rng: random.Random, clause: Clause) -> Clause | None:
    """A strictly weaker clause the original entails ("3 dogs" -> "dogs", "sad" -> "not happy")."""
    if isinstance(clause, Count):
        if not clause.negated and clause.number is not None:
            return replace(clause, number=None)
        if clause.negated and clause.number is None:
            return replace(clause, number=rng.choice(NUMBERS))
    if isinstance(clause, Prop) and not clause.negated:
        values = PROPERTY_DIMENSIONS[DIMENSION_OF[clause.value]]
        if len(values) > 2:
            return Prop(clause.person, rng.choice([v for v in values if v != clause.value]), negated=True)
    return None


def conflict(rng: random.Random, clause: Clause) -> Clause:
    """A clause that cannot be true together with the original."""
    options: list[Clause] = [replace(clause, negated=not clause.negated)]
    if isinstance(clause, Prop) and not clause.negated:
        values = PROPERTY_DIMENSIONS[DIMENSION_OF[clause.value]]
        options.append(Prop(clause.person, rng.choice([v for v in values if v != clause.value])))
    if isinstance(clause, Count) and not clause.negated and clause.number is not None:
        options.append(replace(clause, number=rng.choice([n for n in NUMBERS if n != clause.number])))
        options.append(replace(clause, number=None, negated=True))
    return rng.choice(options)


def unrelated(rng: random.Random, meaning: Meaning) -> Clause:
    """A clause about something the meaning leaves open (swapped roles, another thing, a more precise claim)."""
    mentioned = {variable(clause) for clause in meaning}
    cast = sorted(people(meaning))
    options: list[Clause] = []
    for clause in meaning:
        if isinstance(clause, Rel):  # the PAWS-like trap: same words, other roles
            options.append(Rel(clause.patient, clause.verb, clause.agent, clause.negated, rng.random() < 0.5))
        elif isinstance(clause, Count) and clause.number is None and not clause.negated:
            options.append(replace(clause, number=rng.choice(NUMBERS)))
        elif isinstance(clause, Prop) and clause.negated:
            values = PROPERTY_DIMENSIONS[DIMENSION_OF[clause.value]]
            if len(values) > 2:
                options.append(Prop(clause.person, rng.choice([v for v in values if v != clause.value])))
    options = [clause for clause in options if variable(clause) not in mentioned]
    while not options:  # something new about the same people, or about a newcomer
        newcomer = rng.choice([name for name in NAMES if name not in cast])
        candidate = random_clause(rng, cast if len(cast) >= 2 and rng.random() < 0.7 else cast + [newcomer])
        if variable(candidate) not in mentioned:
            options.append(candidate)
    return rng.choice(options)


# ---- NLI ----------------------------------------------------------------------------------------------
def nli_hypothesis(rng: random.Random, premise: Meaning, label: int) -> Meaning:
    """A hypothesis aimed at ``label`` (0 entailment, 1 neutral, 2 contradiction); the caller verifies it."""
    if label == 0:
        picked = rng.sample(premise, rng.randint(1, min(2, len(premise))))
        hypothesis = [_entailed_variant(rng, clause) for clause in picked]
    else:
        core = conflict(rng, rng.choice(premise)) if label == 2 else unrelated(rng, premise)
        hypothesis = [core]
        if len(premise) > 1 and rng.random() < 0.4:
            others = [clause for clause in premise if variable(clause) != variable(core)]
            if others:
                hypothesis.append(_entailed_variant(rng, rng.choice(others)))
    rng.shuffle(hypothesis)
    return tuple(hypothesis)


def _entailed_variant(rng: random.Random, clause: Clause) -> Clause:
    roll = rng.random()
    if roll < 0.35:
        weaker = weaken(rng, clause)
        if weaker is not None:
            return weaker
    return restate(clause) if roll < 0.7 else clause


# ---- paraphrase -------------------------------------------------------------------------------------------
def paraphrase_candidate(rng: random.Random, first: Meaning, positive: bool) -> Meaning:
    """A second text aimed at the same meaning (positive) or a close, different one (negative)."""
    second = list(first) if positive else list(_change_meaning(rng, first))
    second = [restate(clause) if rng.random() < 0.5 else clause for clause in second]
    if rng.random() < 0.5:
        rng.shuffle(second)
    return tuple(second)


def _change_meaning(rng: random.Random, meaning: Meaning) -> Meaning:
    clauses = list(meaning)
    index = rng.randrange(len(clauses))
    roll = rng.random()
    rel_indices = [i for i, clause in enumerate(clauses) if isinstance(clause, Rel)]
    if roll < 0.3 and rel_indices:  # swapped roles
        i = rng.choice(rel_indices)
        clauses[i] = replace(clauses[i], agent=clauses[i].patient, patient=clauses[i].agent)
    elif roll < 0.5 and _can_swap_subjects(clauses):  # two clauses exchange their subjects
        clauses = _swap_subjects(rng, clauses)
    elif roll < 0.8:
        clauses[index] = conflict(rng, clauses[index])
    else:
        weaker = weaken(rng, clauses[index])
        if weaker is not None:
            clauses[index] = weaker
        elif len(clauses) > 1:
            del clauses[index]
        else:
            clauses.append(unrelated(rng, meaning))
    return tuple(clauses)


def _subject(clause: Clause) -> str:
    return clause.agent if isinstance(clause, Rel) else clause.person


def _with_subject(clause: Clause, name: str) -> Clause:
    return replace(clause, agent=name) if isinstance(clause, Rel) else replace(clause, person=name)


def _can_swap_subjects(clauses: list[Clause]) -> bool:
    return len({_subject(clause) for clause in clauses}) > 1


def _swap_subjects(rng: random.Random, clauses: list[Clause]) -> list[Clause]:
    i, j = rng.sample(range(len(clauses)), 2)
    while _subject(clauses[i]) == _subject(clauses[j]):
        i, j = rng.sample(range(len(clauses)), 2)
    first, second = _subject(clauses[i]), _subject(clauses[j])
    clauses = list(clauses)
    clauses[i], clauses[j] = _with_subject(clauses[i], second), _with_subject(clauses[j], first)
    return clauses


def usable(meaning: Meaning) -> bool:
    """A text a person could say: consistent, and no Rel with the same agent and patient."""
    return is_consistent(meaning) and not any(
        isinstance(clause, Rel) and clause.agent == clause.patient for clause in meaning
    )
