"""Exact kNN search: the one-pass two-way search and FAISS against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastxlt.errors import ConfigError
from fastxlt.retrieval import search
from fastxlt.utils import hardware


def brute_force_knn(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every score in float64, fully sorted: the reference."""
    scores = queries.astype(np.float64) @ database.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def assert_same_neighbours(found: search.Neighbours, queries: np.ndarray, database: np.ndarray, k: int) -> None:
    ref_scores, ref_indices = brute_force_knn(queries, database, k)
    np.testing.assert_array_equal(found.indices, ref_indices)
    np.testing.assert_allclose(found.scores, ref_scores, atol=1e-5)


# Shapes chosen to exercise several tiles, ragged last tiles and groups, sides smaller than one group,
# and k larger than the other side (clipped, as the BUCC scripts do).
CASES = [
    # n_x, n_y, dim, k, block_rows, block_cols
    (1000, 777, 32, 4, 256, 192),
    (300, 2500, 16, 4, 128, 1024),
    (513, 129, 8, 1, 64, 64),
    (70, 70, 8, 4, 64, 64),
    (5, 9, 8, 4, 4096, 16384),
    (3, 200, 8, 10, 64, 128),
]


@pytest.mark.parametrize("n_x,n_y,dim,k,block_rows,block_cols", CASES)
def test_knn_both_equals_brute_force_in_both_directions(n_x, n_y, dim, k, block_rows, block_cols):
    rng = np.random.default_rng(n_x * 7 + n_y)
    x, y = unit_vectors(rng, n_x, dim), unit_vectors(rng, n_y, dim)
    found = search.knn_both(x, y, k, block_rows=block_rows, block_cols=block_cols, device="cpu")
    assert_same_neighbours(found.forward, x, y, min(k, n_y))
    assert_same_neighbours(found.backward, y, x, min(k, n_x))


@pytest.mark.parametrize("n_x,n_y,dim,k", [(800, 600, 24, 4), (200, 50, 16, 1)])
def test_faiss_equals_brute_force(n_x, n_y, dim, k):
    rng = np.random.default_rng(n_x)
    x, y = unit_vectors(rng, n_x, dim), unit_vectors(rng, n_y, dim)
    assert_same_neighbours(search.knn_faiss(x, y, k, use_gpu=False, query_block=128), x, y, k)
    both = search.knn_both_faiss(x, y, k, use_gpu=False)
    assert_same_neighbours(both.backward, y, x, k)


@pytest.mark.parametrize("precision,dim", [("bf16", 64), ("int8", 64), ("int8", 30)])
def test_reduced_precision_pass_returns_the_float32_neighbours_and_exact_scores(precision, dim):
    """bf16 / int8 only choose candidate groups; the kept neighbours and their scores are float32-exact."""
    rng = np.random.default_rng(3)
    x = unit_vectors(rng, 700, dim)
    y = unit_vectors(rng, 900, dim)
    y[:500] = x[:500] + 0.3 * rng.standard_normal((500, dim)).astype(np.float32)  # planted near-copies
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    found = search.knn_both(x, y, 4, precision=precision, block_rows=256, block_cols=200, device="cpu")
    assert_same_neighbours(found.forward, x, y, 4)
    assert_same_neighbours(found.backward, y, x, 4)


def test_unnormalised_vectors_are_searched_by_inner_product():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((150, 12)).astype(np.float32) * rng.uniform(0.1, 5, (150, 1)).astype(np.float32)
    y = rng.standard_normal((140, 12)).astype(np.float32)
    found = search.knn_both(x, y, 3, block_rows=64, block_cols=64, device="cpu")
    assert_same_neighbours(found.forward, x, y, 3)
    assert_same_neighbours(found.backward, y, x, 3)


def test_nearest_takes_the_first_of_tied_maxima_like_numpy_argmax():
    rng = np.random.default_rng(11)
    y = unit_vectors(rng, 300, 16)
    y[200] = y[17]  # exact duplicates in another tile: ties must go to the lower index
    y[250] = y[40]
    y[30] = y[25]  # and in the same tile
    x = np.concatenate([y[[17, 40, 200, 250, 30]], unit_vectors(rng, 100, 16)])
    reference = np.argmax(x.astype(np.float64) @ y.astype(np.float64).T, axis=1)
    found = search.nearest(x, y, block_rows=64, block_cols=64, device="cpu")
    np.testing.assert_array_equal(found, reference)
    assert found[:5].tolist() == [17, 40, 17, 40, 25]


