"""The torch modules that become ONNX graphs, and the shapes they are traced with.

Two kinds of graph are exported:

* ``HeadGraph``: a fastxlt phase model (encoder + one task head) as ``(input_ids, attention_mask
  [, token_type_ids]) -> logits``; every family plugs in unchanged because the graph simply calls
  ``TransferModel.forward``. A head that returns several tensors (e.g. start and end logits) gives
  one graph output per tensor (``logits_0``, ``logits_1``, ...).
* ``EmbeddingGraph``: any Hugging Face encoder as ``(input_ids, attention_mask) -> one pooled,
  L2-normalised sentence embedding per requested hidden layer`` (the retrieval protocol of
  ``fastxlt.retrieval.embed``), so pooling runs inside ONNX Runtime too.

Axes are dynamic: batch and sequence for 2-D inputs, batch, choices and sequence for the 3-D inputs
of multiple choice. The example batch a graph is traced with must have at least 2 rows, 2 choices
and 2 tokens: ``torch.export`` specialises a dimension of size 1 to a constant.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fastxlt.inference.embed import l2_normalize, only_first_layers, pool

# Graph inputs in the order the exported graph takes them; a batch may omit token_type_ids.
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


class HeadGraph(nn.Module):
    """One task head of a ``TransferModel`` on top of its encoder, with tensor-only inputs and outputs."""

    def __init__(self, model: nn.Module, head: str) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        _, logits = self.model(head=self.head, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return logits


class EmbeddingGraph(nn.Module):
    """Pooled, L2-normalised sentence embeddings of chosen hidden layers (0 = the embedding output)."""

    def __init__(self, encoder: nn.Module, layers: Sequence[int], pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.layers = list(layers)
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # only_first_layers drops the layers above the top requested one from the traced graph.
        with only_first_layers(self.encoder, max(1, *self.layers)):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return tuple(l2_normalize(pool(hidden.hidden_states[layer], attention_mask, self.pooling)) for layer in self.layers)


def graph_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model inputs of a collated batch, in graph order (labels and other keys dropped)."""
    return {name: batch[name] for name in INPUT_ORDER if name in batch}


def dynamic_shapes(inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, torch.export.Dim]]:
    """Named dynamic axes shared by every input: (batch, sequence) or (batch, choices, sequence)."""
    batch, choices, sequence = torch.export.Dim("batch"), torch.export.Dim("choices"), torch.export.Dim("sequence")
    shapes = {}
    for name, tensor in inputs.items():
        if tensor.dim() == 2:
            shapes[name] = {0: batch, 1: sequence}
        elif tensor.dim() == 3:
            shapes[name] = {0: batch, 1: choices, 2: sequence}
        else:
            raise ValueError(f"input '{name}' has {tensor.dim()} dimensions; graphs take 2-D or 3-D (multiple choice) ids")
    return shapes


def dynamic_axes(inputs: dict[str, torch.Tensor], output_names: Sequence[str]) -> dict[str, dict[int, str]]:
    """The same axes for the TorchScript exporter, which names them instead of using ``Dim`` objects."""
    axes: dict[str, dict[int, str]] = {}
    for name, tensor in inputs.items():
        axes[name] = {0: "batch", 1: "sequence"} if tensor.dim() == 2 else {0: "batch", 1: "choices", 2: "sequence"}
    for name in output_names:
        axes[name] = {0: "batch"}
    return axes


def as_tuple(outputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def output_names(outputs: torch.Tensor | Sequence[torch.Tensor], prefix: str = "logits") -> list[str]:
    """``logits`` for one output tensor, ``logits_0``, ``logits_1``, ... for several."""
    if isinstance(outputs, torch.Tensor):
        return [prefix]
    return [f"{prefix}_{i}" for i in range(len(outputs))]
