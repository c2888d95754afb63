"""The retrieval options' value sets and defaults, importable without torch or transformers.

``fastxlt --help`` and ``fastxlt-eval --help`` build their parsers from these names, so the modules
that do the work (``embed``, ``search``, ``tatoeba``) import them from here rather than the other way
round: printing the help must not load torch.
"""

from __future__ import annotations

from fastxlt.inference.options import POOLINGS, RETRIEVAL_MAX_LENGTH  # noqa: F401  - the encoders' own values

RETRIEVAL_TASKS = ("tatoeba", "bucc", "lareqa", "mewsli-x")
DUAL_ENCODER_TASKS = ("lareqa", "mewsli-x")  # XTREME-R's mAP@20 tasks (fastxlt.retrieval.lareqa / .mewsli)
CANDIDATE_FORMATS = ("pair", "concat")  # LAReQA: a candidate as (sentence, paragraph) pair or one concatenated text
EMBEDDING_BACKENDS = ("torch", "onnx")  # what computes the embeddings
SEARCH_BACKENDS = ("torch", "faiss")  # what computes the kNN
SEARCH_PRECISIONS = ("fp32", "bf16", "int8", "auto")  # kNN products (candidates re-scored in fp32)
ENCODER_PRECISIONS = ("fp32", "bf16", "auto")  # = fastxlt.inference.precision.EVAL_PRECISIONS (a test checks)
DIRECTIONS = ("xx-en", "en-xx")  # Tatoeba: which side queries