def test_group_maxima_match_a_python_loop():
    tile = torch.randn(130, 200)
    rows = [tile[:, c : c + search.GROUP].amax(dim=1) for c in range(0, 200, search.GROUP)]
    torch.testing.assert_close(search.group_max_last(tile), torch.stack(rows, dim=1))
    cols = [tile[r : r + search.GROUP].amax(dim=0) for r in range(0, 130, search.GROUP)]
    torch.testing.assert_close(search.group_max_first(tile), torch.stack(cols, dim=0))


def test_faiss_gpu_index_is_chosen_when_a_gpu_build_sees_a_gpu(monkeypatch):
    """The GPU path is the same code: only the index class changes (GpuIndexFlatIP with faiss-gpu)."""
    import faiss

    created = []

    class FakeGpuIndex(faiss.IndexFlatIP):  # a CPU index standing in for faiss-gpu's
        def __init__(self, resources, dim):
            super().__init__(dim)
            created.append(resources)

    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: "gpu-resources", raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", FakeGpuIndex, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    search._gpu_resources.cache_clear()
    try:
        assert search.faiss_gpu_available()
        rng = np.random.default_rng(2)
        x, y = unit_vectors(rng, 50, 8), unit_vectors(rng, 60, 8)
        assert_same_neighbours(search.knn_faiss(x, y, 3), x, y, 3)
        assert created == ["gpu-resources"]
    finally:
        search._gpu_resources.cache_clear()


def test_int8_products_are_the_products_of_the_quantised_vectors():
    rng = np.random.default_rng(8)
    x = torch.from_numpy(unit_vectors(rng, 40, 20))
    y = torch.from_numpy(unit_vectors(rng, 24, 20))
    qx, qy = search.product_operands(x, "int8"), search.product_operands(y, "int8")
    assert qx.dtype == torch.int8 and qx.shape == (40, 24)  # inner dimension padded to a multiple of 8
    assert int(qx.abs().max()) == 127  # the side's largest component maps to 127
    expected = qx.long() @ qy.long().T
    assert torch.equal(search.tile_product(qx, qy).long(), expected)  # torch._int_mm path
    assert torch.equal(search.tile_product(qx[:5], qy).long(), expected[:5])  # small-tile fallback
    # and the int8 scores rank like the real ones: same nearest neighbour for (almost) every row
    agree = (expected.argmax(dim=1) == (x @ y.T).argmax(dim=1)).float().mean()
    assert agree > 0.9


def test_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset())
    assert search.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    assert search.resolve_precision("auto", torch.device("cpu")) == "int8"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_vnni", "amx_bf16"}))
    assert search.resolve_precision("auto", torch.device("cpu")) == "bf16"
    assert search.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(ConfigError, match="unknown precision"):
        search.resolve_precision("fp8", torch.device("cpu"))


def test_two_way_knn_backends_agree():
    rng = np.random.default_rng(9)
    x, y = unit_vectors(rng, 300, 16), unit_vectors(rng, 250, 16)
    torch_result = search.two_way_knn(x, y, 4, backend="torch")
    faiss_result = search.two_way_knn(x, y, 4, backend="faiss")
    np.testing.assert_array_equal(torch_result.forward.indices, faiss_result.forward.indices)
    np.testing.assert_array_equal(torch_result.backward.indices, faiss_result.backward.indices)
    with pytest.raises(ConfigError, match="unknown search backend"):
        search.two_way_knn(x, y, 4, backend="annoy")


@pytest.mark.parametrize(
    "x,y,message",
    [
        (np.zeros((3, 4)), np.zeros((3, 5)), "same width"),
        (np.zeros((0, 4)), np.zeros((3, 4)), "empty"),
        (np.zeros(4), np.zeros((3, 4)), "same width"),
    ],
)
def test_bad_inputs_raise_one_line_errors(x, y, message):
    with pytest.raises(ConfigError, match=message) as error:
        search.knn_both(x, y, 2, device="cpu")
    assert "\n" not in str(error.value)


def test_single_threaded_workers_keep_order_and_restore_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = search.run_single_threaded(
            [lambda i=i: (i, torch.get_num_threads()) for i in range(5)], torch.device("cpu")
        )
        assert seen == [(i, 1) for i in range(5)]  # in task order, each on one thread
        assert torch.get_num_threads() == 2
        rng = np.random.default_rng(12)
        x, y = unit_vectors(rng, 300, 8), unit_vectors(rng, 200, 8)
        found = search.knn_both(x, y, 2, block_rows=64, block_cols=64, device="cpu")  # several workers
        assert_same_neighbours(found.forward, x, y, 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
