"""Tables of the summary (``compare.summarise``) as data frames and as Markdown, shared by report.md and
the figures so both show the same numbers.

Cell format: ``score (+delta*)`` where the delta is the mean paired delta over seeds against the
no-intermediate setting of the same context, and ``*`` marks a delta whose 95% paired-bootstrap interval
excludes 0 (``?`` when no interval could be computed: evaluation files without per-example scores).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fastxlt.reports.collect import NONE
from fastxlt.reports.compare import AVERAGE, NON_ENGLISH, XTREME, Layout, headline_language, headline_rows

BEST = "best"


def contexts(summary: pd.DataFrame, lay: Layout) -> list[tuple[dict, pd.DataFrame]]:
    """(context values, its part of the summary) for every context, in order of appearance."""
    if not lay.context_axes:
        return [({}, summary)]
    out = []
    for key, part in summary.groupby(lay.context_axes, sort=False, dropna=False):
        values = key if isinstance(key, tuple) else (key,)
        out.append((dict(zip(lay.context_axes, values)), part))
    return out


def context_title(values: dict) -> str:
    shown = [f"{axis}={value}" for axis, value in values.items() if str(value) not in ("", "-")]
    return ", ".join(shown) or "all cells"


def mark(row: pd.Series) -> str:
    """``+1.23*`` / ``-0.40`` / ``+0.50?``: the delta and its significance."""
    delta = row.get("delta")
    if delta is None or (isinstance(delta, float) and math.isnan(delta)):
        return ""
    significant = row.get("significant")
    flag = "?" if significant is None or (isinstance(significant, float) and math.isnan(significant)) else ("*" if significant else "")
    return f"{delta:+.2f}{flag}"


def cell_text(row: pd.Series) -> str:
    delta = mark(row)
    return f"{row['score']:.2f}" + (f" ({delta})" if delta else "")


def oracle_snapshots(summary: pd.DataFrame, lay: Layout) -> dict[tuple, str]:
    """Per context x intermediate setting without its snapshot: the snapshot with the highest mean
    non-English score (mean over tasks; all languages when a task has no English split)."""
    if "snapshot" not in lay.varying_arm_axes:
        return {}
    rows = summary[(summary["intermediate"] != NONE) & (summary["task"] != XTREME)]
    rows = headline_rows(rows)
    keys = lay.context_axes + [axis for axis in lay.arm_axes if axis != "snapshot"]
    best: dict[tuple, str] = {}
    for key, part in rows.groupby(keys, sort=False, dropna=False):
        means = part.groupby("snapshot")["score"].mean()
        best[key if isinstance(key, tuple) else (key,)] = str(means.idxmax())
    return best


def paper_table(part: pd.DataFrame, lay: Layout, oracle: dict[tuple, str]) -> pd.DataFrame:
    """Rows: intermediate settings (dev-selected and oracle snapshot when the snapshot varies); columns:
    target tasks and the XTREME average; cells: language-average score and delta."""
    averages = part[part["language"] == AVERAGE]
    tasks = [task for task in dict.fromkeys(averages["task"]) if task != XTREME]
    columns = tasks + ([XTREME] if (averages["task"] == XTREME).any() else [])
    table: dict[str, dict[str, str]] = {}
    for setting, rows in averages.groupby("setting", sort=False):
        label = _row_label(str(setting), rows.iloc[0], lay, oracle)
        if label is None:
            continue
        table[label] = {task: cell_text(rows[rows["task"] == task].iloc[0]) for task in columns if (rows["task"] == task).any()}
    frame = pd.DataFrame.from_dict(table, orient="index", columns=columns).fillna("")
    frame.index.name = "intermediate"
    return frame


def _row_label(setting: str, row: pd.Series, lay: Layout, oracle: dict[tuple, str]) -> str | None:
    """Which snapshot rows the paper table keeps: 'best' (dev-selected) and the oracle-best one."""
    if "snapshot" not in lay.varying_arm_axes or row["intermediate"] == NONE:
        return setting
    key = tuple(row[axis] for axis in lay.context_axes + [a for a in lay.arm_axes if a != "snapshot"])
    chosen = oracle.get(key)
    snapshot = str(row["snapshot"])
    base = label_without(row, lay, "snapshot")
    if snapshot == BEST and snapshot == chosen:
        return f"{base} (dev-selected = oracle snapshot)"
    if snapshot == BEST:
        return f"{base} (dev-selected snapshot)"
    if snapshot == chosen:
        return f"{base} (oracle snapshot: {snapshot})"
    return None


def label_without(row: pd.Series, lay: Layout, axis: str) -> str:
    """A setting's label without one arm-side axis (e.g. the snapshot, to name a snapshot curve)."""
    extras = [str(row[a]) for a in lay.varying_arm_axes if a != axis and str(row[a]) not in ("-", "")]
    name = str(row["intermediate"])
    return name if name == NONE or not extras else f"{name} [{', '.join(extras)}]"


