"""Moved to :mod:`fastxlt.inference.precision` (layer 5, shared with training); kept as a re-export because
``benchmarks/eval_throughput.py`` imports it from here."""

from fastxlt.inference.precision import (  # noqa: F401
    CPU_BATCH_TOKENS,
    EVAL_PRECISIONS,
    GPU_BATCH_TOKENS,
    cast_for_precision,
    default_batch_tokens,
    resolve_eval_precision,
)
