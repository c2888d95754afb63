"""ONNX export and the ONNX Runtime evaluation backend.

* ``export_onnx``: a phase model (encoder + task head) or any encoder (retrieval embeddings) to an
  ONNX graph with dynamic axes, optional ONNX Runtime optimisation, int8 (CPU) or fp16 (CUDA), a parity
  check against PyTorch that refuses unfaithful graphs, and a manifest that lets a graph be reused.
* ``OnnxModel``: exported head graphs behind ``TransferModel``'s evaluation contract.
* ``OnnxSentenceEncoder``: retrieval embeddings through an exported graph.
"""

from fastxlt.export.embeddings import OnnxSentenceEncoder
from fastxlt.export.exporter import PRECISIONS, ExportResult, export_onnx, load_parity_features, precision_name
from fastxlt.export.parity import TOLERANCES, ParityError
from fastxlt.export.runtime import OnnxModel

__all__ = [
    "ExportResult", "OnnxModel", "OnnxSentenceEncoder", "ParityError", "PRECISIONS", "TOLERANCES",
    "export_onnx", "load_parity_features", "precision_name",
]
