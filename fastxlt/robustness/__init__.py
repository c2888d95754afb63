"""Robustness of zero-shot transfer: perturbations of evaluation text, script-correct in every XNLI and
PAWS-X language, and an embedding-space attack.

- ``scripts``: alphabets, grapheme-safe units and word segmentation per language;
- ``text``: character noise and local word-order shuffles;
- ``code_switch``: MUSE dictionary code-switching in both directions;
- ``attack``: PGD within an L2 or L-inf ball on the input embeddings;
- ``registry``: ``NAME[:strength]`` specs; ``evaluate``: per-language clean / perturbed / drop, cached.
"""

from fastxlt.robustness.registry import NAMES, Perturbation, PerturbationError, parse_perturbations

__all__ = ["NAMES", "Perturbation", "PerturbationError", "parse_perturbations"]
