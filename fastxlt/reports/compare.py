"""Pair every intermediate cell with its no-intermediate baseline and summarise over seeds.

Vocabulary used by the tables and figures:

- *arm-side axes*: the axes that describe the intermediate phase (``intermediate``, its languages,
  its snapshot, ...). A no-intermediate cell is the baseline of every cell that has the same value on
  every other axis (its own value of an arm-side axis may be ``-``, the grid's collapsed value);
- *setting*: the arm-side values of a cell, as one label (``snli+anli``, ``snli [en+de+fr, step-200]``);
- *context*: the values of the remaining axes except ``seed`` and the target (model, target size, ...).

``summarise`` returns one row per context x setting x task x language (plus ``average`` and
``average (non-English)`` per task and the ``XTREME average`` over tasks): the mean and standard
deviation of the score over seeds, and for intermediate settings the mean paired delta over seeds with
its 95% paired-bootstrap interval (``fastxlt.reports.stats``).

Language groups (``fastxlt report --group low=sw,ur,hi,th``) add two rows per task: ``group low`` (the
group's average) and ``group low - rest`` (its delta minus the other non-English languages' delta, with the
interval of that difference, replicate by replicate): whether a setting helps the group differently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fastxlt.errors import ConfigError
from fastxlt.reports.collect import COLLAPSED, INTERMEDIATE_AXES, NONE, Cell, Collection
from fastxlt.reports.stats import (
    DEFAULT_REPLICATES,
    DEFAULT_SEED,
    Delta,
    PairedSample,
    combine,
    paired_bootstrap,
    percentile_interval,
    seed_summary,
)
from fastxlt.tasks.aggregate import task_score

AVERAGE = "average"
NON_ENGLISH = "average (non-English)"
XTREME = "XTREME average"
SUMMARY_LANGUAGES = (AVERAGE, NON_ENGLISH)
GROUP_PREFIX = "group "
REST_SUFFIX = " - rest"


def is_summary_language(label: str) -> bool:
    """An average or a language group, not a language: kept out of per-language figures."""
    return label in SUMMARY_LANGUAGES or str(label).startswith(GROUP_PREFIX)


def headline_language(languages: pd.Series) -> str:
    """The label of a task's headline number: its non-English average where the task has one (a zero-shot
    claim is about the languages not trained on), else its average over all languages."""
    return NON_ENGLISH if (languages == NON_ENGLISH).any() else AVERAGE


def headline_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Each task's headline rows (see `headline_language`), chosen per task, so that a task evaluated without
    English keeps its plain average beside tasks that have a non-English one."""
    chosen = summary.groupby("task", sort=False)["language"].transform(headline_language)
    return summary[summary["language"] == chosen]


@dataclass(frozen=True)
class Layout:
    """Which axes are arm-side, which form the context, and which of them vary in this collection."""

    arm_axes: list[str]
    context_axes: list[str]
    varying_arm_axes: list[str]
    # (axis, value) of the cells every other cell is compared with; None: the no-intermediate cells
    baseline: tuple[str, str] | None = None


def layout(collection: Collection, frame: pd.DataFrame) -> Layout:
    names = [axis for axis in collection.axis_names if axis in frame.columns]
    collapsed = {axis for cell in collection.cells for axis, value in cell.axes.items() if value == COLLAPSED}
    arm_axes = [axis for axis in names if axis in INTERMEDIATE_AXES or axis in collapsed or axis.startswith("phases.intermediate")]
    context = [axis for axis in names if axis not in arm_axes and axis not in ("seed", "target")]
    varying = [axis for axis in arm_axes if axis != "intermediate" and frame[axis][frame[axis] != COLLAPSED].nunique() > 1]
    return Layout(arm_axes, context, varying)


def setting_label(row: pd.Series | dict, lay: Layout) -> str:
    """``intermediate`` plus the varying arm-side values in brackets (none stays ``none``)."""
    name = str(row["intermediate"])
    extras = [str(row[axis]) for axis in lay.varying_arm_axes if str(row[axis]) not in (COLLAPSED, "")]
    return name if name == NONE or not extras else f"{name} [{', '.join(extras)}]"


def find_baseline(cell: Cell, cells: Sequence[Cell], lay: Layout) -> Cell | None:
    """The no-intermediate cell with the same seed and other axes (arm-side ones equal or collapsed); with
    ``lay.baseline`` (axis, value), the cell with that value and every other axis equal (None for itself)."""
    if lay.baseline is not None:
        return _chosen_baseline(cell, cells, *lay.baseline)
    for other in cells:
        if other.axes.get("intermediate") != NONE:
            continue
        same = all(
            str(other.axes.get(axis)) == str(cell.axes.get(axis))
            or (axis in lay.arm_axes and (axis == "intermediate" or other.axes.get(axis) == COLLAPSED))
            for axis in set(cell.axes) | set(other.axes)
        )
        if same:
            return other
    return None


