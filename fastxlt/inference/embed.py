"""Sentence embeddings for retrieval: one hidden layer, pooled over tokens, L2-normalised.

The XTREME protocol (Hu et al., 2020) embeds a sentence with the hidden state of an intermediate
layer (layer 14 of the 24 of XLM-R Large; index 0 is the embedding output), averaged over the
non-padding tokens; cosine similarity is then an inner product of unit vectors. Other encoder depths
get the same relative depth: ``round(14 / 24 * num_layers)``.

``SentenceEncoder`` is the interface the rest of ``fastxlt.retrieval`` uses, so an ONNX Runtime
backend (``fastxlt.export``) can plug in by providing ``dim`` and ``encode``. This module sits in
``fastxlt.inference`` (layer 5) because both of them build on it: the export traces its pooling, the
retrieval tasks embed with it; ``fastxlt.retrieval.embed.load_sentence_encoder`` picks the backend. ``TorchSentenceEncoder``
is the torch backend:

* length-sorted batches cut to a token budget (``fastxlt.inference.batching.pack_batches``), so
  almost no compute is spent on padding;
* only the layers up to the chosen one run when the model keeps its layers in ``encoder.layer``
  (BERT, XLM-R): the layers above cannot change the chosen hidden state;
* optional bfloat16 autocast (``precision="bf16"``), checked against float32 in the tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastxlt.errors import ConfigError
from fastxlt.inference.batching import pack_batches, restore_order
from fastxlt.inference.precision import default_batch_tokens, resolve_eval_precision
from fastxlt.models.encoder import load_encoder, load_tokenizer
from fastxlt.models.family import check_pooling
from fastxlt.inference.options import POOLINGS, RETRIEVAL_MAX_LENGTH
from fastxlt.utils.hardware import default_device

Pooling = Literal["mean", "cls"]


@runtime_checkable
class SentenceEncoder(Protocol):
    """Turns sentences into L2-normalised float32 vectors, one row per sentence, in input order."""

    @property
    def dim(self) -> int: ...

    def encode(self, sentences: Sequence[str]) -> np.ndarray: ...


def default_layer(num_layers: int) -> int:
    """The XTREME layer (14 of 24) at the same relative depth: 7 of 12, 14 of 24, 4 of 6."""
    return round(14 / 24 * num_layers)


def check_layer(layer: int, num_layers: int) -> int:
    """Validate a hidden-state index (0 = embeddings, num_layers = last; -1 also means last)."""
    resolved = num_layers + 1 + layer if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ConfigError(
            f"layer {layer} is out of range for a {num_layers}-layer encoder; "
            f"choose 0 (embeddings) to {num_layers} (last), or -1 for the last layer"
        )
    return resolved


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Mean over non-padding tokens, or the first token (CLS / <s>); float32 out."""
    hidden = hidden.float()
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, p=2.0, dim=-1)


