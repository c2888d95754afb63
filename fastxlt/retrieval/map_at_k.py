"""mAP@k and MRR@k, the metrics of XTREME-R's two retrieval tasks (LAReQA and Mewsli-X).

The definition is the one of XTREME-R's own scorer, ``average_precision_at_k`` in
google-research/xtreme ``third_party/utils_lareqa.py`` (LAReQA's mAP, Roy et al., 2020, cut at k=20
by ``evaluate_retrieval.py``: ``mean_avg_prec_at_k(question_set, candidate_set, k=20)``). For one
query with relevant set R and a ranked list of candidates::

    AP@k = (1 / min(k, |R|)) * sum over ranks r <= k with rel(r) = 1 of  precision@r

where precision@r = (relevant items among the first r) / r, and an item repeated further down the
list counts once (at its first rank). mAP@k is the mean of AP@k over queries; XTREME-R reports it
in percent, per query language, and averages the languages.

MRR@k (Mewsli-X, ``utils_mewslix.mean_reciprocal_rank`` over the top ``TOP_K = 20`` predictions) is
1/r for the rank r of the first relevant item within the top k, 0 when none is there. With exactly
one relevant item AP@k = MRR@k, which is why XTREME-R calls the Mewsli-X score "MRR/MAP@20".

Ties. The official scorer ranks with ``scores.argsort()[::-1]`` (numpy's default, unstable sort), so
equal scores come in an unspecified order there. Here the order is fixed: by descending score, and
equal scores by ascending candidate index (the lower index ranks first). Ties need identical
embeddings (identical inputs), so on real data the two agree.

``retrieval_average_precision`` scores queries against all candidates by exact inner products
(torch matmul in blocks of queries; no approximate search) and reads the AP@k of every query from the
rank of each relevant candidate: rank(g) = 1 + #{s > s_g} + #{s == s_g, index < g}. The full ranking
is never sorted, and no (queries x candidates) matrix larger than one block is held.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

import numpy as np
import torch

from fastxlt.errors import ConfigError
from fastxlt.utils.hardware import default_device

K = 20  # XTREME-R's cut-off for both tasks
BLOCK_ELEMENTS = 1 << 24  # scores held at once per block (64 MB of float32), plus as many comparison flags


# ----------------------------------------------------------------------------------------------
# The definition, on ranked lists


def average_precision_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = K) -> float:
    """AP@k of one ranked list (best first) against the set of relevant items, as XTREME-R defines it."""
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        raise ValueError("AP@k is undefined for a query with no relevant item")
    seen: set[Hashable] = set()
    hits, total = 0, 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant and item not in seen:
            hits += 1
            total += hits / rank
        seen.add(item)
    return total / min(k, len(relevant))


def reciprocal_rank_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = K) -> float:
    """1 / rank of the first relevant item within the top k; 0 when there is none."""
    _check_k(k)
    relevant = set(relevant)
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            return 1.0 / rank
    return 0.0


def mean_average_precision_at_k(
    rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int = K
) -> float:
    """mAP@k over queries, a fraction in [0, 1]."""
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings but {len(relevant)} relevant sets")
    if not rankings:
        raise ValueError("mAP@k of no query is undefined")
    return float(np.mean([average_precision_at_k(r, g, k) for r, g in zip(rankings, relevant)]))


def mean_reciprocal_rank_at_k(
    rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int = K
) -> float:
    """MRR@k over queries, a fraction in [0, 1]."""
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings but {len(relevant)} relevant sets")
    if not rankings:
        raise ValueError("MRR@k of no query is undefined")
    return float(np.mean([reciprocal_rank_at_k(r, g, k) for r, g in zip(rankings, relevant)]))


def average_precision_from_ranks(ranks: Sequence[int] | np.ndarray, num_relevant: int, k: int = K) -> float:
    """AP@k from the 1-based ranks of the relevant items in the full ranking (distinct ranks).

    The j-th best-ranked relevant item at rank r_j contributes precision@r_j = j / r_j when r_j <= k.
    A relevant item absent from the candidates has no rank and only counts in ``num_relevant``.
    """
    _check_k(k)
    if num_relevant < 1:
        raise ValueError("AP@k is undefined for a query with no relevant item")
    ordered = np.sort(np.asarray(ranks, dtype=np.int64))
    inside = ordered[ordered <= k]
    hits = np.arange(1, len(inside) + 1, dtype=np.float64)
    return float(np.sum(hits / inside)) / min(k, num_relevant)


# ----------------------------------------------------------------------------------------------
# From embeddings


def retrieval_average_precision(
    queries: np.ndarray | torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    relevant: Sequence[Sequence[int] | np.ndarray],
    k: int = K,
    *,
    num_relevant: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    block_elements: int = BLOCK_ELEMENTS,
) -> np.ndarray:
    """AP@k of every query, ranking all candidates by inner product with it (exact, float32).

    ``relevant[i]`` holds the candidate indices relevant to query i. ``num_relevant[i]`` (default:
    ``len(relevant[i])``) is the size of the relevant set when some relevant items are not among the
    candidates (a Mewsli-X gold entity missing from the candidate set scores 0, as in the official
    scorer, where it is never predicted). With one relevant item per query this is RR@k.
    """
    _check_k(k)
    device = torch.device(device) if device is not None else default_device()
    q = _as_matrix(queries, device)
    c = _as_matrix(candidates, device)
    if q.shape[0] != len(relevant):
        raise ConfigError(f"{q.shape[0]} query embeddings but {len(relevant)} relevant sets")
    if q.shape[0] and (c.shape[0] == 0 or q.shape[1] != c.shape[1]):
        raise ConfigError(f"cannot rank {tuple(c.shape)} candidates for {tuple(q.shape)} queries; widths must match")
    golds = [np.unique(np.asarray(g, dtype=np.int64)) for g in relevant]
    for g in golds:
        if len(g) and (g[0] < 0 or g[-1] >= c.shape[0]):
            raise ConfigError(f"relevant index out of range for {c.shape[0]} candidates: {g.tolist()}")
    sizes = [len(g) for g in golds] if num_relevant is None else [int(n) for n in num_relevant]
    widest = max((len(g) for g in golds), default=1) or 1
    rows = max(1, block_elements // max(1, c.shape[0] * widest))
    scores = np.zeros(q.shape[0], dtype=np.float64)
    for start in range(0, q.shape[0], rows):
        block = range(start, min(start + rows, q.shape[0]))
        ranks = _gold_ranks(q[block.start : block.stop] @ c.T, [golds[i] for i in block])
        for i, query_ranks in zip(block, ranks):
            scores[i] = average_precision_from_ranks(query_ranks, sizes[i], k) if sizes[i] else 0.0
    return scores


def _gold_ranks(block_scores: torch.Tensor, golds: list[np.ndarray]) -> list[np.ndarray]:
    """1-based rank of every (query, relevant candidate) pair of one block under the documented tie rule."""
    query_of = np.repeat(np.arange(len(golds)), [len(g) for g in golds])
    if len(query_of) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in golds]
    device = block_scores.device
    rows = torch.from_numpy(query_of).to(device)
    cols = torch.from_numpy(np.concatenate(golds)).to(device)
    pair_scores = block_scores[rows]  # (pairs, candidates)
    values = pair_scores[torch.arange(len(rows), device=device), cols].unsqueeze(1)
    before = torch.arange(block_scores.shape[1], device=device).unsqueeze(0) < cols.unsqueeze(1)
    ahead = (pair_scores > values).sum(dim=1) + ((pair_scores == values) & before).sum(dim=1)
    ranks = (ahead + 1).cpu().numpy()
    return np.split(ranks, np.cumsum([len(g) for g in golds])[:-1])


def _as_matrix(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if array.ndim != 2:
        raise ConfigError(f"embeddings must be a matrix (rows x width), got shape {tuple(array.shape)}")
    return array.to(device=device, dtype=torch.float32)


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