def _chosen_baseline(cell: Cell, cells: Sequence[Cell], axis: str, value: str) -> Cell | None:
    """The cell with ``axis == value`` and the same values on every other axis; None when ``cell`` is one."""
    if str(cell.axes.get(axis)) == value:
        return None
    for other in cells:
        if str(other.axes.get(axis)) != value:
            continue
        if all(str(other.axes.get(name)) == str(cell.axes.get(name)) for name in set(cell.axes) | set(other.axes) if name != axis):
            return other
    return None


def summarise(collection: Collection, frame: pd.DataFrame, *, replicates: int = DEFAULT_REPLICATES,
              seed: int = DEFAULT_SEED, groups: dict[str, list[str]] | None = None,
              baseline: tuple[str, str] | None = None, cache: DeltaCache | None = None) -> tuple[pd.DataFrame, Layout]:  # fmt: skip
    """The summary table described in the module docstring, and the layout it was grouped by. ``baseline``
    (axis, value) compares every cell with the cell that has that value instead of the no-intermediate one
    (English vs multilingual intermediate data: ``("intermediate_languages", "en")``). ``cache`` keeps the
    bootstraps for a later caller on the same cells (the report's contrasts)."""
    lay = dataclasses.replace(layout(collection, frame), baseline=baseline)
    if baseline is not None and baseline[0] not in frame.columns:
        raise ConfigError(f"--baseline {baseline[0]}={baseline[1]}: this run has no axis '{baseline[0]}'")
    frame = frame.assign(setting=[setting_label(row, lay) for _, row in frame.iterrows()])
    by_id = {(cell.cell_id, cell.arm): cell for cell in collection.cells}
    keys = lay.context_axes + [axis for axis in lay.arm_axes if axis in frame.columns] + ["setting"]
    rows: list[dict] = []
    for group_key, group in frame.groupby(keys, sort=False, dropna=False):
        base = dict(zip(keys, group_key if isinstance(group_key, tuple) else (group_key,)))
        task_deltas: list[Delta | None] = []
        task_rows: list[list[dict]] = []
        for task, task_frame in group.groupby("task", sort=False):
            cells = [by_id[(cid, arm)] for cid, arm in task_frame[["cell_id", "arm"]].drop_duplicates().itertuples(index=False)]
            task_result = _task_rows(base, str(task), task_frame, cells, collection, lay, replicates, seed, groups or {},
                                     cache or DeltaCache())
            task_rows.append(task_result[0])
            task_deltas.append(task_result[1])
            rows += task_result[0]
        rows += _xtreme_rows(base, task_rows, task_deltas)
    return pd.DataFrame.from_records(rows), lay


def _task_rows(base: dict, task: str, frame: pd.DataFrame, cells: list[Cell], collection: Collection, lay: Layout,
               replicates: int, seed: int, groups: dict[str, list[str]], cache: DeltaCache) -> tuple[list[dict], Delta | None]:  # fmt: skip
    """Per-language rows (and the two averages, and the language groups) of one setting on one task."""
    metric = str(frame["metric"].iloc[0])
    compared = base["setting"] != NONE or lay.baseline is not None
    pairs = baseline_pairs(task, cells, collection, lay) if compared else []
    languages = list(dict.fromkeys(frame["language"]))
    members = _group_members(groups, languages)
    deltas = _with_groups(cache.deltas(metric, task, languages, pairs, replicates, seed), members)
    point = _with_groups(_point_deltas(task, languages, pairs), members)
    rows = []
    for language in languages + [AVERAGE, NON_ENGLISH] + _group_labels(members):
        scores = _scores(frame, language, languages, members)
        if scores is None:
            continue
        mean, std = seed_summary(scores) if scores else (np.nan, np.nan)
        shares = _scores(frame, language, languages, members, column="majority_share") if "majority_share" in frame else []
        row = dict(base, task=task, metric=metric, language=language, score=mean, std=std, seeds=len(scores),
                   majority_share=_mean(pd.Series(shares, dtype=float)), steps=_mean(frame["steps"]),
                   dev_score=_mean(frame["dev_score"]))  # fmt: skip
        row.update(_delta_fields(point.get(language), deltas.get(language) if deltas else None, len(pairs)))
        rows.append(row)
    return rows, (deltas or {}).get(AVERAGE)


def baseline_pairs(task: str, cells: list[Cell], collection: Collection, lay: Layout) -> list[tuple[Cell, Cell]]:
    """(cell, its baseline cell) for the cells whose baseline exists and was scored on ``task``."""
    pairs = [(cell, find_baseline(cell, collection.cells, lay)) for cell in cells]
    return [(cell, baseline) for cell, baseline in pairs if baseline is not None and task in baseline.results.get("tasks", {})]


