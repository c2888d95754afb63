"""Robustness of zero-shot transfer: perturbations of evaluation text, script-correct in every XNLI and
PAWS-X language, and an embedding-space attack.

- ``scripts``: alphabets and the units of character noise per script (letter, akshara, Thai cluster, ...);
- ``segment``: words and their roles (movable, fixed, separator, clause boundary) from jieba, pythainlp, fugashi;
- ``typos``: what a typist of each script gets wrong; ``text``: character noise and word order within a clause;
- ``muse``: MUSE dictionaries cleaned by stated rules; ``code_switch``: code-switching in both directions;
- ``labels``: which perturbation keeps which task's label (PAWS-X word order does not);
- ``attack``: PGD within an L2 or L-inf ball on the input embeddings;
- ``registry``: ``NAME[:strength]`` specs; ``evaluate``: per-language clean / perturbed / drop, cached;
- ``dump``: the perturbed texts as JSON lines (``fastxlt perturb``, evaluation samples).
docs/robustness.md has the units, the rules and the perturbation x task label table.
"""

from fastxlt.robustness.registry import NAMES, Perturbation, PerturbationError, parse_perturbations

__all__ = ["NAMES", "Perturbation", "PerturbationError", "parse_perturbations"]
