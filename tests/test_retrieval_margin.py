"""Margin scoring and "max" mining against straightforward per-pair reference implementations."""

from __future__ import annotations

import numpy as np
import pytest

from fastxlt.errors import ConfigError
from fastxlt.retrieval.margin import apply_margin, best_candidates, mine, one_to_one, score_neighbours
from fastxlt.retrieval.search import knn_both


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def brute_knn(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ database.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def reference_margin(a: float, b: float, margin: str) -> float:
    return {"ratio": a / b, "distance": a - b, "absolute": a}[margin]


def reference_mining(x: np.ndarray, y: np.ndarray, k: int, margin: str) -> dict[tuple[int, int], float]:
    """The BUCC scripts' recipe, one pair at a time: kNN both ways, margin per candidate from a
    recomputed dot product, best candidate per sentence, then the merged list visited best first
    with each sentence used once."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    fwd_sim, fwd_ind = brute_knn(x, y, k)
    bwd_sim, bwd_ind = brute_knn(y, x, k)
    fwd_mean, bwd_mean = fwd_sim.mean(axis=1), bwd_sim.mean(axis=1)
    candidates = []
    for i in range(len(x)):
        scores = [reference_margin(x64[i] @ y64[j], (fwd_mean[i] + bwd_mean[j]) / 2, margin) for j in fwd_ind[i]]
        candidates.append((max(scores), i, int(fwd_ind[i][int(np.argmax(scores))])))
    for j in range(len(y)):
        scores = [reference_margin(y64[j] @ x64[i], (bwd_mean[j] + fwd_mean[i]) / 2, margin) for i in bwd_ind[j]]
        candidates.append((max(scores), int(bwd_ind[j][int(np.argmax(scores))]), j))
    mined, used_x, used_y = {}, set(), set()
    for score, i, j in sorted(candidates, key=lambda item: -item[0]):
        if i not in used_x and j not in used_y:
            used_x.add(i)
            used_y.add(j)
            mined[(i, j)] = score
    return mined


def planted_corpus(seed: int, n_x: int, n_y: int, n_planted: int, dim: int = 32, noise: float = 0.35):
    """Random sentences plus ``n_planted`` translation pairs (noisy copies) at random positions."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_x, dim))
    y = rng.standard_normal((n_y, dim))
    src, trg = rng.permutation(n_x)[:n_planted], rng.permutation(n_y)[:n_planted]
    y[trg] = x[src] + noise * rng.standard_normal((n_planted, dim))
    return unit(x), unit(y), set(zip(src.tolist(), trg.tolist()))


@pytest.mark.parametrize("margin", ["ratio", "distance", "absolute"])
def test_neighbour_margins_equal_a_per_pair_reference(margin):
    x, y, _ = planted_corpus(0, 120, 150, 40)
    knn = knn_both(x, y, 4, block_rows=64, block_cols=64, device="cpu")
    fwd_mean, bwd_mean = knn.forward.mean_score(), knn.backward.mean_score()
    found = score_neighbours(knn.forward, fwd_mean, bwd_mean, margin)
    fwd_sim, fwd_ind = brute_knn(x, y, 4)
    bwd_sim, _ = brute_knn(y, x, 4)
    for i in range(len(x)):
        for r, j in enumerate(fwd_ind[i]):
            expected = reference_margin(
                float(x[i].astype(np.float64) @ y[j]), (fwd_sim[i].mean() + bwd_sim[j].mean()) / 2, margin
            )
            assert found[i, r] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("margin", ["ratio", "distance"])
def test_max_mining_equals_the_reference_pipeline(margin):
    x, y, _ = planted_corpus(1, 300, 260, 120)
    knn = knn_both(x, y, 4, block_rows=128, block_cols=64, device="cpu")
    mined = mine(knn, margin=margin, retrieval="max")
    expected = reference_mining(x, y, 4, margin)
    found = dict(zip(zip(mined.source.tolist(), mined.target.tolist()), mined.score.tolist()))
    assert found.keys() == expected.keys()
    for pair, score in expected.items():
        assert found[pair] == pytest.approx(score, abs=1e-5)
    assert np.all(np.diff(mined.score) <= 0)  # best first


def test_planted_pairs_are_recovered_and_ranked_first():
    x, y, planted = planted_corpus(2, 500, 600, 150)
    mined = mine(knn_both(x, y, 4, device="cpu"), margin="ratio", retrieval="max")
    top = set(zip(mined.source[: len(planted)].tolist(), mined.target[: len(planted)].tolist()))
    assert top == planted


def test_max_retrieval_uses_every_sentence_at_most_once():
    x, y, _ = planted_corpus(3, 200, 90, 30)  # more x than y: many x compete for the same y
    mined = mine(knn_both(x, y, 4, device="cpu"), retrieval="max")
    assert len(set(mined.source.tolist())) == len(mined)
    assert len(set(mined.target.tolist())) == len(mined)


def test_forward_backward_and_intersect_retrieval():
    x, y, _ = planted_corpus(4, 80, 70, 30)
    knn = knn_both(x, y, 4, device="cpu")
    fwd_best, fwd_score, bwd_best, bwd_score = best_candidates(knn)
    fwd = mine(knn, retrieval="fwd")
    assert sorted(zip(fwd.source.tolist(), fwd.target.tolist())) == [(i, int(fwd_best[i])) for i in range(80)]
    bwd = mine(knn, retrieval="bwd")
    assert sorted(zip(bwd.target.tolist(), bwd.source.tolist())) == [(j, int(bwd_best[j])) for j in range(70)]
    mutual = mine(knn, retrieval="intersect")
    expected = {(int(bwd_best[j]), j) for j in range(70) if fwd_best[bwd_best[j]] == j}
    assert set(zip(mutual.source.tolist(), mutual.target.tolist())) == expected


def test_one_to_one_keeps_the_best_pair_per_sentence():
    source = np.array([0, 0, 1, 2, 2])
    target = np.array([5, 6, 5, 7, 6])
    score = np.array([0.9, 0.8, 0.95, 0.5, 0.7])
    kept = one_to_one(source, target, score)
    # visit order: (1,5) .95 keep, (0,5) .9 target used, (0,6) .8 keep, (2,6) .7 used, (2,7) .5 keep
    assert list(zip(kept.source.tolist(), kept.target.tolist())) == [(1, 5), (0, 6), (2, 7)]
    np.testing.assert_allclose(kept.score, [0.95, 0.8, 0.5])


def test_unknown_margin_or_retrieval_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown margin"):
        apply_margin(np.ones(2), np.ones(2), np.ones(2), "softmax")
    x, y, _ = planted_corpus(5, 10, 10, 5)
    with pytest.raises(ConfigError, match="unknown retrieval"):
        mine(knn_both(x, y, 2, device="cpu"), retrieval="union")