class TorchSentenceEncoder:
    """The torch backend of ``SentenceEncoder`` for any Hugging Face encoder."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        layer: int | None = None,
        pooling: Pooling = "mean",
        batch_tokens: int | None = None,
        max_batch_size: int = 512,
        max_length: int | None = None,
        precision: str = "fp32",
        device: str | torch.device | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling '{pooling}'; choose {' or '.join(POOLINGS)}")
        check_pooling(getattr(model.config, "model_type", None), pooling, field="--pooling")  # mT5 has no CLS token
        if batch_tokens is not None and batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be positive, got {batch_tokens}")
        self.device = torch.device(device) if device is not None else default_device()
        precision = resolve_eval_precision(precision, self.device)
        batch_tokens = batch_tokens or default_batch_tokens(self.device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.num_layers = int(model.config.num_hidden_layers)
        self.layer = check_layer(default_layer(self.num_layers) if layer is None else layer, self.num_layers)
        self.pooling = pooling
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.max_length = max_length or _model_max_length(model, tokenizer)
        self.precision = precision

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> TorchSentenceEncoder:
        """Load a hub name, a Hugging Face directory or a fastxlt run (``fastxlt.models.encoder``)."""
        return cls(load_encoder(name_or_path), load_tokenizer(name_or_path), **kwargs)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, in input order."""
        return self.encode_layers(sentences, [self.layer])[self.layer]

    def encode_pairs(self, first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        """(n, dim) embeddings of text pairs encoded as one sequence (``<s> A </s></s> B </s>`` for XLM-R):
        a LAReQA answer candidate is its sentence paired with its paragraph. ``longest_first`` truncation
        shortens the longer text (the paragraph) first. No token type ids are passed (XLM-R and mT5 have none)."""
        if len(first) != len(second):
            raise ConfigError(f"encode_pairs needs as many second texts as first texts ({len(first)} != {len(second)})")
        if len(first) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoded = self.tokenizer(list(first), list(second), truncation="longest_first", max_length=self.max_length)
        return self._embed_ids(encoded["input_ids"], [self.layer])[self.layer]

    def encode_layers(self, sentences: Sequence[str], layers: Sequence[int]) -> dict[int, np.ndarray]:
        """Embeddings from several hidden layers in one forward pass (e.g. the paper's layer and the last)."""
        layers = sorted({check_layer(layer, self.num_layers) for layer in layers})
        if len(sentences) == 0:
            return {layer: np.zeros((0, self.dim), dtype=np.float32) for layer in layers}
        encoded = self.tokenizer(list(sentences), truncation=True, max_length=self.max_length)["input_ids"]
        return self._embed_ids(encoded, layers)

    def _embed_ids(self, encoded: list[list[int]], layers: list[int]) -> dict[int, np.ndarray]:
        """Pooled, L2-normalised embeddings of tokenised inputs at the (checked) ``layers``, in input order."""
        order, offsets = pack_batches([len(ids) for ids in encoded], self.batch_tokens, self.max_batch_size)
        outputs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        with torch.inference_mode(), self._autocast(), only_first_layers(self.model, max(1, *layers)):
            for begin, end in zip(offsets[:-1], offsets[1:]):
                input_ids, attention_mask = self._pad([encoded[i] for i in order[begin:end]])
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
                for layer in layers:
                    pooled = pool(hidden.hidden_states[layer], attention_mask, self.pooling)
                    outputs[layer].append(l2_normalize(pooled).cpu())
        return {layer: restore_order(torch.cat(parts).numpy(), order) for layer, parts in outputs.items()}

    def _pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad one batch of token ids to its longest row."""
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        longest = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


@contextlib.contextmanager
def only_first_layers(model: PreTrainedModel, top_layer: int) -> Iterator[None]:
    """Within the block, ``model`` runs only its first ``top_layer`` layers (same weights, same hooks).

    Works for models that keep their layers in ``model.encoder.layer`` (BERT, XLM-R and relatives,
    whose hidden state i is the output of layer i with no final norm after the stack); any other
    model runs in full. The layer list is swapped on the model itself and restored on exit, rather
    than on a copy, because transformers installs its hidden-state hooks once per model object.
    Keep at least one layer: the embedding output (hidden state 0) is recorded as the first layer's input.
    """
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or top_layer >= len(layers):
        yield
        return
    _install_hidden_state_hooks(model)  # on every layer, before any is hidden
    encoder.layer = nn.ModuleList(list(layers)[:top_layer])
    try:
        yield
    finally:
        encoder.layer = layers


def _install_hidden_state_hooks(model: PreTrainedModel) -> None:
    """transformers >= 5 records hidden states with hooks installed lazily, once, on the layers present
    at the first forward pass; install them while all layers are there. (Older versions collect
    hidden states in the encoder's loop and need nothing.)"""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:
        return
    maybe_install_capturing_hooks(model)


def _model_max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """``RETRIEVAL_MAX_LENGTH``, or less where the position embeddings (XLM-R keeps two positions for
    padding) or the tokenizer allow less: the length every retrieval entry point uses by default."""
    limit = getattr(model.config, "max_position_embeddings", RETRIEVAL_MAX_LENGTH)
    if getattr(model.config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        limit -= 2
    tokenizer_limit = getattr(tokenizer, "model_max_length", limit) or limit
    return int(min(limit, tokenizer_limit, RETRIEVAL_MAX_LENGTH))
