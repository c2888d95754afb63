"""One random generator per (seed, perturbation, text): perturbed text depends on nothing else.

The generator is seeded from a SHA-256 of the seed, the perturbation's name and strength, the language,
the text's role in its example (first or second sentence) and the text itself, so the same example gets
the same perturbation in any order, batch or process (Python's ``hash`` is salted per process; SHA-256
is not), and another seed gives another perturbation.
"""

from __future__ import annotations

import hashlib
import math
import random


def text_rng(seed: int, name: str, strength: float, language: str, role: str, text: str) -> random.Random:
    """The generator for one text of one example."""
    key = "\x1f".join((str(seed), name, repr(float(strength)), language, role, text))
    return random.Random(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big"))


def affected_count(rng: random.Random, strength: float, total: int) -> int:
    """How many of ``total`` units a perturbation of ``strength`` affects: strength * total, the fraction
    rounded up or down at random so that the expected share is exactly ``strength``; 0 for strength 0."""
    exact = strength * total
    whole = math.floor(exact)
    return min(total, whole + (1 if rng.random() < exact - whole else 0))
