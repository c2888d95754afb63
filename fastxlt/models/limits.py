"""How many tokens a model can take: the usable length of its position embeddings, read from its config.

Why in ``models``: the limit is a fact of the encoder family (RoBERTa's position ids start after the padding
index; T5's relative positions have no table), and both the experiment pre-flight and ``fastxlt eval``
check a ``max_length`` against it before any weight is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig

from fastxlt.errors import CheckpointError, ConfigError
from fastxlt.models.paths import resolve_encoder_path

# Model types whose position ids start after the padding index (RoBERTa's scheme): two of XLM-R's 514
# positions are never used by a token, so its usable length is max_position_embeddings - padding_idx - 1.
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer")
# Relative position schemes: no learned table, so no length limit from the config.
RELATIVE_POSITION_TYPES = ("t5", "mt5", "umt5")


def check_max_length(max_length: int, limit: int, field: str, model: str) -> None:
    if max_length > limit:
        raise ConfigError(
            f"{field}: {max_length} exceeds the {limit} tokens that model '{model}' can take "
            f"(its position embeddings); set {field} to {limit} or less"
        )


def model_position_limit(name_or_path: str | Path, field: str = "model.name_or_path") -> int | None:
    """The longest input the model's position embeddings hold, from its ``config.json`` (None: no limit)."""
    try:
        model_config = AutoConfig.from_pretrained(resolve_encoder_path(name_or_path))
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{field}: cannot read the config of '{name_or_path}' ({reason}); "
            "pass a local Hugging Face directory or a hub name available offline"
        ) from None
    return position_limit(model_config)


def position_limit(model_config: Any) -> int | None:
    """Usable positions of a model config: XLM-R's is ``max_position_embeddings - padding_idx - 1`` (512 of 514)."""
    model_type = getattr(model_config, "model_type", "")
    positions = getattr(model_config, "max_position_embeddings", None)
    if model_type in RELATIVE_POSITION_TYPES or positions is None:
        return None
    if model_type in PADDING_OFFSET_TYPES:
        padding_idx = getattr(model_config, "pad_token_id", None)
        return int(positions) - (1 if padding_idx is None else int(padding_idx)) - 1
    return int(positions)
