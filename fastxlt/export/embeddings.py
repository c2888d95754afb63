"""``OnnxSentenceEncoder``: retrieval embeddings through an exported graph (ONNX Runtime).

The same ``SentenceEncoder`` interface and batching as ``fastxlt.retrieval.embed.TorchSentenceEncoder``
(length-sorted token-budget batches, results in input order); pooling and L2 normalisation run inside
the graph. Only the layers the graph was exported with can be asked for.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch

import fastxlt.export.manifest as manifest_io
from fastxlt.errors import CheckpointError, ConfigError
from fastxlt.export.exporter import export_onnx
from fastxlt.export.session import create_session, run_session
from fastxlt.inference.batching import pack_batches, restore_order
from fastxlt.inference.embed import _model_max_length, default_layer
from fastxlt.inference.precision import default_batch_tokens
from fastxlt.models.encoder import load_encoder_config, load_tokenizer
from fastxlt.tasks.features import pad_ids


class OnnxSentenceEncoder:
    """The ONNX Runtime backend of ``SentenceEncoder``."""

    def __init__(
        self,
        graph_dir: str | Path,
        tokenizer,
        *,
        layer: int | None = None,
        batch_tokens: int | None = None,
        max_batch_size: int = 512,
        max_length: int = 512,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        manifest = manifest_io.read_manifest(Path(graph_dir))
        if manifest is None or manifest.get("kind") != "embeddings":
            raise CheckpointError(f"'{graph_dir}' holds no exported embedding graph; export the encoder without --task")
        if batch_tokens is not None and batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be positive, got {batch_tokens}")
        self.manifest = manifest
        self.num_layers = int(manifest["num_layers"])
        self.pooling = str(manifest["pooling"])
        self.layers: list[int] = list(manifest["layers"])
        self.layer = self._check(layer if layer is not None else self.layers[0])
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_length = max_length
        self.session = create_session(Path(graph_dir) / manifest["graph"], threads=threads, providers=providers)
        on_gpu = "CUDAExecutionProvider" in self.session.get_providers()
        self.batch_tokens = batch_tokens or default_batch_tokens(torch.device("cuda" if on_gpu else "cpu"))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, layer: int | None = None, layers: Sequence[int] | None = None, pooling: str = "mean",
        precision: str = "fp32", out_dir: str | Path | None = None, **kwargs,
    ) -> OnnxSentenceEncoder:
        """Export (or reuse) the embedding graph of any encoder and load it; ``layers`` default to ``[layer]``."""
        if precision == "auto":  # the torch backend's bf16 has no ONNX Runtime counterpart here; int8 is asked for by name
            precision = "fp32"
        if precision not in ("fp32", "int8", "fp16"):
            raise ConfigError(f"precision '{precision}' is not available in ONNX Runtime; choose fp32, int8 or fp16")
        config = load_encoder_config(name_or_path)
        wanted = list(layers) if layers else [default_layer(config.num_hidden_layers) if layer is None else layer]
        if out_dir is None:
            base = Path(name_or_path) if Path(name_or_path).is_dir() else Path(".cache") / "onnx" / str(name_or_path).replace("/", "--")
            out_dir = base / "onnx" / f"embeddings-{'-'.join(map(str, wanted))}-{pooling}-{precision}"
        result = export_onnx(
            name_or_path, out_dir, layers=wanted, pooling=pooling, quantize="int8" if precision == "int8" else None,
            fp16=precision == "fp16", threads=kwargs.get("threads"),
        )
        tokenizer = load_tokenizer(name_or_path)
        if kwargs.get("max_length") is None:
            kwargs["max_length"] = _model_max_length(SimpleNamespace(config=config), tokenizer)
        return cls(result.out_dir, tokenizer, layer=layer, **kwargs)

    @property
    def dim(self) -> int:
        return int(self.manifest["hidden_size"])

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, in input order."""
        return self.encode_layers(sentences, [self.layer])[self.layer]

    def encode_layers(self, sentences: Sequence[str], layers: Sequence[int]) -> dict[int, np.ndarray]:
        wanted = sorted({self._check(layer) for layer in layers})
        if len(sentences) == 0:
            return {layer: np.zeros((0, self.dim), dtype=np.float32) for layer in wanted}
        encoded = self.tokenizer(list(sentences), truncation=True, max_length=self.max_length)["input_ids"]
        order, offsets = pack_batches([len(ids) for ids in encoded], self.batch_tokens, self.max_batch_size)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        parts: dict[int, list[np.ndarray]] = {layer: [] for layer in wanted}
        for begin, end in zip(offsets[:-1], offsets[1:]):
            input_ids, attention_mask = pad_ids([encoded[i] for i in order[begin:end]], pad_id)
            outputs = run_session(self.session, {"input_ids": input_ids, "attention_mask": attention_mask})
            for layer in wanted:
                parts[layer].append(outputs[self.layers.index(layer)])
        return {layer: restore_order(np.concatenate(chunks).astype(np.float32, copy=False), order) for layer, chunks in parts.items()}

    def _check(self, layer: int) -> int:
        if layer not in self.layers:
            raise ConfigError(
                f"the exported graph has layers {self.layers}, not {layer}; export it again with that layer"
            )
        return layer
