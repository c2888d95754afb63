"""The tiny XLM-R used by the embedded default: XLM-R's architecture at a size two CPU cores can train.

Same model class, embeddings layout (padding id 1, positions offset by the padding id), pooler and
saved format as ``xlm-roberta-base``, so every code path of fastxlt (loading, heads, hand-off between
phases, export) runs on it unchanged; only the sizes differ.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, XLMRobertaConfig, XLMRobertaModel

from fastxlt.utils.io import follow_umask

# XLM-R numbers positions from padding_idx + 1, so a model for max_length tokens needs max_length + 2 positions.
_POSITION_OFFSET = 2
SYNTHETIC_MAX_LENGTH = 128  # the longest input of the embedded default's model (preflight checks configs against it)


def tiny_xlmr_config(
    vocab_size: int,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 256,
    max_length: int = SYNTHETIC_MAX_LENGTH,
    dropout: float = 0.1,
) -> XLMRobertaConfig:
    """An ``XLMRobertaConfig`` with XLM-R's special ids and ``max_length + 2`` positions."""
    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length + _POSITION_OFFSET,
        type_vocab_size=1,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
    )


def build_tiny_encoder(
    tokenizer: PreTrainedTokenizerBase, seed: int, out_dir: str | Path | None = None, **config_overrides
) -> XLMRobertaModel:
    """A randomly initialised tiny ``XLMRobertaModel`` sized to ``tokenizer``; the same seed gives the same weights.

    The global torch RNG is left as it was, so building a model does not shift anyone else's randomness.
    Saved with ``save_pretrained`` when ``out_dir`` is given.
    """
    config = tiny_xlmr_config(len(tokenizer), **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = XLMRobertaModel(config)
    model.eval()
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
        follow_umask(out_dir)  # safetensors writes 0600 whatever the umask
    return model
