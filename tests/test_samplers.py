"""Multi-task sampling: the mixing rates match their definitions and the schedule is a pure function of the seed."""

from __future__ import annotations

import numpy as np
import pytest

from fastxlt.training.samplers import MultiTaskSchedule, mixing_rates


def test_examples_proportional_with_cap_matches_hand_computation():
    rates = mixing_rates([100, 1000, 10_000], "proportional", cap=1000)
    np.testing.assert_allclose(rates, np.array([100, 1000, 1000]) / 2100)


def test_temperature_and_uniform():
    rates = mixing_rates([100, 400], "temperature", cap=None, temperature=2.0)
    np.testing.assert_allclose(rates, [10 / 30, 20 / 30])
    np.testing.assert_allclose(mixing_rates([5, 50, 500], "uniform"), [1 / 3] * 3)
    with pytest.raises(ValueError, match="unknown sampler"):
        mixing_rates([1], "random")
    with pytest.raises(ValueError, match="at least one"):
        mixing_rates([3, 0], "uniform")


def test_schedule_is_deterministic_and_covers_each_task_once_per_pass():
    sizes = [10, 7]
    rates = mixing_rates(sizes, "proportional")
    a = MultiTaskSchedule(sizes, rates, batch_size=3, total_batches=200, seed=5)
    b = MultiTaskSchedule(sizes, rates, batch_size=3, total_batches=200, seed=5)
    c = MultiTaskSchedule(sizes, rates, batch_size=3, total_batches=200, seed=6)
    batches_a = [a.batch(i) for i in range(200)]
    assert all(t1 == t2 and np.array_equal(i1, i2) for (t1, i1), (t2, i2) in zip(batches_a, (b.batch(i) for i in range(200))))
    assert any(t1 != t2 or not np.array_equal(i1, i2) for (t1, i1), (t2, i2) in zip(batches_a, (c.batch(i) for i in range(200))))
    # concatenating a task's batches walks through whole permutations of its examples
    for task, size in enumerate(sizes):
        stream = np.concatenate([idx for t, idx in batches_a if t == task])
        full_passes = len(stream) // size
        assert full_passes >= 2
        for p in range(full_passes):
            assert sorted(stream[p * size : (p + 1) * size]) == list(range(size))


def test_schedule_frequencies_follow_the_rates():
    rates = mixing_rates([1000, 3000], "proportional")
    schedule = MultiTaskSchedule([1000, 3000], rates, batch_size=4, total_batches=20_000, seed=0)
    frequencies = schedule.task_counts() / 20_000
    np.testing.assert_allclose(frequencies, [0.25, 0.75], atol=0.015)


def test_a_batch_depends_on_its_index_only():
    """Resumption needs batch(g) to be the same whether or not batches before g were drawn in this process."""
    sizes = [9, 4]
    rates = mixing_rates(sizes, "uniform")
    fresh = MultiTaskSchedule(sizes, rates, batch_size=2, total_batches=50, seed=1)
    walked = MultiTaskSchedule(sizes, rates, batch_size=2, total_batches=50, seed=1)
    for i in range(30):
        walked.batch(i)
    for g in (30, 41, 49):
        t1, i1 = fresh.batch(g)
        t2, i2 = walked.batch(g)
        assert t1 == t2 and np.array_equal(i1, i2)
    with pytest.raises(IndexError):
        fresh.batch(50)


def _padded_tokens(schedule: MultiTaskSchedule, lengths: list[list[int]], batches: int) -> int:
    """Tokens a batch holds once padded to its longest example, summed over the schedule."""
    total = 0
    for index in range(batches):
        task, rows = schedule.batch(index)
        total += len(rows) * max(lengths[task][i] for i in rows)
    return total


def test_length_grouping_sorts_each_groups_examples_into_batches():
    """group_by_length = G: each task's G consecutive batches hold exactly the examples the ungrouped schedule
    puts there (brute-force comparison), cut from their length order, and padding falls."""
    rng = np.random.default_rng(0)
    sizes, batch_size, group, total = [50, 23], 4, 5, 160
    lengths = [rng.integers(5, 200, size=n).tolist() for n in sizes]
    rates = mixing_rates(sizes, "proportional")
    plain = MultiTaskSchedule(sizes, rates, batch_size, total, seed=3)
    grouped = MultiTaskSchedule(sizes, rates, batch_size, total, seed=3, lengths=lengths, group_by_length=group)
    assert [plain.batch(i)[0] for i in range(total)] == [grouped.batch(i)[0] for i in range(total)]
    checked = 0
    for task in range(len(sizes)):
        positions = [i for i in range(total) if plain.batch(i)[0] == task]
        for start in range(0, len(positions) - group + 1, group):
            block = positions[start:start + group]
            before = np.concatenate([plain.batch(i)[1] for i in block])
            after = [grouped.batch(i)[1] for i in block]
            assert sorted(before.tolist()) == sorted(np.concatenate(after).tolist())
            spans = sorted((min(lengths[task][j] for j in rows), max(lengths[task][j] for j in rows)) for rows in after)
            assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))
            checked += 1
    assert checked >= 6
    assert _padded_tokens(grouped, lengths, total) < 0.8 * _padded_tokens(plain, lengths, total)
    fresh = MultiTaskSchedule(sizes, rates, batch_size, total, seed=3, lengths=lengths, group_by_length=group)
    assert np.array_equal(fresh.batch(151)[1], grouped.batch(151)[1])  # still a pure function of the index
    with pytest.raises(ValueError, match="length of every training example"):
        MultiTaskSchedule(sizes, rates, batch_size, total, seed=3, lengths=[lengths[0]], group_by_length=group)
