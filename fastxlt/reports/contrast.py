"""Contrasts: does a setting's gain differ between two values of a context axis?

Question 1 asks whether intermediate training helps more when target data is scarce. The summary gives the gain
(the delta vs no intermediate training) at each target size, each with its interval; the question is about the
*difference* of two gains, ``gain at 250 pairs - gain at 1,000 pairs``, and that difference needs its own interval.

``fastxlt report RUN --contrast target_size=250,1000`` computes it as a paired bootstrap over test examples: the
gain at each size is bootstrapped as in ``fastxlt.reports.compare`` (examples resampled per language, seeds
averaged inside a replicate), and both sizes' replicates use the same resampled indices -- the draws depend only on
the bootstrap seed, the languages and their example counts, and both sizes are scored on the same test examples --
so replicate ``r`` of the contrast is replicate ``r`` of one gain minus replicate ``r`` of the other. The rows land
in ``summary_contrast.csv`` with the summary's columns; the contrasted axis holds ``"250 - 1000"`` and the score
columns are empty (a contrast has no score of its own).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from fastxlt.errors import ConfigError
from fastxlt.reports.collect import NONE, Cell, Collection
from fastxlt.reports.compare import DeltaCache, Layout, baseline_pairs, layout, setting_label, task_deltas
from fastxlt.reports.stats import DEFAULT_REPLICATES, DEFAULT_SEED, percentile_interval

CONTRAST_CSV = "summary_contrast.csv"


def contrasts(collection: Collection, frame: pd.DataFrame, specs: list[tuple[str, str, str]], *,
              groups: dict[str, list[str]] | None = None, baseline: tuple[str, str] | None = None,
              replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED,
              cache: DeltaCache | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per contrast x other context x setting x task x language (and average, group): the first value's
    delta minus the second's, with the paired-bootstrap interval of that difference. The deltas are against no
    intermediate training, or against ``baseline`` (axis, value) as in ``summarise``: with
    ``("intermediate_languages", "en")`` and a model contrast, whether multilingual data's edge over English data
    grows with the model. ``cache``: the one ``summarise`` filled, so that no side is bootstrapped twice."""
    lay = dataclasses.replace(layout(collection, frame), baseline=baseline)
    check_contrasts(collection, frame, specs)
    frame = frame.assign(setting=[setting_label(row, lay) for _, row in frame.iterrows()])
    rows: list[dict] = []
    cache = cache or DeltaCache()
    for axis, first, second in specs:
        rows += _contrast_rows(collection, frame, lay, axis, (first, second), groups or {}, replicates, seed, cache)
    return pd.DataFrame.from_records(rows)


def check_contrasts(collection: Collection, frame: pd.DataFrame, specs: list[tuple[str, str, str]]) -> None:
    """Refuse a contrast on an axis the run does not vary, or a value no cell has (before any work is done)."""
    lay = layout(collection, frame)
    for axis, first, second in specs:
        _check_axis(frame, lay, axis, first, second)


def _check_axis(frame: pd.DataFrame, lay: Layout, axis: str, first: str, second: str) -> None:
    if axis not in lay.context_axes:
        raise ConfigError(f"--contrast {axis}: not an axis this run varies outside the intermediate phase; "
                          f"known: {', '.join(lay.context_axes) or 'none'}")  # fmt: skip
    present = set(frame[axis].astype(str))
    missing = [value for value in (first, second) if value not in present]
    if missing:
        raise ConfigError(f"--contrast {axis}={first},{second}: no cell has {axis}={missing[0]}; "
                          f"this run has {', '.join(sorted(present))}")  # fmt: skip


def _contrast_rows(collection: Collection, frame: pd.DataFrame, lay: Layout, axis: str, values: tuple[str, str],
                   groups: dict[str, list[str]], replicates: int, seed: int, cache: DeltaCache) -> list[dict]:  # fmt: skip
    by_id = {(cell.cell_id, cell.arm): cell for cell in collection.cells}
    others = [name for name in lay.context_axes if name != axis]
    keys = others + [name for name in lay.arm_axes if name in frame.columns] + ["setting"]
    rows = []
    compared = frame if lay.baseline is not None else frame[frame["setting"] != NONE]
    for group_key, group in compared.groupby(keys, sort=False, dropna=False):
        base = dict(zip(keys, group_key if isinstance(group_key, tuple) else (group_key,)))
        for task, task_frame in group.groupby("task", sort=False):
            sides = [task_frame[task_frame[axis].astype(str) == value] for value in values]
            if any(side.empty for side in sides):
                continue
            deltas = [_side_deltas(str(task), side, by_id, collection, lay, groups, replicates, seed, cache) for side in sides]
            if any(delta is None for delta in deltas):
                continue
            (first, first_pairs, first_counts), (second, second_pairs, second_counts) = deltas
            _check_same_examples(str(task), axis, values, first_counts, second_counts)
            label = f"{values[0]} - {values[1]}"
            for language in [name for name in first if name in second]:
                difference = first[language].replicates - second[language].replicates
                low, high = percentile_interval(difference)
                rows.append(dict(base, **{axis: label}, task=task, metric=str(task_frame["metric"].iloc[0]),
                                 language=language, score=np.nan, std=np.nan, delta=first[language].value - second[language].value,
                                 low=low, high=high, significant=bool(low > 0 or high < 0),
                                 paired_seeds=min(first_pairs, second_pairs)))  # fmt: skip
    return rows


def _side_deltas(task: str, side: pd.DataFrame, by_id: dict, collection: Collection, lay: Layout,
                 groups: dict[str, list[str]], replicates: int, seed: int, cache: DeltaCache) -> tuple[dict, int, dict] | None:  # fmt: skip
    """One side's deltas, its number of paired seeds and its per-language example counts; None when it has no
    baseline or no per-example rows."""
    cells = [by_id[(cid, arm)] for cid, arm in side[["cell_id", "arm"]].drop_duplicates().itertuples(index=False)]
    pairs = baseline_pairs(task, cells, collection, lay)
    languages = list(dict.fromkeys(side["language"]))
    deltas = task_deltas(str(side["metric"].iloc[0]), task, languages, pairs, groups=groups, replicates=replicates, seed=seed,
                         cache=cache)  # fmt: skip
    return None if not deltas else (deltas, len(pairs), example_counts(pairs[0][0], task, languages))


def example_counts(cell: Cell, task: str, languages: list[str]) -> dict[str, int]:
    """Per language (in order), how many test examples a cell was scored on."""
    return {language: int(np.asarray(cell.example_rows(task, language)).shape[0]) for language in languages}


def _check_same_examples(task: str, axis: str, values: tuple[str, str], first: dict[str, int], second: dict[str, int]) -> None:
    """Both sides must share the bootstrap's draws: the same languages, in the same order, with the same counts."""
    if list(first.items()) != list(second.items()):
        raise ConfigError(f"--contrast {axis}={values[0]},{values[1]}: {task} was scored on other test examples at "
                          f"{values[0]} ({first}) than at {values[1]} ({second}); a paired contrast needs one test "
                          "set (evaluate both with the same languages and max_examples)")  # fmt: skip
