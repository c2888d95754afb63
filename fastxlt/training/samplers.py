"""Multi-task sampling as a pure function of (seed, batch index).

A phase trains on micro-batches drawn from one task at a time. Which task, and which examples, depend
only on the seed and the global micro-batch index, never on what happened before in this process:
that is what makes a resumed run take exactly the batches an uninterrupted one would have taken, and
what lets each data-parallel rank take its own batches without talking to the others.

Length grouping (``group_by_length`` = G > 0): a task's micro-batches are taken G at a time; the G x batch_size
examples that the ungrouped schedule puts in them are sorted by length, cut into G batches again, and those
batches are shuffled (seeded by the group). Every example stays in the same stretch of training, batches hold
examples of similar length (far less padding), and the schedule is still a pure function of the index.

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

    def __init__(self, sizes: list[int], rates: np.ndarray, batch_size: int, total_batches: int, seed: int,
                 *, lengths: list[list[int]] | None = None, group_by_length: int = 0) -> None:
        if group_by_length and (lengths is None or [len(rows) for rows in lengths] != list(sizes)):
            raise ValueError("group_by_length needs the length of every training example of every task")
        self.lengths = [np.asarray(rows) for rows in lengths] if group_by_length else None
        self.group_by_length = group_by_length
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
        occurrence = int(self.occurrence[index])
        if self.group_by_length:
            group, slot = divmod(occurrence, self.group_by_length)
            return task, self._length_group(task, group)[slot]
        return task, self._stream(task, occurrence * self.batch_size, self.batch_size)

    def _stream(self, task: int, start: int, count: int) -> np.ndarray:
        """Examples at positions [start, start + count) of the task's stream of seeded per-pass permutations."""
        positions = np.arange(start, start + count)
        passes, offsets = np.divmod(positions, self.sizes[task])
        return np.array([self._permutation(task, int(p))[o] for p, o in zip(passes, offsets)], dtype=np.int64)

    @lru_cache(maxsize=64)
    def _length_group(self, task: int, group: int) -> list[np.ndarray]:
        """The ``group_by_length`` batches of one group: its examples sorted by length, re-cut, shuffled."""
        count = self.group_by_length * self.batch_size
        pool = self._stream(task, group * count, count)
        rng = np.random.default_rng([self.seed, task, group, 0x1E26])
        return group_batches_by_length(pool, self.lengths[task], self.batch_size, rng)

    def task_counts(self) -> np.ndarray:
        return np.bincount(self.task_of_batch, minlength=len(self.sizes))

    @lru_cache(maxsize=64)
    def _permutation(self, task: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, task, epoch]).permutation(self.sizes[task])


def group_batches_by_length(pool: np.ndarray, lengths: np.ndarray, batch_size: int,
                            rng: np.random.Generator) -> list[np.ndarray]:
    """``pool``'s examples sorted by length (ties in pool order), cut into batches of ``batch_size``, in shuffled order."""
    ordered = pool[np.argsort(np.asarray(lengths)[pool], kind="stable")]
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
