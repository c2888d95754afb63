"""Sentence embeddings: layer choice, pooling, normalisation and batching against a one-sentence torch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastxlt.errors import ConfigError
from fastxlt.retrieval.embed import SentenceEncoder, TorchSentenceEncoder, check_layer, default_layer, only_first_layers
from fastxlt.synthetic.model import build_tiny_encoder
from fastxlt.synthetic.tokenizer import train_tokenizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def sentences(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 30)))) for _ in range(n)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run hundreds of small ops; on a busy 2-core machine each multi-threaded op can wait
    a whole scheduler slice at its thread barrier, so one thread is much faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tokenizer = train_tokenizer(sentences(0, 300), vocab_size=120, out_dir=tmp_path_factory.mktemp("tok"))
    model = build_tiny_encoder(tokenizer, seed=1, hidden_size=32, num_layers=6, num_heads=2, intermediate_size=64)
    return model, tokenizer


def reference_embedding(model, tokenizer, sentence: str, layer: int, pooling: str) -> np.ndarray:
    """One sentence at a time, no padding at all: the definition, free of any batching."""
    with torch.no_grad():
        encoded = tokenizer(sentence, return_tensors="pt")
        hidden = model(**encoded, output_hidden_states=True).hidden_states[layer][0]
    vector = hidden[0] if pooling == "cls" else hidden.mean(dim=0)
    return (vector / vector.norm()).numpy()


@pytest.mark.parametrize("layer,pooling", [(0, "mean"), (2, "cls"), (6, "mean")])
def test_batched_embeddings_equal_the_one_sentence_reference(tiny, layer, pooling):
    model, tokenizer = tiny
    texts = sentences(1, 15) + [""]
    encoder = TorchSentenceEncoder(model, tokenizer, layer=layer, pooling=pooling, batch_tokens=64, device="cpu")
    found = encoder.encode(texts)
    assert found.shape == (16, 32) and found.dtype == np.float32
    expected = np.stack([reference_embedding(model, tokenizer, text, layer, pooling) for text in texts])
    np.testing.assert_allclose(found, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)


def test_default_layer_is_the_paper_depth(tiny):
    model, tokenizer = tiny
    assert [default_layer(n) for n in (24, 12, 6, 4)] == [14, 7, 4, 2]
    assert TorchSentenceEncoder(model, tokenizer, device="cpu").layer == 4  # 6 layers


def test_several_layers_in_one_pass_equal_separate_runs(tiny):
    model, tokenizer = tiny
    texts = sentences(2, 15)
    together = TorchSentenceEncoder(model, tokenizer, device="cpu").encode_layers(texts, [1, -1, 4])
    assert sorted(together) == [1, 4, 6]
    for layer, vectors in together.items():
        alone = TorchSentenceEncoder(model, tokenizer, layer=layer, device="cpu").encode(texts)
        np.testing.assert_allclose(vectors, alone, atol=1e-6)


def test_repeated_calls_give_the_same_vectors(tiny):
    """Regression: hidden-state hooks must not pile up when a model is run shortened again and again."""
    model, tokenizer = tiny
    texts = sentences(5, 6)
    shallow = TorchSentenceEncoder(model, tokenizer, layer=2, device="cpu")
    first = shallow.encode(texts)
    for _ in range(3):
        TorchSentenceEncoder(model, tokenizer, layer=5, device="cpu").encode(texts)
        np.testing.assert_array_equal(shallow.encode(texts), first)
    expected = np.stack([reference_embedding(model, tokenizer, text, 2, "mean") for text in texts])
    np.testing.assert_allclose(first, expected, atol=2e-5)


def test_running_only_the_first_layers_gives_the_full_models_hidden_state(tiny):
    model, tokenizer = tiny
    encoded = tokenizer(sentences(3, 4), padding=True, return_tensors="pt")
    with torch.no_grad():
        with only_first_layers(model, 3):
            short = model(**encoded, output_hidden_states=True).hidden_states
        full = model(**encoded, output_hidden_states=True).hidden_states
    assert len(short) == 4 and len(full) == 7 and len(model.encoder.layer) == 6  # restored
    torch.testing.assert_close(short[3], full[3], rtol=0, atol=0)


def test_bf16_autocast_stays_close_to_float32(tiny):
    model, tokenizer = tiny
    texts = sentences(4, 12)
    fp32 = TorchSentenceEncoder(model, tokenizer, device="cpu").encode(texts)
    bf16 = TorchSentenceEncoder(model, tokenizer, precision="bf16", device="cpu").encode(texts)
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() > 0.99
    # and the retrieval decisions agree: each bf16 vector is nearest to its own fp32 vector
    np.testing.assert_array_equal(np.argmax(bf16 @ fp32.T, axis=1), np.arange(len(texts)))


def test_bad_settings_raise_config_errors(tiny):
    model, tokenizer = tiny
    assert check_layer(-1, 6) == 6 and check_layer(0, 6) == 0
    for layer in (7, -8):
        with pytest.raises(ConfigError, match=r"out of range for a 6-layer encoder"):
            TorchSentenceEncoder(model, tokenizer, layer=layer, device="cpu")
    with pytest.raises(ConfigError, match="unknown pooling"):
        TorchSentenceEncoder(model, tokenizer, pooling="max", device="cpu")
    with pytest.raises(ConfigError, match="unknown precision"):
        TorchSentenceEncoder(model, tokenizer, precision="int4", device="cpu")


def test_torch_encoder_satisfies_the_protocol_and_handles_no_sentences(tiny):
    model, tokenizer = tiny
    encoder = TorchSentenceEncoder(model, tokenizer, device="cpu")
    assert isinstance(encoder, SentenceEncoder) and encoder.dim == 32
    assert encoder.encode([]).shape == (0, 32)
