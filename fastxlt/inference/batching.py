"""Length-sorted token-budget batching for evaluation.

Why: every evaluation batch is padded to its longest row, so the cost of a batch is
``rows x longest row``. Sorting rows longest first and cutting batches so that this padded
size stays under a token budget wastes almost no compute on padding and keeps memory
flat, whatever the mix of short and long inputs in a language. The packer runs in C++
(``fastxlt._C.pack_batches``, csrc/batching.cpp); ``pack_batches_reference`` is the same
algorithm written plainly in Python and serves as the test oracle.

Typical use::

    order, offsets = pack_batches(lengths, token_budget=16384, max_batch_size=256)
    outputs = [predict(rows[order[a:b]]) for a, b in zip(offsets[:-1], offsets[1:])]
    per_row = restore_order(np.concatenate(outputs), order)   # back in input order
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


try:  # the C++ extension is optional (a source tree without a build): the Python packer stands in
    from fastxlt import _C
except ImportError:
    _C = None
_warned_fallback = False


def extension_available() -> bool:
    """True when the compiled packer (``fastxlt._C``) is importable."""
    return _C is not None


def _as_lengths(lengths: Any) -> np.ndarray:
    """Turn a sequence / numpy array / CPU tensor of row lengths into a 1-D int64 array."""
    array = np.asarray(lengths)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {array.shape}; pass one length per row")
    if array.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers, got dtype {array.dtype}; pass token counts")
    return np.ascontiguousarray(array, dtype=np.int64)


def _check_limits(token_budget: int, max_batch_size: int) -> None:
    if int(token_budget) < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    if int(max_batch_size) < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")


def pack_batches(lengths: Any, token_budget: int, max_batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort rows longest first and cut them into padded-size-bounded batches.

    Rows are ordered by length, descending, ties in input order. Consecutive rows form a
    batch while ``rows * longest_row <= token_budget`` and ``rows <= max_batch_size``; a row
    longer than the budget gets a batch of its own.

    Returns ``(order, offsets)`` as int64 arrays: batch ``b`` holds the input rows
    ``order[offsets[b]:offsets[b + 1]]``; ``len(offsets) == number_of_batches + 1``.
    Raises ValueError on negative lengths or a budget / batch size below 1.
    """
    array = _as_lengths(lengths)
    _check_limits(token_budget, max_batch_size)
    if _C is None:
        _warn_fallback()
        return pack_batches_reference(array, token_budget, max_batch_size)
    return _C.pack_batches(array, int(token_budget), int(max_batch_size))


def _warn_fallback() -> None:
    """Say once that the slow path runs, so a missing build does not go unnoticed."""
    global _warned_fallback
    if not _warned_fallback:
        warnings.warn(
            "fastxlt._C is not built; using the Python batch packer. Build it with `make venv` "
            "or `pip install -e .`",
            RuntimeWarning,
            stacklevel=3,
        )
        _warned_fallback = True


def pack_batches_reference(lengths: Any, token_budget: int, max_batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The packing algorithm in plain Python, row by row: the oracle for the C++ packer."""
    values = [int(v) for v in _as_lengths(lengths)]
    _check_limits(token_budget, max_batch_size)
    if any(v < 0 for v in values):
        raise ValueError(f"lengths must be >= 0, got {min(values)}")
    order = sorted(range(len(values)), key=lambda i: -values[i])  # sorted() is stable
    offsets = [0]
    for position in range(1, len(order)):
        start = offsets[-1]
        rows = position - start + 1
        longest = values[order[start]]
        if rows > max_batch_size or rows * longest > token_budget:
            offsets.append(position)
    if order:
        offsets.append(len(order))
    return np.asarray(order, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def iter_batches(order: np.ndarray, offsets: np.ndarray) -> Iterator[np.ndarray]:
    """Yield the input-row indices of each batch, in packed order."""
    for begin, end in zip(offsets[:-1], offsets[1:]):
        yield order[begin:end]


def _check_permutation(order: np.ndarray, size: int) -> None:
    if order.ndim != 1 or len(order) != size:
        raise ValueError(f"order has {len(order)} entries but there are {size} values; pass the order from pack_batches")
    if size and not np.array_equal(np.bincount(order, minlength=size), np.ones(size, dtype=np.int64)):
        raise ValueError("order is not a permutation of range(len(values)); pass the order from pack_batches")


def restore_order(values: Any, order: Any) -> Any:
    """Put per-row outputs computed in packed order back into input order.

    ``values[k]`` belongs to input row ``order[k]``; the result ``out`` has
    ``out[order[k]] == values[k]``. Works along the first axis of numpy arrays and torch
    tensors (the result has the same type) and on any other sequence (a list comes back).
    """
    order = np.asarray(order, dtype=np.int64)
    _check_permutation(order, len(values))
    if isinstance(values, np.ndarray):
        restored = np.empty_like(values)
        restored[order] = values
        return restored
    if _is_tensor(values):
        import torch

        restored = torch.empty_like(values)
        restored[torch.from_numpy(order).to(values.device)] = values
        return restored
    return _restore_sequence(values, order)


def _restore_sequence(values: Sequence[T], order: np.ndarray) -> list[T]:
    restored: list[Any] = [None] * len(values)
    for position, row in enumerate(order.tolist()):
        restored[row] = values[position]
    return restored


def _is_tensor(values: Any) -> bool:
    """Check for a torch tensor without importing torch for numpy-only callers."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(values, torch.Tensor)