def task_deltas(metric: str, task: str, languages: list[str], pairs: list[tuple[Cell, Cell]], *, groups: dict[str, list[str]],
                replicates: int, seed: int, cache: DeltaCache | None = None) -> dict[str, Delta] | None:  # fmt: skip
    """Each language's, average's and group's paired-bootstrap delta of ``pairs``, or None without per-example
    rows. The draws depend only on ``seed``, the languages and their example counts, so two calls on the same
    test examples share them and their replicates can be subtracted (``fastxlt.reports.contrast``)."""
    found = (cache or DeltaCache()).deltas(metric, task, languages, pairs, replicates, seed)
    return _with_groups(found, _group_members(groups, languages))


class DeltaCache:
    """Paired-bootstrap deltas already computed in one report, by what determines them: the metric, the task,
    the languages in order, the (cell, baseline) pairs in order, the replicate count and the seed. A contrast's
    two sides are settings the summary has already bootstrapped; without this they were bootstrapped again
    (twice for a side two contrasts share). Scoped to one collection: cell ids repeat across run directories."""

    def __init__(self) -> None:
        self._found: dict[tuple, dict[str, Delta] | None] = {}

    def deltas(self, metric: str, task: str, languages: list[str], pairs: list[tuple[Cell, Cell]], replicates: int,
               seed: int) -> dict[str, Delta] | None:  # fmt: skip
        key = (metric, task, tuple(languages), tuple((cell.cell_id, cell.arm, base.cell_id, base.arm) for cell, base in pairs),
               replicates, seed)  # fmt: skip
        if key not in self._found:
            self._found[key] = bootstrap_deltas(metric, task, languages, pairs, replicates, seed)
        return self._found[key]


