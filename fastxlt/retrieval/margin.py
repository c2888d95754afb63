"""Margin scoring and bitext mining (Artetxe & Schwenk, 2019), vectorised.

A raw cosine favours "hub" sentences that are close to everything. The margin divides (or
subtracts) the average similarity of both sentences to their k nearest neighbours on the other side:

    margin(x, y) = cos(x, y) / ((mean_{z in NN_k(x)} cos(x, z) + mean_{z in NN_k(y)} cos(y, z)) / 2)

(the "ratio" margin; "distance" subtracts instead of dividing, "absolute" is the plain cosine).
Mining scores the k nearest neighbours of every sentence in each direction with the margin, keeps the
best candidate per sentence, and with "max" retrieval merges the forward and backward candidates,
visiting them from the highest score down and keeping a pair only if neither of its sentences was
used before, so that each sentence appears in at most one mined pair.

Everything here reads the similarities the kNN search already computed; nothing is recomputed and no
score matrix is built beyond ``n x k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from fastxlt.errors import ConfigError
from fastxlt.retrieval.search import BothNeighbours, Neighbours

Margin = Literal["ratio", "distance", "absolute"]
MARGINS = ("ratio", "distance", "absolute")
Retrieval = Literal["max", "fwd", "bwd", "intersect"]
RETRIEVALS = ("max", "fwd", "bwd", "intersect")


@dataclass(frozen=True)
class MinedPairs:
    """Mined sentence pairs, best first: x[source[i]] <-> y[target[i]] with margin ``score[i]``."""

    source: np.ndarray  # int64
    target: np.ndarray  # int64
    score: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.score)


def apply_margin(cosine: np.ndarray, own_mean: np.ndarray, other_mean: np.ndarray, margin: str) -> np.ndarray:
    """Margin of ``cosine`` given both sentences' mean similarity to their k nearest neighbours."""
    if margin == "absolute":
        return cosine.astype(np.float64)
    denominator = (own_mean.astype(np.float64) + other_mean.astype(np.float64)) / 2
    if margin == "ratio":
        return cosine / denominator
    if margin == "distance":
        return cosine - denominator
    raise ConfigError(f"unknown margin '{margin}'; choose {', '.join(MARGINS)}")


def score_neighbours(neighbours: Neighbours, own_mean: np.ndarray, other_mean: np.ndarray, margin: str) -> np.ndarray:
    """(n, k) margin scores of each query's k nearest neighbours."""
    return apply_margin(neighbours.scores, own_mean[:, None], other_mean[neighbours.indices], margin)


def best_candidates(
    knn: BothNeighbours, margin: str = "ratio"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best neighbour by margin in each direction: (fwd_best, fwd_score, bwd_best, bwd_score)."""
    fwd_mean, bwd_mean = knn.forward.mean_score(), knn.backward.mean_score()
    fwd_scores = score_neighbours(knn.forward, fwd_mean, bwd_mean, margin)
    bwd_scores = score_neighbours(knn.backward, bwd_mean, fwd_mean, margin)
    fwd_pick, bwd_pick = fwd_scores.argmax(axis=1), bwd_scores.argmax(axis=1)
    fwd_best = np.take_along_axis(knn.forward.indices, fwd_pick[:, None], axis=1)[:, 0]
    bwd_best = np.take_along_axis(knn.backward.indices, bwd_pick[:, None], axis=1)[:, 0]
    return fwd_best, fwd_scores.max(axis=1), bwd_best, bwd_scores.max(axis=1)


def mine(knn: BothNeighbours, *, margin: str = "ratio", retrieval: str = "max") -> MinedPairs:
    """Mine pairs from a two-way kNN result (x -> y forward, y -> x backward); best first."""
    if retrieval not in RETRIEVALS:
        raise ConfigError(f"unknown retrieval '{retrieval}'; choose {', '.join(RETRIEVALS)}")
    fwd_best, fwd_score, bwd_best, bwd_score = best_candidates(knn, margin)
    n_x, n_y = len(fwd_best), len(bwd_best)
    if retrieval == "fwd":
        return _sorted_pairs(np.arange(n_x), fwd_best, fwd_score)
    if retrieval == "bwd":
        return _sorted_pairs(bwd_best, np.arange(n_y), bwd_score)
    if retrieval == "intersect":
        mutual = fwd_best[bwd_best] == np.arange(n_y)
        return _sorted_pairs(bwd_best[mutual], np.arange(n_y)[mutual], bwd_score[mutual])
    source = np.concatenate([np.arange(n_x), bwd_best])
    target = np.concatenate([fwd_best, np.arange(n_y)])
    return one_to_one(source, target, np.concatenate([fwd_score, bwd_score]))


def one_to_one(source: np.ndarray, target: np.ndarray, score: np.ndarray) -> MinedPairs:
    """Greedy from the best score down: keep a pair only if neither sentence is used yet.

    The visit is sequential by nature (each decision depends on the earlier ones); it touches each
    candidate once, 2 x n in all.
    """
    order = np.argsort(-score, kind="stable")
    used_source = bytearray(int(source.max(initial=-1)) + 1)
    used_target = bytearray(int(target.max(initial=-1)) + 1)
    keep = []
    for position, src, trg in zip(order.tolist(), source[order].tolist(), target[order].tolist()):
        if not used_source[src] and not used_target[trg]:
            used_source[src] = used_target[trg] = 1
            keep.append(position)
    keep_array = np.asarray(keep, dtype=np.int64)
    return MinedPairs(source=source[keep_array], target=target[keep_array], score=score[keep_array].astype(np.float64))


def _sorted_pairs(source: np.ndarray, target: np.ndarray, score: np.ndarray) -> MinedPairs:
    order = np.argsort(-score, kind="stable")
    return MinedPairs(source=source[order], target=target[order], score=score[order].astype(np.float64))