def language_table(part: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows: languages and averages; columns: settings; cells: mean score +- std over seeds, delta, interval."""
    rows = part[part["task"] == task]
    out: dict[str, dict[str, str]] = {}
    for _, row in rows.iterrows():
        text = "" if np.isnan(row["score"]) else f"{row['score']:.2f}"
        if row["seeds"] > 1 and not np.isnan(row["std"]):
            text += f" ± {row['std']:.2f}"
        delta = mark(row)
        if delta:
            interval = "" if np.isnan(row["low"]) else f" [{row['low']:+.2f}, {row['high']:+.2f}]"
            text += f" (Δ {delta}{interval})"
        out.setdefault(str(row["language"]), {})[str(row["setting"])] = text
    frame = pd.DataFrame.from_dict(out, orient="index").fillna("")
    frame.index.name = "language"
    return frame


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency: pandas' to_markdown needs tabulate)."""
    header = [frame.index.name or ""] + [str(column) for column in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(frame.columns)) + "|"]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index)] + [str(value) for value in row.tolist()]) + " |")
    return "\n".join(lines)


def conclusions(summary: pd.DataFrame, lay: Layout) -> list[str]:
    """One sentence per context, task and setting compared with a baseline: the non-English (else overall)
    average delta with its 95% paired-bootstrap interval and how many seeds it pairs, and what that allows one
    to say -- the printed conclusion of a grid run, true on any CPU because it carries its own uncertainty."""
    sentences = []
    for values, part in contexts(summary, lay):
        where = "" if not values else f" ({context_title(values)})"
        for task, rows in part[part["task"] != XTREME].groupby("task", sort=False):
            chosen = headline_rows(rows)
            label = "non-English average" if headline_language(rows["language"]) == NON_ENGLISH else "average"
            for _, row in chosen[chosen["delta"].notna()].iterrows():
                sentences.append(f"{task}{where}: {row['setting']} changes the {label} by {_with_interval(row)} "
                                 f"over {int(row['paired_seeds'])} paired seed(s); {_reading(row)}")
            sentences += _one_class_warning(task, where, chosen)
    return sentences


ONE_CLASS_SHARE = 90.0  # percent of answers given to one class, on average over languages, seeds and settings


def _one_class_warning(task: str, where: str, chosen: pd.DataFrame) -> list[str]:
    """A warning when the models of a task mostly answer one class: their scores are that class's frequency,
    and deltas between them compare near-constant classifiers (whatever their intervals say)."""
    if "majority_share" not in chosen or chosen["majority_share"].isna().all():
        return []
    share = float(chosen["majority_share"].mean())
    if share < ONE_CLASS_SHARE:
        return []
    return [f"{task}{where}: warning: the models give their most frequent answer to {share:.1f}% of the test "
            "examples on average: near-constant classifiers, whose deltas say little about transfer."]


def _with_interval(row: pd.Series) -> str:
    if pd.isna(row.get("low")):
        return f"{row['delta']:+.2f} points (no interval: evaluation files without per-example scores)"
    return f"{row['delta']:+.2f} points [95% interval {row['low']:+.2f}, {row['high']:+.2f}]"


def _reading(row: pd.Series) -> str:
    if pd.isna(row.get("low")):
        return "its uncertainty is unknown."
    if row["low"] > 0:
        return "the interval excludes 0: a gain on these test examples."
    if row["high"] < 0:
        return "the interval excludes 0: a loss on these test examples."
    return "the interval includes 0: no effect can be told from noise at this size."
