"""Exact inner-product k-nearest-neighbour search over L2-normalised sentence embeddings.

Two ways to the same exact answer:

* ``knn_both`` (the default for mining): one pass of blocked matrix products ``X_i @ Y_j^T`` that
  serves **both directions** (x -> y along the rows of each tile, y -> x along its columns). Margin
  scoring needs both, and the classic pipeline (one FAISS search per direction) computes every
  product twice; here each product is computed once, at the speed of the matrix unit (torch matmul:
  MKL/oneDNN on CPU, cuBLAS on a GPU). Memory stays bounded by one tile (``block_rows x
  block_cols`` scores) plus a few candidates per sentence: never an N x N matrix.
* ``knn_faiss``: FAISS ``IndexFlatIP`` for one direction, on the GPU (faiss-gpu) when CUDA and a GPU
  build of FAISS are present and on the CPU otherwise, through the same code. Query blocks bound
  the memory of the results.

How the one pass stays exact and cheap: the sentences of each side are cut into groups of ``GROUP``
consecutive rows. Phase 1 (the pass over all tiles) keeps, for every sentence, only the ``k`` best
*groups* of the other side, ranked by the best score inside the group: two vectorised max-reductions
per tile, no top-k over the tile and no gather from it. Phase 2 computes the exact float32 scores of
those ``k x GROUP`` candidates (small matrix products: 2.6% of the pass's work at 20k x 20k, 0.5% at
100k x 100k) and keeps the exact top-k. That is exact: the ``k`` best neighbours lie in at most ``k``
groups, and each such group has a maximum at least as large as the k-th best score, so it ranks among
the ``k`` best groups. (Exact as any BLAS-based search is: when two scores are equal, or equal up to
float32 rounding, either neighbour may be returned.)

On a CPU the pass runs as ``torch.get_num_threads()`` single-threaded workers taking blocks of rows
in turn (see ``run_single_threaded``): on a shared machine this was 1.6x (fp32) to 2.8x (int8)
faster than multi-threaded operations, each of which waits at a thread barrier for a descheduled
thread.

``precision="bf16"`` (fast where the CPU has AMX, or on a GPU) or ``"int8"`` (AVX-512 VNNI CPUs)
runs phase 1 in reduced precision and keeps ``EXTRA_GROUPS`` more groups per sentence; phase 2 is
float32 in every precision, so returned scores are float32 dot products, and the neighbours equal
the float32 ones unless rounding pushes a true neighbour's group out of the widened candidate list,
which the tests and ``benchmarks/retrieval.py`` (``identical=``) check against float32. ``"fp32"``
(the default) is exact.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

from fastxlt.errors import ConfigError
from fastxlt.retrieval.options import SEARCH_BACKENDS, SEARCH_PRECISIONS
from fastxlt.utils.hardware import cpu_has_vnni, default_device, fast_bf16

T = TypeVar("T")
Precision = Literal["fp32", "bf16", "int8", "auto"]
PRECISIONS = SEARCH_PRECISIONS

GROUP = 64  # scores per group in the two-level top-k
# Extra candidate groups per sentence when phase 1 runs in reduced precision: int8 scores of unit
# vectors err by ~1e-3 (std), bf16 less; at 20k x 20k random vectors int8 with 4 extra groups missed
# a true 4th neighbour in 2 of 40,000 lists, with 8 in none.
EXTRA_GROUPS = {"fp32": 0, "bf16": 4, "int8": 8}


@dataclass(frozen=True)
class Neighbours:
    """The k nearest neighbours of every query: ``scores[i, r]`` is the r-th best, descending."""

    scores: np.ndarray  # (n, k) float32
    indices: np.ndarray  # (n, k) int64

    def mean_score(self) -> np.ndarray:
        """Mean similarity to the k neighbours: the denominator term of margin scoring."""
        return self.scores.mean(axis=1)


@dataclass(frozen=True)
class BothNeighbours:
    """kNN in both directions from one pass: ``forward`` is x -> y, ``backward`` is y -> x."""

    forward: Neighbours
    backward: Neighbours


# ----------------------------------------------------------------------------------------------
# Devices and precision


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> the fastest matrix unit: bf16 on a GPU or an AMX CPU, int8 on a VNNI CPU, else fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if fast_bf16(device):
        return "bf16"
    return "int8" if device.type == "cpu" and cpu_has_vnni() else "fp32"


# ----------------------------------------------------------------------------------------------
# One pass, both directions


def knn_both(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    k: int,
    *,
    precision: Precision = "fp32",
    device: str | torch.device | None = None,
    block_rows: int | None = None,
    block_cols: int | None = None,
) -> BothNeighbours:
    """k nearest neighbours by inner product, x -> y and y -> x, from one pass of blocked products.

    ``k`` is clipped to the size of the other side (as the BUCC scripts do). Memory: one tile of
    ``block_rows x block_cols`` scores plus a few candidate groups per sentence on each side. The
    CPU default, a 2048 x 2048 tile (16 MB in float32), stays in cache between the product that
    writes it and the two max-reductions that read it (4096 x 16384 tiles measured twice as slow);
    a GPU gets 8192 x 32768 tiles (1 GiB), large enough to keep it busy.
    """
    device = torch.device(device) if device is not None else default_device()
    block_rows, block_cols = _default_blocks(device, block_rows, block_cols)
    precision = resolve_precision(precision, device)
    xt, yt = _as_matrix(x, device), _as_matrix(y, device)
    _check_pair(xt, yt)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    fwd_groups, bwd_groups = candidate_groups(xt, yt, k + EXTRA_GROUPS[precision], precision, block_rows, block_cols)
    forward, backward = run_single_threaded(
        [
            lambda: rescore_groups(xt, yt, fwd_groups, min(k, yt.shape[0])),
            lambda: rescore_groups(yt, xt, bwd_groups, min(k, xt.shape[0])),
        ],
        device,
    )
    return BothNeighbours(forward=forward, backward=backward)


def candidate_groups(
    x: torch.Tensor, y: torch.Tensor, groups: int, precision: str, block_rows: int, block_cols: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase 1: the ``groups`` best groups of GROUP consecutive sentences of the other side, both ways.

    Returns (fwd, bwd): ``fwd[i]`` are group ids of y (group g = y[g*GROUP:(g+1)*GROUP]) ranked by
    the best score of x[i] inside the group; ``bwd[j]`` the same for y[j] over groups of x.

    On a CPU, each of ``torch.get_num_threads()`` workers takes the next block of rows and runs it on
    one thread (GEMM, max-reductions, top-k), keeping its own running backward top-k; the workers'
    lists are merged at the end. Workers never wait for one another, so a core taken by another
    process slows the pass by its share instead of stalling every multi-threaded operation at its
    thread barrier (measured: the barrier version ran 2-3x slower on a busy 2-core machine).
    """
    block_rows, block_cols = _round_block(block_rows), _round_block(block_cols)
    n_x, n_y, device = x.shape[0], y.shape[0], x.device
    k_fwd, k_bwd = min(groups, _num_groups(n_y)), min(groups, _num_groups(n_x))
    x_cast, y_cast = product_operands(x, precision), product_operands(y, precision)
    fwd = torch.empty((n_x, k_fwd), dtype=torch.int64, device=device)
    starts = iter(range(0, n_x, block_rows))
    lock = threading.Lock()

    def worker() -> tuple[torch.Tensor, torch.Tensor]:
        bwd_values = torch.full((n_y, k_bwd), -torch.inf, device=device)
        bwd = torch.zeros((n_y, k_bwd), dtype=torch.int64, device=device)
        while (r0 := _next(starts, lock)) is not None:
            row_maxima, col_maxima = _row_block_maxima(x_cast[r0 : r0 + block_rows], y_cast, block_cols)
            fwd[r0 : r0 + block_rows] = torch.topk(row_maxima, k_fwd, dim=1).indices
            values, ids = torch.topk(col_maxima, min(k_bwd, col_maxima.shape[0]), dim=0)
            bwd_values, bwd = merge_topk(bwd_values, bwd, values.T, ids.T + r0 // GROUP, k_bwd)
        return bwd_values, bwd

    workers = torch.get_num_threads() if device.type == "cpu" else 1
    partial = run_single_threaded([worker] * workers, device)
    bwd_values, bwd = partial[0]
    for values, ids in partial[1:]:
        bwd_values, bwd = merge_topk(bwd_values, bwd, values, ids, k_bwd)
    return fwd, bwd


def _row_block_maxima(x_block: torch.Tensor, y: torch.Tensor, block_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group maxima of one block of rows against all of y, one tile at a time.

    Returns (best score per y group for each row, best score per row group for each y sentence).
    """
    n_y = y.shape[0]
    row_maxima = torch.empty((x_block.shape[0], _num_groups(n_y)), device=x_block.device)
    col_maxima = torch.empty((_num_groups(x_block.shape[0]), n_y), device=x_block.device)
    for c0 in range(0, n_y, block_cols):
        tile = tile_product(x_block, y[c0 : c0 + block_cols])
        g0 = c0 // GROUP
        row_maxima[:, g0 : g0 + _num_groups(tile.shape[1])] = group_max_last(tile)
        col_maxima[:, c0 : c0 + tile.shape[1]] = group_max_first(tile)
    return row_maxima, col_maxima


def _next(iterator, lock: threading.Lock):
    with lock:
        return next(iterator, None)


def product_operands(matrix: torch.Tensor, precision: str) -> torch.Tensor:
    """One side, ready for phase-1 products: float32, bfloat16, or int8 with one scale for the side.

    One scale per side (not per row) keeps every int32 product of a tile proportional to the score
    it approximates, so tiles are ranked as they are, without a rescaling pass. Unit vectors have
    small components, so the scale 127 / max|component| still resolves them finely.
    """
    if precision == "fp32":
        return matrix
    if precision == "bf16":
        return matrix.to(torch.bfloat16)
    scale = 127.0 / matrix.abs().max().clamp(min=1e-12)
    quantized = torch.round(matrix * scale).clamp(-127, 127).to(torch.int8)
    padding = -matrix.shape[1] % 8  # int8 matrix units want the inner dimension in multiples of 8
    return torch.nn.functional.pad(quantized, (0, padding)) if padding else quantized


def tile_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` in the operands' precision (int8 -> int32 via ``torch._int_mm`` where its shapes allow)."""
    if a.dtype != torch.int8:
        return a @ b.T
    if a.shape[0] > 16 and b.shape[0] % 8 == 0:
        return torch._int_mm(a, b.T)
    return a.float() @ b.float().T  # small or ragged tiles: exact for int8 sums below 2**24


def group_max_last(tile: torch.Tensor) -> torch.Tensor:
    """Maximum of every GROUP consecutive columns (a last, shorter group when cols % GROUP != 0)."""
    rows, cols = tile.shape
    full = cols // GROUP
    maxima = torch.as_strided(tile, (rows, full, GROUP), (tile.stride(0), GROUP, 1)).amax(dim=2)
    if full * GROUP < cols:
        maxima = torch.cat([maxima, tile[:, full * GROUP :].amax(dim=1, keepdim=True)], dim=1)
    return maxima


def group_max_first(tile: torch.Tensor) -> torch.Tensor:
    """Maximum of every GROUP consecutive rows (a last, shorter group when rows % GROUP != 0)."""
    rows, cols = tile.shape
    full = rows // GROUP
    maxima = tile[: full * GROUP].view(full, GROUP, cols).amax(dim=1)
    if full * GROUP < rows:
        maxima = torch.cat([maxima, tile[full * GROUP :].amax(dim=0, keepdim=True)], dim=0)
    return maxima


def merge_topk(
    values: torch.Tensor, indices: torch.Tensor, new_values: torch.Tensor, new_indices: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two running top-k lists of shape (n, *) into one (n, k) list."""
    all_values = torch.cat([values, new_values], dim=1)
    all_indices = torch.cat([indices, new_indices], dim=1)
    best_values, position = torch.topk(all_values, min(k, all_values.shape[1]), dim=1)
    return best_values, torch.gather(all_indices, 1, position)


def rescore_groups(
    queries: torch.Tensor, database: torch.Tensor, groups: torch.Tensor, k: int, chunk: int = 16384
) -> Neighbours:
    """Phase 2: exact float32 scores of every sentence in each query's candidate groups; keep the k best."""
    scores, indices = [], []
    for start in range(0, queries.shape[0], chunk):
        chosen = groups[start : start + chunk]
        block_scores = _scores_in_groups(queries[start : start + chunk], database, chosen)
        values, position = torch.topk(block_scores.view(chosen.shape[0], -1), k, dim=1)
        scores.append(values)
        indices.append(torch.gather(chosen, 1, position // GROUP) * GROUP + position % GROUP)
    return _to_numpy(torch.cat(scores), torch.cat(indices))


def run_single_threaded(tasks: list[Callable[[], T]], device: torch.device) -> list[T]:
    """Run CPU tasks side by side, each on one thread; anything else in turn. Results in task order.

    Many small multi-threaded operations each pay a thread barrier, and on a busy machine a barrier
    can wait a whole scheduler time slice for a descheduled thread. Independent single-threaded
    tasks never wait for each other. ``torch.set_num_threads`` is restored afterwards.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or len(tasks) == 1:
        return [task() for task in tasks]

    def run(task: Callable[[], T]) -> T:
        torch.set_num_threads(1)
        return task()

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
            return list(pool.map(run, tasks))
    finally:
        torch.set_num_threads(threads)


def _scores_in_groups(queries: torch.Tensor, database: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(n, width, GROUP) exact scores; -inf where a group runs past the end of the database.

    The work is organised by group, not by query: one small matrix product per database group with
    the queries that chose it, so every database row is read once per chunk of queries.
    """
    n, width = groups.shape
    scores = torch.full((n, width, GROUP), -torch.inf, device=queries.device)
    flat = groups.reshape(-1)
    order = torch.argsort(flat, stable=True)
    group_ids, counts = torch.unique_consecutive(flat[order], return_counts=True)
    query_of, slot_of = order // width, order % width
    start = 0
    for group, count in zip(group_ids.tolist(), counts.tolist()):
        rows, slots = query_of[start : start + count], slot_of[start : start + count]
        members = database[group * GROUP : (group + 1) * GROUP]
        scores[rows, slots, : members.shape[0]] = queries[rows] @ members.T
        start += count
    return scores


def nearest(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device | None = None,
    block_rows: int | None = None,
    block_cols: int | None = None,
) -> np.ndarray:
    """Index of the nearest y for every x by inner product; ties go to the lowest index, like ``np.argmax``.

    Tatoeba accuracy compares indices, so the tie rule matters when a language's English side holds
    the same sentence twice (identical embeddings): ``torch.argmax`` returns the first maximum inside
    a tile, and a later tile replaces the running best only when strictly better.
    """
    device = torch.device(device) if device is not None else default_device()
    block_rows, block_cols = _default_blocks(device, block_rows, block_cols)
    xt, yt = _as_matrix(x, device), _as_matrix(y, device)
    _check_pair(xt, yt)
    answers = []
    for r0 in range(0, xt.shape[0], block_rows):
        x_block = xt[r0 : r0 + block_rows]
        best_value = torch.full((x_block.shape[0],), -torch.inf, device=device)
        best_index = torch.zeros(x_block.shape[0], dtype=torch.int64, device=device)
        for c0 in range(0, yt.shape[0], block_cols):
            value, index = torch.max(x_block @ yt[c0 : c0 + block_cols].T, dim=1)
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + c0, best_index)
        answers.append(best_index)
    return torch.cat(answers).cpu().numpy().astype(np.int64)


# ----------------------------------------------------------------------------------------------
# FAISS


def faiss_gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a GPU."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def flat_ip_index(dim: int, use_gpu: bool | None = None):
    """An exact inner-product FAISS index: ``GpuIndexFlatIP`` with faiss-gpu and a GPU, else ``IndexFlatIP``."""
    import faiss

    if use_gpu is None:
        use_gpu = faiss_gpu_available()
    if use_gpu:
        return faiss.GpuIndexFlatIP(_gpu_resources(), dim)
    return faiss.IndexFlatIP(dim)


@functools.cache
def _gpu_resources():
    import faiss

    return faiss.StandardGpuResources()


def knn_faiss(
    queries: np.ndarray, database: np.ndarray, k: int, *, use_gpu: bool | None = None, query_block: int = 65536
) -> Neighbours:
    """k nearest neighbours of each query by inner product with FAISS (one direction)."""
    queries, database = _as_float32(queries), _as_float32(database)
    _check_pair(torch.from_numpy(queries), torch.from_numpy(database))
    k = min(k, database.shape[0])
    index = flat_ip_index(database.shape[1], use_gpu)
    index.add(database)
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], query_block):
        block_scores, block_indices = index.search(queries[start : start + query_block], k)
        scores[start : start + query_block], indices[start : start + query_block] = block_scores, block_indices
    return Neighbours(scores=scores, indices=indices)


def knn_both_faiss(x: np.ndarray, y: np.ndarray, k: int, *, use_gpu: bool | None = None) -> BothNeighbours:
    """Both directions with two FAISS searches (the classic pipeline; the reference for ``knn_both``)."""
    return BothNeighbours(forward=knn_faiss(x, y, k, use_gpu=use_gpu), backward=knn_faiss(y, x, k, use_gpu=use_gpu))


BACKENDS = SEARCH_BACKENDS


def two_way_knn(
    x: np.ndarray, y: np.ndarray, k: int, *, backend: str = "torch", precision: Precision = "fp32"
) -> BothNeighbours:
    """kNN both ways with the chosen backend: ``torch`` (one pass, default) or ``faiss`` (two searches)."""
    if backend == "torch":
        return knn_both(x, y, k, precision=precision)
    if backend == "faiss":
        return knn_both_faiss(x, y, k)
    raise ConfigError(f"unknown search backend '{backend}'; choose {' or '.join(BACKENDS)}")


# ----------------------------------------------------------------------------------------------
# Helpers


def _as_float32(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().float().numpy()
    return np.ascontiguousarray(array, dtype=np.float32)


def _as_matrix(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return array.to(device=device, dtype=torch.float32).contiguous()


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ConfigError(
            f"embeddings must be two matrices with the same width, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ConfigError("cannot search an empty set of sentences; check that both sides have sentences")


def _default_blocks(device: torch.device, rows: int | None, cols: int | None) -> tuple[int, int]:
    default = (2048, 2048) if device.type == "cpu" else (8192, 32768)
    return rows or default[0], cols or default[1]


def _num_groups(size: int) -> int:
    return -(-size // GROUP)


def _round_block(size: int) -> int:
    """Block sizes are multiples of GROUP so that full tiles take the fast two-level top-k."""
    return max(GROUP, (int(size) // GROUP) * GROUP)


def _to_numpy(values: torch.Tensor, indices: torch.Tensor) -> Neighbours:
    return Neighbours(scores=values.float().cpu().numpy(), indices=indices.cpu().numpy().astype(np.int64))
