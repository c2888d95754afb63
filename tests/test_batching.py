"""Token-budget batch packing: the C++ packer against the Python reference, plus the contract itself.

The reference (``pack_batches_reference``) is the oracle for the C++ code; the invariants and the
hand-worked examples below check the reference (and the C++ code) against the definition:
rows sorted longest first (stable), each batch ``rows * longest <= budget`` (or a lone row),
``rows <= max_batch_size``, and each batch as large as those two limits allow (greedy).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastxlt.inference import batching
from fastxlt.inference.batching import (
    iter_batches,
    pack_batches,
    pack_batches_reference,
    restore_order,
)


@pytest.fixture(scope="module")
def ext():
    """The compiled module; a missing build is a failure, not a skip: CI must build it."""
    try:
        import fastxlt._C as compiled
    except ImportError as err:  # pragma: no cover - only when the build is broken
        pytest.fail(f"fastxlt._C is not built ({err}); run `make venv` or `pip install -e .`")
    return compiled


def check_contract(lengths: np.ndarray, order: np.ndarray, offsets: np.ndarray, budget: int, max_rows: int) -> None:
    """Assert the packing definition directly, independent of any implementation."""
    n = len(lengths)
    assert order.dtype == np.int64 and offsets.dtype == np.int64
    assert sorted(order.tolist()) == list(range(n)), "every row exactly once"
    sorted_lengths = lengths[order]
    assert np.all(np.diff(sorted_lengths) <= 0), "longest first"
    for a, b in zip(order[:-1], order[1:]):
        if lengths[a] == lengths[b]:
            assert a < b, "ties keep input order"
    assert offsets[0] == 0 and offsets[-1] == n and np.all(np.diff(offsets) > 0)
    for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        rows = end - start
        longest = int(sorted_lengths[start : end].max())
        assert rows <= max_rows
        assert rows * longest <= budget or rows == 1, "budget respected unless the row is alone"
        if end < n:  # greedy: the next row would break a limit
            assert rows + 1 > max_rows or (rows + 1) * longest > budget


def test_hand_worked_example(ext):
    # sorted: 5(1) 5(3) 3(0) 2(4) 1(2); [5,5,3] pads to 15 > 10, so cut after two rows; [3,2,1] pads to 9
    lengths = np.array([3, 5, 1, 5, 2], dtype=np.int64)
    for packer in (ext.pack_batches, pack_batches, pack_batches_reference):
        order, offsets = packer(lengths, 10, 3)
        assert order.tolist() == [1, 3, 0, 4, 2]
        assert offsets.tolist() == [0, 2, 5]


def test_max_batch_size_cuts_before_budget(ext):
    order, offsets = ext.pack_batches(np.full(7, 2, dtype=np.int64), 1000, 3)
    assert order.tolist() == list(range(7))
    assert offsets.tolist() == [0, 3, 6, 7]


@pytest.mark.parametrize("seed", range(60))
def test_cpp_equals_reference_on_random_lengths(ext, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    max_length = int(rng.choice([1, 8, 128, 512]))
    lengths = rng.integers(0, max_length + 1, size=n, dtype=np.int64)
    if seed % 3 == 0:  # many ties: few distinct lengths
        lengths = rng.choice(np.array([0, 7, 7, 64]), size=n).astype(np.int64)
    budget = int(rng.integers(1, 4 * max_length + 2))
    max_rows = int(rng.integers(1, 80))
    got = ext.pack_batches(lengths, budget, max_rows)
    want = pack_batches_reference(lengths, budget, max_rows)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    check_contract(lengths, *got, budget, max_rows)


def test_large_input_matches_reference(ext):
    rng = np.random.default_rng(1234)
    lengths = rng.integers(1, 513, size=100_000, dtype=np.int64)
    got = ext.pack_batches(lengths, 16_384, 256)
    want = pack_batches_reference(lengths, 16_384, 256)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    check_contract(lengths, *got, 16_384, 256)


@pytest.mark.parametrize(
    ("lengths", "budget", "max_rows", "want_order", "want_offsets"),
    [
        ([], 10, 4, [], [0]),
        ([7], 10, 4, [0], [0, 1]),
        ([7], 3, 4, [0], [0, 1]),  # one row longer than the budget
        ([4, 4, 4, 4, 4], 12, 10, [0, 1, 2, 3, 4], [0, 3, 5]),  # all equal
        ([20, 1, 30, 2], 10, 8, [2, 0, 3, 1], [0, 1, 2, 4]),  # two rows over budget, each alone
        ([0, 0, 0], 1, 2, [0, 1, 2], [0, 2, 3]),  # empty rows pad to nothing: only max_batch_size cuts
        ([3, 3, 3], 1, 5, [0, 1, 2], [0, 1, 2, 3]),  # budget 1: one row per batch
        ([2, 9, 2], 100, 1, [1, 0, 2], [0, 1, 2, 3]),  # max_batch_size 1
    ],
)
def test_edge_cases(ext, lengths, budget, max_rows, want_order, want_offsets):
    array = np.asarray(lengths, dtype=np.int64)
    for packer in (ext.pack_batches, pack_batches, pack_batches_reference):
        order, offsets = packer(array, budget, max_rows)
        assert order.tolist() == want_order
        assert offsets.tolist() == want_offsets
    check_contract(array, *ext.pack_batches(array, budget, max_rows), budget, max_rows)


def test_huge_lengths_do_not_overflow(ext):
    big = 2**62
    lengths = np.array([big, big, 1, 1], dtype=np.int64)
    got = ext.pack_batches(lengths, 2**63 - 1, 8)
    want = pack_batches_reference(lengths, 2**63 - 1, 8)  # Python ints: exact arithmetic
    np.testing.assert_array_equal(got[1], want[1])
    assert got[1].tolist() == [0, 1, 2, 4]  # 2 * 2**62 wraps negative in int64


def test_wrapper_accepts_lists_int32_tensors_and_strided_arrays(ext):
    lengths = np.array([5, 1, 9, 9, 3, 2, 8], dtype=np.int64)
    want = ext.pack_batches(lengths, 20, 3)
    for variant in (lengths.tolist(), lengths.astype(np.int32), torch.from_numpy(lengths)):
        got = pack_batches(variant, 20, 3)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    strided = np.repeat(lengths, 2)[::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(ext.pack_batches(strided, 20, 3)[0], want[0])


def test_iter_batches_covers_rows_in_packed_order(ext):
    order, offsets = ext.pack_batches(np.array([3, 5, 1, 5, 2], dtype=np.int64), 10, 3)
    assert [batch.tolist() for batch in iter_batches(order, offsets)] == [[1, 3], [0, 4, 2]]


@pytest.mark.parametrize(
    ("lengths", "budget", "max_rows"),
    [([3, -1, 2], 10, 4), ([3, 2], 0, 4), ([3, 2], -5, 4), ([3, 2], 10, 0)],
)
def test_bad_input_raises_value_error(ext, lengths, budget, max_rows):
    array = np.asarray(lengths, dtype=np.int64)
    for packer in (ext.pack_batches, pack_batches, pack_batches_reference):
        with pytest.raises(ValueError):
            packer(array, budget, max_rows)


def test_bad_shapes_and_dtypes_raise_value_error(ext):
    with pytest.raises(ValueError, match="1-D"):
        pack_batches(np.ones((2, 3), dtype=np.int64), 10, 4)
    with pytest.raises(ValueError, match="1-D"):
        ext.pack_batches(np.ones((2, 3), dtype=np.int64), 10, 4)
    with pytest.raises(ValueError, match="integers"):
        pack_batches(np.array([1.5, 2.0]), 10, 4)
    with pytest.raises(TypeError):  # no silent float truncation in the binding either
        ext.pack_batches(np.array([1.5, 2.0]), 10, 4)


def test_restore_order_round_trips_numpy_torch_and_lists(ext):
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 50, size=37, dtype=np.int64)
    order, offsets = ext.pack_batches(lengths, 120, 6)
    # "model outputs" computed batch by batch in packed order: a row's value depends on the row only
    per_batch = [np.stack([lengths[b] * 10, -lengths[b]], axis=1) for b in iter_batches(order, offsets)]
    packed = np.concatenate(per_batch)
    expected = np.stack([lengths * 10, -lengths], axis=1)
    np.testing.assert_array_equal(restore_order(packed, order), expected)
    restored_tensor = restore_order(torch.from_numpy(packed), order)
    assert isinstance(restored_tensor, torch.Tensor)
    np.testing.assert_array_equal(restored_tensor.numpy(), expected)
    labels = [f"row{i}" for i in order.tolist()]
    assert restore_order(labels, order) == [f"row{i}" for i in range(len(lengths))]


def test_restore_order_is_the_inverse_of_packing(ext):
    values = np.arange(11) * 3
    order = np.random.default_rng(3).permutation(11).astype(np.int64)
    np.testing.assert_array_equal(restore_order(values[order], order), values)
    assert restore_order([], np.zeros(0, dtype=np.int64)) == []


def test_restore_order_rejects_a_wrong_order():
    with pytest.raises(ValueError, match="entries"):
        restore_order(np.zeros(3), [0, 1])
    with pytest.raises(ValueError, match="permutation"):
        restore_order(np.zeros(3), [0, 0, 2])


def test_python_fallback_warns_and_matches(ext, monkeypatch):
    monkeypatch.setattr(batching, "_C", None)
    monkeypatch.setattr(batching, "_warned_fallback", False)
    lengths = np.array([4, 8, 8, 1], dtype=np.int64)
    with pytest.warns(RuntimeWarning, match="not built"):
        got = pack_batches(lengths, 16, 4)
    want = ext.pack_batches(lengths, 16, 4)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_build_info_describes_the_build(ext):
    info = ext.build_info()
    assert set(info) >= {"compiler", "cplusplus", "debug", "openmp", "openmp_max_threads", "pybind11_version"}
    assert info["cplusplus"] >= 201703
    assert isinstance(info["openmp"], bool)
    assert info["openmp_max_threads"] >= 1
