"""Real model, real data (slow): multilingual-e5-small on the 36 XTREME Tatoeba languages.

Run with ``pytest -m slow tests/test_retrieval_real.py``. Builds the encoder once into
``.cache/me5-small`` with ``../shared/tools/me5-small/build.sh`` (about 15 s) and skips when the
shared data or the build tool is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastxlt.retrieval.embed import TorchSentenceEncoder, default_layer
from fastxlt.retrieval.languages import TATOEBA_DEFAULT
from fastxlt.retrieval.tatoeba import locate_tatoeba, read_tatoeba, tatoeba_accuracy

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TATOEBA = SHARED / "data" / "tatoeba"
BUILD = SHARED / "tools" / "me5-small" / "build.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (TATOEBA.is_dir() and BUILD.is_file()), reason="shared Tatoeba data or me5-small build tool absent"
    ),
]


@pytest.fixture(scope="module")
def encoder(me5_small) -> TorchSentenceEncoder:
    return TorchSentenceEncoder.from_pretrained(str(me5_small))


def test_me5_small_on_the_36_xtreme_tatoeba_languages(encoder):
    layers = [default_layer(encoder.num_layers), encoder.num_layers]  # the paper's depth (7 of 12) and the last
    accuracy: dict[int, dict[str, float]] = {layer: {} for layer in layers}
    for code in TATOEBA_DEFAULT:
        pair = read_tatoeba(locate_tatoeba(code, TATOEBA))
        source, english = encoder.encode_layers(pair.source, layers), encoder.encode_layers(pair.english, layers)
        for layer in layers:
            accuracy[layer][pair.language] = tatoeba_accuracy(source[layer], english[layer], pair.gold)
    for layer in layers:
        print(
            f"layer {layer}: mean {np.mean(list(accuracy[layer].values())):.2f} "
            + " ".join(f"{k}={v:.1f}" for k, v in accuracy[layer].items())
        )
    assert len(accuracy[layers[0]]) == 36
    # Measured (fastxlt, this machine): mean 75.1 at layer 7 and 87.0 at layer 12, de 95.3 / 98.5.
    # me5-small is a trained sentence encoder: its last layer is its best, far above chance (0.1-1%).
    paper_mean = float(np.mean(list(accuracy[layers[0]].values())))
    last_mean = float(np.mean(list(accuracy[encoder.num_layers].values())))
    assert last_mean > 80.0 and paper_mean > 65.0 and last_mean > paper_mean
    assert min(accuracy[encoder.num_layers][lang] for lang in ("de", "fr", "es", "ru", "zh")) > 85.0
