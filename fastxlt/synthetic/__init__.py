"""The embedded default: a small multilingual world generated on the fly.

``world`` draws meanings from a shared semantic core (``semantics``) and says them in English and five
synthetic languages (``languages``); ``tasks`` registers the tasks built from it (``synth-nli``, the
intermediate task; ``synth-para``, the target task; ``synth-mlm``, raw multilingual text);
``tokenizer`` and ``model`` build an XLM-R-style tokenizer and a tiny XLM-R from scratch. Together they
let ``fastxlt run`` exercise the whole recipe (MLM -> intermediate -> target -> zero-shot) in minutes
on a laptop, with no download.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fastxlt.utils.io import follow_umask

DEFAULT_VOCAB_SIZE = 768
TOKENIZER_CORPUS_PER_LANGUAGE = 1500  # documents of 1-3 sentences


def build_default_assets(out_dir: str | Path, seed: int = 0, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Write a tokenizer trained on the default world's text and a freshly initialised tiny encoder.

    ``out_dir`` becomes a Hugging Face directory that ``AutoTokenizer`` / ``AutoModel.from_pretrained``
    load. The tokenizer is trained on the MLM training text of the default world (so it matches the
    ``synth-*`` tasks); ``seed`` sets the encoder's initial weights. Nothing is redone when both are there.
    """
    from fastxlt.synthetic.model import build_tiny_encoder
    from fastxlt.synthetic.tokenizer import train_tokenizer
    from fastxlt.synthetic.world import LANGUAGES, get_world

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "tokenizer.json").is_file():
        return out_dir
    world = get_world()
    texts = [text for code in LANGUAGES for text in world.mlm_texts(code, "train", TOKENIZER_CORPUS_PER_LANGUAGE)]
    # Build beside the target and rename: other ranks wait for config.json and must find every file.
    staging = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = train_tokenizer(texts, vocab_size, staging)
    build_tiny_encoder(tokenizer, seed, staging)
    follow_umask(staging)  # the tokenizer files too: group members load the model
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir
