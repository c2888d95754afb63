"""Truncated copies of a pretrained encoder: the first N transformer layers, every weight kept.

Only one pretrained multilingual encoder can be built offline here (multilingual-e5-small, 12 layers), so a
model-size axis (research question 4) is built by depth: the first 4, 8 or 12 layers of the same pretrained
network. It is a proxy for size that keeps pretrained weights, not a smaller model trained from scratch: the
truncated encoder's output is the full encoder's hidden state after layer N (no final norm in BERT / XLM-R), and
it was never trained to be used there. The truncated directory is an ordinary Hugging Face model, with a
``truncation.json`` that says what it was cut from, so that grids key it by its own files.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastxlt.errors import ConfigError
from fastxlt.models.encoder import load_encoder, load_encoder_config, load_tokenizer
from fastxlt.utils.io import follow_umask

PROVENANCE_FILENAME = "truncation.json"


def _layer_list(model):
    """The module list of transformer layers of a BERT / XLM-R encoder (``encoder.layer``)."""
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise ConfigError(
            f"cannot truncate a {type(model).__name__}: only BERT / XLM-R-style encoders (encoder.layer) are supported"
        )
    return encoder, layers


def truncate_encoder(source: str | Path, out_dir: str | Path, num_layers: int) -> Path:
    """Write the first ``num_layers`` layers of ``source`` (with its embeddings and tokenizer) to ``out_dir``."""
    total = getattr(load_encoder_config(str(source)), "num_hidden_layers", None)  # refuse before loading weights
    if total is not None and not 1 <= num_layers <= total:
        raise ConfigError(f"--layers {num_layers}: '{source}' has {total} layers; keep between 1 and {total}")
    model = load_encoder(str(source))
    encoder, layers = _layer_list(model)
    encoder.layer = layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    load_tokenizer(str(source)).save_pretrained(out)
    record = {"source": str(source), "kept_layers": num_layers, "source_layers": len(layers)}
    (out / PROVENANCE_FILENAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    follow_umask(out)  # safetensors writes 0600 whatever the umask
    return out
