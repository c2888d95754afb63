"""A small XLM-R-style tokenizer trained locally on the synthetic text.

It follows XLM-R's conventions so everything downstream treats it like the real one: "▁"-prefixed
subword pieces, ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3, ``<mask>`` last, pairs built as
``<s> A </s></s> B </s>``, no token type ids. It is saved with ``save_pretrained`` so
``AutoTokenizer.from_pretrained(out_dir)`` loads it.

Why BPE and not XLM-R's Unigram: the synthetic world has under two thousand word types, and on so
small a type inventory both Unigram trainers (``tokenizers`` and SentencePiece) stop early and split
even the most frequent names into letters ("▁Ma r c o"). BPE merges frequent words whole and
leaves rarer inflected forms as stem + affix pieces, which is what a real multilingual vocabulary
looks like at this scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>")
MASK_TOKEN = "<mask>"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: str | Path, model_max_length: int = 128
) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer of at most ``vocab_size`` ids (specials and ``<mask>`` included) and save it.

    Deterministic for a given corpus (the tests train twice and compare). The vocabulary is smaller
    than ``vocab_size`` when the corpus runs out of merges.
    """
    backend = _train_bpe(texts, vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token=MASK_TOKEN,
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=model_max_length,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def _train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """The bare ``tokenizers`` object: whitespace + "▁" pre-tokenisation, BPE, XLM-R's pair template."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # the last id is kept for <mask>
        special_tokens=list(SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(MASK_TOKEN, lstrip=True, special=True)])
    bos, eos = SPECIAL_TOKENS[0], SPECIAL_TOKENS[2]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, 0), (eos, 2)],
    )
    return tokenizer
