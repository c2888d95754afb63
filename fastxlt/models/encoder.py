"""Loading encoders and tokenizers: a hub name, a local Hugging Face directory, or a fastxlt run.

Every phase hands the encoder alone to the next one in Hugging Face format (``save_pretrained``), so
anything this module loads can also be loaded by ``transformers`` directly, and vice versa.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from fastxlt.errors import CheckpointError
from fastxlt.models.family import dropout_overrides, encoder_class
from fastxlt.models.paths import ENCODER_DIRNAME, resolve_encoder_path  # noqa: F401  - the encoder's own names


def load_encoder(name_or_path: str | Path, *, dtype: torch.dtype | None = None, **config_overrides) -> PreTrainedModel:
    """``AutoModel.from_pretrained`` with a clear error for missing or corrupt checkpoints.

    ``config_overrides`` (e.g. ``hidden_dropout_prob=0.0``) are applied to the model config. The encoder is
    loaded in float32 unless ``dtype`` says otherwise: reduced precision is the engine's business. A T5-family
    checkpoint (``google/mt5-base``: encoder and decoder) loads its encoder alone (``MT5EncoderModel``,
    ``fastxlt.models.family``); the dropout overrides are mapped to T5's single ``dropout_rate``.
    """
    resolved = resolve_encoder_path(name_or_path)
    try:
        model_type = AutoConfig.from_pretrained(resolved).model_type
        loader = encoder_class(model_type) or AutoModel
        overrides = dropout_overrides(model_type, config_overrides)
        model = loader.from_pretrained(resolved, dtype=dtype or torch.float32, **overrides)
    except SafetensorError as error:  # a truncated or damaged model.safetensors (e.g. an interrupted copy)
        raise CheckpointError(
            f"cannot load encoder from '{resolved}': its safetensors weights are damaged ({_first_line(error)}); "
            "copy or download the model again, or re-run the phase that wrote it"
        ) from None
    except (OSError, ValueError, json.JSONDecodeError, RuntimeError) as error:
        raise CheckpointError(f"cannot load encoder from '{resolved}': {_first_line(error)}") from error
    return model


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    resolved = resolve_encoder_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot load tokenizer from '{resolved}': {first_line}") from error


def encoder_signature(config_or_model) -> dict:
    """What identifies an encoder architecture; used to refuse a checkpoint of the wrong model."""
    config = getattr(config_or_model, "config", config_or_model)
    return {
        "model_type": getattr(config, "model_type", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "vocab_size": getattr(config, "vocab_size", None),
    }


def load_encoder_config(name_or_path: str | Path):
    return AutoConfig.from_pretrained(resolve_encoder_path(name_or_path))
