"""mAP@k / MRR@k (fastxlt.retrieval.map_at_k) against hand-computed values, a brute-force reference written
from the published definition, and the tie rule."""

from __future__ import annotations

import numpy as np
import pytest

from fastxlt.errors import ConfigError
from fastxlt.retrieval.map_at_k import (
    average_precision_at_k,
    average_precision_from_ranks,
    mean_average_precision_at_k,
    mean_reciprocal_rank_at_k,
    reciprocal_rank_at_k,
    retrieval_average_precision,
)


def brute_force_ap(ranked, relevant, k):
    """LAReQA / XTREME-R AP@k written from its definition: (1/min(k,|R|)) sum_{r<=k} P@r * rel(r)."""
    relevant = set(relevant)
    total = 0.0
    for r in range(1, min(k, len(ranked)) + 1):
        first_time = ranked[r - 1] not in ranked[: r - 1]
        rel = 1.0 if ranked[r - 1] in relevant and first_time else 0.0
        precision = len({item for item in ranked[:r] if item in relevant}) / r
        total += precision * rel
    return total / min(k, len(relevant))


def brute_force_ranking(scores: np.ndarray) -> list[int]:
    """Candidates by descending score, equal scores by ascending index (the documented tie rule)."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))


# ---------------------------------------------------------------------------------- hand-computed values


def test_hand_computed_average_precision():
    # relevant {a, c}; ranking a x c: P@1 = 1, P@3 = 2/3 -> (1 + 2/3) / 2
    assert average_precision_at_k(["a", "x", "c"], {"a", "c"}, k=20) == pytest.approx((1 + 2 / 3) / 2)
    # cut at k=2: only a is inside -> 1 / min(2, 2)
    assert average_precision_at_k(["a", "x", "c"], {"a", "c"}, k=2) == pytest.approx(0.5)
    # 11 relevant items (LAReQA's 11 parallel answers), all at the top of k=20: AP = 1
    assert average_precision_at_k(list(range(30)), set(range(11)), k=20) == pytest.approx(1.0)
    # 25 relevant, k=20, all in the top 20: divisor min(20, 25) = 20 -> 1
    assert average_precision_at_k(list(range(30)), set(range(25)), k=20) == pytest.approx(1.0)
    # nothing relevant in the top k
    assert average_precision_at_k(["x", "y"], {"a"}, k=20) == 0.0


def test_official_test_cases():
    # the classic AP@k cases (Kaggle's metric tests) that the official definition satisfies
    assert average_precision_at_k([6, 4, 7, 1, 2], range(1, 6), 2) == pytest.approx(0.25)
    assert average_precision_at_k([1, 1, 1, 1, 1], range(1, 6), 5) == pytest.approx(0.2)  # repeats count once
    assert average_precision_at_k(list(range(1, 21)) + list(range(200, 600)), range(1, 101), 20) == pytest.approx(1.0)
    assert average_precision_at_k(list(range(1, 6)), [1, 3], 3) == pytest.approx(5 / 6)
    assert average_precision_at_k([1, 1, 1], [1, 2, 3], 3) == pytest.approx(1 / 3)
    assert average_precision_at_k([1, 2, 1], [1, 2, 3], 3) == pytest.approx(2 / 3)


def test_reciprocal_rank_and_one_gold_equivalence():
    assert reciprocal_rank_at_k(["x", "y", "g"], {"g"}, k=20) == pytest.approx(1 / 3)
    assert reciprocal_rank_at_k(["x", "y", "g"], {"g"}, k=2) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        ranked = rng.permutation(40).tolist()
        gold = {int(rng.integers(40))}
        assert average_precision_at_k(ranked, gold, 20) == pytest.approx(reciprocal_rank_at_k(ranked, gold, 20))
    assert mean_reciprocal_rank_at_k([["g"], ["x", "g"]], [{"g"}, {"g"}]) == pytest.approx(0.75)


def test_against_brute_force_on_random_rankings():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 25))
        ranked = rng.integers(0, n, size=int(rng.integers(1, 2 * n + 1))).tolist()  # repeats allowed
        relevant = set(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False).tolist())
        assert average_precision_at_k(ranked, relevant, k) == pytest.approx(brute_force_ap(ranked, relevant, k))


def test_mean_average_precision():
    rankings = [["a", "x", "c"], ["x", "b"]]
    relevant = [{"a", "c"}, {"b"}]
    assert mean_average_precision_at_k(rankings, relevant) == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    with pytest.raises(ValueError):
        mean_average_precision_at_k([["a"]], [])


def test_from_ranks_matches_the_definition():
    # relevant at ranks 1, 3 and 25 with k=20 and 4 relevant items (one absent from the candidates)
    assert average_precision_from_ranks([25, 3, 1], num_relevant=4, k=20) == pytest.approx((1 + 2 / 3) / 4)
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        ranked = rng.permutation(n).tolist()
        relevant = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False).tolist()
        ranks = [ranked.index(g) + 1 for g in relevant]
        assert average_precision_from_ranks(ranks, len(relevant), 20) == pytest.approx(
            average_precision_at_k(ranked, relevant, 20)
        )


def test_bad_input():
    with pytest.raises(ConfigError):
        average_precision_at_k(["a"], {"a"}, k=0)
    with pytest.raises(ValueError):
        average_precision_at_k(["a"], set(), k=20)


# ---------------------------------------------------------------------------------- from embeddings


def _reference(queries, candidates, relevant, k, num_relevant=None):
    scores = queries.astype(np.float64) @ candidates.astype(np.float64).T
    values = []
    for i, gold in enumerate(relevant):
        ranked = brute_force_ranking(scores[i])
        size = len(set(gold)) if num_relevant is None else num_relevant[i]
        if size == 0:
            values.append(0.0)
            continue
        total, hits = 0.0, 0
        for r, item in enumerate(ranked[:k], start=1):
            if item in set(gold):
                hits += 1
                total += hits / r
        values.append(total / min(k, size))
    return np.array(values)


def test_embeddings_against_brute_force_with_ties():
    # small integer embeddings: exact dot products in float32 and float64, and many exact ties
    rng = np.random.default_rng(3)
    queries = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
    candidates = rng.integers(-2, 3, size=(90, 4)).astype(np.float32)
    relevant = [rng.choice(90, size=int(rng.integers(1, 12)), replace=False) for _ in range(37)]
    for k in (1, 5, 20):
        got = retrieval_average_precision(queries, candidates, relevant, k, device="cpu", block_elements=500)
        np.testing.assert_allclose(got, _reference(queries, candidates, relevant, k), rtol=0, atol=1e-12)


def test_tie_rule_lower_index_first():
    queries = np.array([[1.0, 0.0]], dtype=np.float32)
    candidates = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # 0 and 1 tie
    assert retrieval_average_precision(queries, candidates, [[1]], 20, device="cpu")[0] == pytest.approx(0.5)
    assert retrieval_average_precision(queries, candidates, [[0]], 20, device="cpu")[0] == pytest.approx(1.0)


def test_absent_gold_and_one_gold_mrr():
    queries = np.eye(3, dtype=np.float32)
    candidates = np.eye(3, dtype=np.float32)[[2, 0, 1]]  # query i's own direction sits at candidate (i + 1) % 3
    got = retrieval_average_precision(queries, candidates, [[1], [2], []], 20, num_relevant=[1, 1, 1], device="cpu")
    np.testing.assert_allclose(got, [1.0, 1.0, 0.0])  # the third query's gold is not among the candidates


def test_block_size_does_not_change_the_result():
    rng = np.random.default_rng(4)
    queries = rng.normal(size=(50, 8)).astype(np.float32)
    candidates = rng.normal(size=(70, 8)).astype(np.float32)
    relevant = [rng.choice(70, size=3, replace=False) for _ in range(50)]
    whole = retrieval_average_precision(queries, candidates, relevant, 20, device="cpu")
    blocked = retrieval_average_precision(queries, candidates, relevant, 20, device="cpu", block_elements=100)
    np.testing.assert_array_equal(whole, blocked)
