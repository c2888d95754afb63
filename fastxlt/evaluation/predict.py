"""Moved to :mod:`fastxlt.inference.predict` (layer 5, shared with training); kept as a re-export because
``benchmarks/eval_throughput.py`` imports it from here."""

from fastxlt.inference.predict import predict, predict_examples, score_examples  # noqa: F401