def _group_members(groups: dict[str, list[str]], languages: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Group name -> (its languages present here, the other non-English languages), for groups with both."""
    out = {}
    for name, wanted in groups.items():
        inside = [language for language in languages if language in wanted]
        rest = [language for language in languages if language not in wanted and language != "en"]
        if inside and rest:
            out[name] = (inside, rest)
    return out


def _group_labels(members: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    return [label for name in members for label in (GROUP_PREFIX + name, GROUP_PREFIX + name + REST_SUFFIX)]


def _with_groups(deltas: dict | None, members: dict[str, tuple[list[str], list[str]]]) -> dict | None:
    """Add each group's mean delta and its difference from the rest (floats, or Deltas replicate by replicate)."""
    if not deltas:
        return deltas
    out = dict(deltas)
    for name, (inside, rest) in members.items():
        if not all(language in deltas for language in inside + rest):
            continue
        group, other = [deltas[language] for language in inside], [deltas[language] for language in rest]
        if isinstance(group[0], Delta):
            mean_group, mean_rest = combine(group), combine(other)
            difference = mean_group.replicates - mean_rest.replicates
            out[GROUP_PREFIX + name] = mean_group
            out[GROUP_PREFIX + name + REST_SUFFIX] = Delta(mean_group.value - mean_rest.value,
                                                           *percentile_interval(difference), difference)
        else:
            out[GROUP_PREFIX + name] = float(np.mean(group))
            out[GROUP_PREFIX + name + REST_SUFFIX] = float(np.mean(group)) - float(np.mean(other))
    return out


def _scores(frame: pd.DataFrame, language: str, languages: list[str],
            members: dict[str, tuple[list[str], list[str]]] | None = None, column: str = "score") -> list[float] | None:
    """Per-seed scores of one language, or per-seed means over languages for the averages and groups (a group's
    difference from the rest has no score of its own: []); ``column`` another per-language number the same way."""
    members = members or {}
    if language == AVERAGE:
        chosen = languages
    elif language == NON_ENGLISH:
        chosen = [lang for lang in languages if lang != "en"]
        if not chosen or len(chosen) == len(languages):
            return None
    elif language.startswith(GROUP_PREFIX):
        name = language[len(GROUP_PREFIX):]
        if name.endswith(REST_SUFFIX) and name[: -len(REST_SUFFIX)] in members:
            return []
        chosen = members[name][0]
    else:
        chosen = [language]
    part = frame[frame["language"].isin(chosen)]
    return part.groupby("seed", sort=True)[column].mean().tolist()


def _point_deltas(task: str, languages: list[str], pairs: list[tuple[Cell, Cell]]) -> dict[str, float]:
    """Mean over seeds of (arm score - baseline score), from the results files (the tables' numbers)."""
    if not pairs:
        return {}

    per_language: dict[str, list[float]] = {language: [] for language in languages}
    for cell, baseline in pairs:
        arm_task, base_task = cell.results["tasks"][task], baseline.results["tasks"][task]
        for language in languages:
            if language in arm_task["languages"] and language in base_task["languages"]:
                per_language[language].append(task_score(arm_task["metric"], arm_task["languages"][language])
                                              - task_score(base_task["metric"], base_task["languages"][language]))  # fmt: skip
    out = {language: float(np.mean(values)) for language, values in per_language.items() if values}
    if len(out) == len(languages):
        out[AVERAGE] = float(np.mean([out[language] for language in languages]))
        non_english = [language for language in languages if language != "en"]
        if non_english and len(non_english) < len(languages):
            out[NON_ENGLISH] = float(np.mean([out[language] for language in non_english]))
    return out


def bootstrap_deltas(metric: str, task: str, languages: list[str], pairs: list[tuple[Cell, Cell]], replicates: int,
                     seed: int) -> dict[str, Delta] | None:  # fmt: skip
    """Paired-bootstrap deltas, or None when some language lacks per-example rows (older evaluation files)."""
    if not pairs:
        return None
    samples = {}
    for language in languages:
        arm_rows = [cell.example_rows(task, language) for cell, _ in pairs]
        base_rows = [baseline.example_rows(task, language) for _, baseline in pairs]
        if any(rows is None for rows in arm_rows + base_rows):
            return None
        if len({rows.shape[0] for rows in arm_rows + base_rows}) != 1:
            return None
        samples[language] = PairedSample(arm_rows, base_rows)
    return paired_bootstrap(metric, samples, replicates=replicates, seed=seed)


def _delta_fields(point: float | None, delta: Delta | None, pairs: int) -> dict:
    if point is None:
        return {"delta": np.nan, "low": np.nan, "high": np.nan, "significant": None, "paired_seeds": pairs}
    if delta is None:
        return {"delta": point, "low": np.nan, "high": np.nan, "significant": None, "paired_seeds": pairs}
    return {"delta": point, "low": delta.low, "high": delta.high, "significant": delta.significant, "paired_seeds": pairs}


def _xtreme_rows(base: dict, task_rows: list[list[dict]], task_deltas: list[Delta | None]) -> list[dict]:
    """The benchmark average over tasks (of each task's language average), with a combined interval."""
    averages = [next((row for row in rows if row["language"] == AVERAGE), None) for rows in task_rows]
    if len(averages) < 2 or any(row is None for row in averages):
        return []
    row = dict(base, task=XTREME, metric="mean of task scores", language=AVERAGE,
               score=float(np.mean([r["score"] for r in averages])), std=np.nan,
               seeds=min(r["seeds"] for r in averages), steps=averages[0]["steps"], dev_score=averages[0]["dev_score"])  # fmt: skip
    points = [r["delta"] for r in averages]
    point = None if any(np.isnan(p) for p in points) else float(np.mean(points))
    combined = combine(task_deltas) if point is not None and all(d is not None for d in task_deltas) else None
    row.update(_delta_fields(point, combined, min(r["paired_seeds"] for r in averages)))
    return [row]


def _mean(values: pd.Series) -> float:
    numeric = pd.to_numeric(values, errors="coerce").dropna()
    return float(numeric.mean()) if len(numeric) else np.nan


def parse_groups(specs: list[str] | None) -> dict[str, list[str]]:
    """``--group low=sw,ur,hi,th`` (repeatable) -> {'low': ['sw', 'ur', 'hi', 'th']}."""
    groups = {}
    for spec in specs or []:
        name, _, languages = spec.partition("=")
        if not name or not languages:
            raise ConfigError(f"--group {spec!r}: write NAME=LANG,LANG,... (e.g. low=sw,ur,hi,th)")
        groups[name] = [language.strip() for language in languages.split(",") if language.strip()]
    return groups


def parse_baseline(spec: str | None) -> tuple[str, str] | None:
    """``--baseline intermediate_languages=en`` -> ('intermediate_languages', 'en')."""
    if spec is None:
        return None
    axis, _, value = spec.partition("=")
    if not axis or not value:
        raise ConfigError(f"--baseline {spec!r}: write AXIS=VALUE (e.g. intermediate_languages=en)")
    return axis, value


def parse_contrast(spec: str) -> tuple[str, str, str]:
    """``target_size=250,1000`` -> ('target_size', '250', '1000'): the first value's gain minus the second's."""
    axis, _, values = spec.partition("=")
    parts = [value.strip() for value in values.split(",")]
    if not axis or len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ConfigError(f"--contrast {spec!r}: write AXIS=FIRST,SECOND with two different values "
                          "(e.g. target_size=250,1000: the gain at 250 minus the gain at 1000)")  # fmt: skip
    return axis, parts[0], parts[1]
