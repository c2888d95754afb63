"""The sentence encoders' option values, importable without torch: token pooling and the maximum length.

Why here: the encoders (:mod:`.embed`) live in this layer and check these values, and the command lines
(``fastxlt-eval --retrieval``, ``--help``) build their parsers from them without loading torch;
``fastxlt.retrieval.options`` re-exports them beside the retrieval-only value sets.
"""

from __future__ import annotations

POOLINGS = ("mean", "cls")  # token pooling of a sentence embedding

# The one maximum sentence length of every retrieval entry point (fastxlt-eval --retrieval, python -m
# fastxlt.cli.retrieval, the torch and ONNX sentence encoders), capped by the model's position embeddings.
# XTREME's scripts/run_bucc2018.sh and scripts/run_tatoeba.sh both embed with MAXL=512.
RETRIEVAL_MAX_LENGTH = 512
