"""A tiny, randomly initialised mT5 checkpoint with a real SentencePiece vocabulary, built offline.

No mT5 weights can be downloaded on development machines, yet every mT5 code path (encoder-only loading,
mean pooling, Adafactor, ONNX export, ZeRO) has to be proven there. This module writes a directory that
looks like a hub mT5 checkpoint -- ``config.json`` (``model_type: mt5``), ``model.safetensors`` with
encoder *and* decoder weights (``MT5ForConditionalGeneration``, as ``google/mt5-base`` ships), and a
``T5Tokenizer`` that ``AutoTokenizer.from_pretrained`` loads -- only small. The tests and the CPU twin of
the research-question suites use it; its numbers mean nothing.

The tokenizer follows mT5's vocabulary layout: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, then the
SentencePiece pieces with their scores and normaliser, then 100 ``<extra_id_N>`` sentinels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastxlt.errors import DataNotFoundError
from fastxlt.utils.io import follow_umask

NORMAL_PIECE = 1  # sentencepiece_model.proto: ModelProto.SentencePiece.Type.NORMAL
USER_DEFINED_PIECE = 4


def t5_tokenizer_from_sentencepiece(model_file: str | Path):
    """A ``T5Tokenizer`` (tokenizers backend) over a SentencePiece unigram model, in mT5's id layout."""
    from sentencepiece import sentencepiece_model_pb2
    from transformers import T5Tokenizer

    path = Path(model_file)
    if not path.is_file():
        raise DataNotFoundError(f"SentencePiece model '{path}' not found; point at a .model file (e.g. ../shared/data/sentencepiece)")
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece.piece, piece.score) for piece in proto.pieces if piece.type in (NORMAL_PIECE, USER_DEFINED_PIECE)]
    charsmap = proto.normalizer_spec.precompiled_charsmap or None
    return T5Tokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap)


def build_tiny_mt5(
    sentencepiece_model: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    d_kv: int = 16,
    d_ff: int = 64,
    dropout_rate: float = 0.0,
) -> Path:
    """Write a random ``MT5ForConditionalGeneration`` and its tokenizer to ``out_dir``; returns ``out_dir``."""
    from transformers import MT5Config, MT5ForConditionalGeneration

    out = Path(out_dir)
    tokenizer = t5_tokenizer_from_sentencepiece(sentencepiece_model)
    config = MT5Config(
        vocab_size=len(tokenizer), d_model=d_model, num_layers=num_layers, num_heads=num_heads, d_kv=d_kv, d_ff=d_ff,
        dropout_rate=dropout_rate, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = MT5ForConditionalGeneration(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    follow_umask(out)  # safetensors writes 0600 whatever the umask
    return out
