"""Encoder families: what differs between an XLM-R-like encoder and the (m)T5 encoder, in one place.

fastxlt trains two families of multilingual encoders. Most of the code is family-blind (a Hugging Face
encoder returns ``last_hidden_state`` and ``hidden_states`` either way); the differences are few and
are decided here, from the model's ``model_type``:

- **loading**: ``AutoModel`` maps an mT5 checkpoint to ``MT5Model`` (encoder *and* decoder); fastxlt
  only needs the encoder, so the T5 family loads through ``MT5EncoderModel`` (``T5EncoderModel``,
  ``UMT5EncoderModel``), which never materialises the decoder weights of a full checkpoint;
- **pooling**: T5 has no ``<s>``/CLS token (the first token is the first subword of the text), so
  sequence-level heads average the tokens (``mean``) and ``cls`` is refused;
- **precision**: T5 activations overflow float16 (the known mT5 fp16 NaN problem), so fp16 is refused;
  bf16 and fp32 work;
- **dropout**: T5 has one ``dropout_rate`` where BERT-style configs have ``hidden_dropout_prob`` and
  ``attention_probs_dropout_prob``;
- **masked LM**: the T5 vocabulary has no mask token and T5 was pre-trained with span corruption, so
  the BERT-style MLM phase is refused.

The family is known before any weight is loaded: a local directory's ``config.json`` says it, a hub
name's cached config says it, and otherwise the hub name does (``google/mt5-base``, ``google/umt5-xl``,
``t5-base``), so config files fail at load time rather than at the first training step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastxlt.errors import CheckpointError, ConfigError
from fastxlt.models.paths import resolve_encoder_path

T5_MODEL_TYPES = ("t5", "mt5", "umt5")
_T5_NAME = re.compile(r"(?:^|[/_.-])(umt5|mt5|(?:flan-|by)?t5)(?:[/_.-]|$)", re.IGNORECASE)
FP16_REASON = "T5-family activations overflow float16 (mT5 produces inf/NaN in fp16); use bf16 or fp32"


def model_type_of(name_or_path: str | Path) -> str | None:
    """The ``model_type`` of a local model / fastxlt run, a cached hub model, or a guess from a hub name.

    None when nothing says (the embedded ``synthetic`` model, a hub name that is neither cached nor
    recognisable): callers then treat the model as XLM-R-like, as before the T5 family existed.
    """
    text = str(name_or_path)
    if text == "synthetic":
        return "xlm-roberta"
    from_disk = _model_type_on_disk(text)
    if from_disk is not None:
        return from_disk
    if Path(text).exists() or text.startswith((".", "/")):
        return None
    cached = _model_type_in_hub_cache(text)
    if cached is not None:
        return cached
    match = _T5_NAME.search(text)
    if match is None:
        return None
    name = match.group(1).lower()
    return name if name in ("mt5", "umt5") else "t5"


def is_t5_family(model_type: str | None) -> bool:
    return model_type in T5_MODEL_TYPES


def default_pooling(model_type: str | None) -> str:
    """What sequence-level heads read: the first token (``<s>``, XLM-R's reference) or the token mean (T5)."""
    return "mean" if is_t5_family(model_type) else "cls"


def check_pooling(model_type: str | None, pooling: str, field: str = "model.pooling") -> None:
    """Refuse ``cls`` pooling for a T5 encoder: it has no summary token to read."""
    if pooling == "cls" and is_t5_family(model_type):
        raise ConfigError(
            f"{field}: cls reads the first token, but {model_type} has no CLS/<s> token (its first token is the "
            "first word piece); use mean"
        )


def check_precision(model_type: str | None, precision: str, field: str = "deepspeed.precision") -> None:
    """Refuse float16 for a T5 encoder (bf16 and fp32 are fine)."""
    if precision == "fp16" and is_t5_family(model_type):
        raise ConfigError(f"{field}: fp16 is refused for {model_type}: {FP16_REASON}")


def check_masked_lm(model_type: str | None, field: str = "phases.mlm") -> None:
    """Refuse the BERT-style masked-LM phase for a T5 encoder."""
    if is_t5_family(model_type):
        raise ConfigError(
            f"{field}: {model_type} has no mask token and was pre-trained with span corruption, not BERT-style "
            "masked LM; drop the mlm phase"
        )


def encoder_class(model_type: str | None):
    """The encoder-only class of a T5-family model type, or None (the family loads with ``AutoModel``)."""
    if model_type == "mt5":
        from transformers import MT5EncoderModel

        return MT5EncoderModel
    if model_type == "umt5":
        from transformers import UMT5EncoderModel

        return UMT5EncoderModel
    if model_type == "t5":
        from transformers import T5EncoderModel

        return T5EncoderModel
    return None


def dropout_overrides(model_type: str | None, overrides: dict) -> dict:
    """Translate BERT-style dropout overrides to the family's config fields (T5: one ``dropout_rate``)."""
    if not is_t5_family(model_type):
        return dict(overrides)
    translated = {k: v for k, v in overrides.items() if k not in ("hidden_dropout_prob", "attention_probs_dropout_prob")}
    rates = [overrides[k] for k in ("hidden_dropout_prob", "attention_probs_dropout_prob") if k in overrides]
    if rates:
        translated["dropout_rate"] = rates[0]
    return translated


def _model_type_on_disk(name_or_path: str) -> str | None:
    if not Path(name_or_path).exists():
        return None
    try:
        config_path = Path(resolve_encoder_path(name_or_path)) / "config.json"
        return json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (CheckpointError, OSError, ValueError):
        return None  # the loader reports a missing or broken model with its own one-line error


def _model_type_in_hub_cache(name: str) -> str | None:
    """The cached config of a hub model, without touching the network."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id or no cache: not known from the cache
        return None
    if not isinstance(path, str):
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None
