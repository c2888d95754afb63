"""Sentence embeddings for retrieval, from either backend: ``torch`` or ``onnx``.

The embedding itself (one hidden layer, pooled, L2-normalised; ``TorchSentenceEncoder``) lives in
:mod:`fastxlt.inference.embed`, below both the export (which traces it into an ONNX graph) and the
retrieval tasks; this module adds the choice of backend, which needs the export, and keeps the names
that the retrieval code, the benchmarks and the tests import from here.
"""

from __future__ import annotations

from fastxlt.errors import ConfigError
from fastxlt.export.embeddings import OnnxSentenceEncoder
from fastxlt.inference.embed import (  # noqa: F401  - the retrieval names of the embedding
    Pooling,
    SentenceEncoder,
    TorchSentenceEncoder,
    _model_max_length,
    check_layer,
    default_layer,
    l2_normalize,
    only_first_layers,
    pool,
)
from fastxlt.retrieval.options import EMBEDDING_BACKENDS, POOLINGS  # noqa: F401

BACKENDS = EMBEDDING_BACKENDS


def load_sentence_encoder(name_or_path: str, *, backend: str = "torch", **kwargs) -> SentenceEncoder:
    """A ``SentenceEncoder`` for any encoder: ``torch`` (``TorchSentenceEncoder``) or ``onnx``
    (``fastxlt.export.OnnxSentenceEncoder``: exported once beside the model, parity-checked, run by
    ONNX Runtime; precision fp32 or int8). Keyword arguments are the backend's own."""
    if backend == "torch":
        return TorchSentenceEncoder.from_pretrained(name_or_path, **kwargs)
    if backend == "onnx":
        kwargs.pop("device", None)  # ONNX Runtime picks its provider (CUDA when present)
        return OnnxSentenceEncoder.from_pretrained(name_or_path, **kwargs)
    raise ConfigError(f"unknown embedding backend '{backend}'; choose {' or '.join(BACKENDS)}")
