"""Multi-task sampling as a pure function of (seed, batch index).

A phase trains on micro-batches drawn from one task at a time. Which task, and which examples, depend
only on the seed and the global micro-batch index, never on what happened before in this process:
that is what makes a resumed run take exactly the batches an uninterrupted one would have taken, and
what lets each data-parallel rank take its own batches without talking to the others.

Mixing strategies (``rates``):
- ``proportional``: examples-proportional over capped sizes, p_i ∝ min(n_i, cap) (the paper's);
- ``temperature``: p_i ∝ min(n_i, cap)^(1/T);
- ``uniform``: p_i = 1/k.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def mixing_rates(sizes: list[int], strategy: str, cap: int | None = None, temperature: float = 2.0) -> np.ndarray:
    """Sampling probability of each task."""
    if not sizes or any(size <= 0 for size in sizes):
        raise ValueError(f"every task needs at least one training example, got sizes {sizes}")
    capped = np.minimum(np.asarray(sizes, dtype=np.float64), cap if cap is not None else np.inf)
    if strategy == "proportional":
        weights = capped
    elif strategy == "temperature":
        weights = capped ** (1.0 / temperature)
    elif strategy == "uniform":
        weights = np.ones_like(capped)
    else:
        raise ValueError(f"unknown sampler '{strategy}'; choose proportional, temperature or uniform")
    return weights / weights.sum()


class MultiTaskSchedule:
    """Deterministic schedule of (task index, example indices) for every global micro-batch.

    Each task walks through its examples in a fresh seeded permutation per pass (epoch), so every
    example is seen once per pass; task choices are drawn once for the whole phase from the seed.
    """

    def __init__(self, sizes: list[int], rates: np.ndarray, batch_size: int, total_batches: int, seed: int) -> None:
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.total_batches = total_batches
        self.seed = seed
        choice_rng = np.random.default_rng([seed, 0xC401CE])
        self.task_of_batch = choice_rng.choice(len(sizes), size=total_batches, p=rates)
        # occurrence[g] = how many earlier batches drew the same task: the task-local batch counter
        self.occurrence = np.zeros(total_batches, dtype=np.int64)
        for task in range(len(sizes)):
            where = np.flatnonzero(self.task_of_batch == task)
            self.occurrence[where] = np.arange(len(where))

    def batch(self, index: int) -> tuple[int, np.ndarray]:
        if not 0 <= index < self.total_batches:
            raise IndexError(f"batch {index} outside the schedule of {self.total_batches}")
        task = int(self.task_of_batch[index])
        size = self.sizes[task]
        start = int(self.occurrence[index]) * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        passes, offsets = np.divmod(positions, size)
        indices = np.array([self._permutation(task, int(p))[o] for p, o in zip(passes, offsets)], dtype=np.int64)
        return task, indices

    def task_counts(self) -> np.ndarray:
        return np.bincount(self.task_of_batch, minlength=len(self.sizes))

    @lru_cache(maxsize=64)
    def _permutation(self, task: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, task, epoch]).permutation(self.sizes[task])
