"""PNG figures of a report (matplotlib, Agg backend: no display needed), drawn from the summary table so
they show the same numbers as report.md. Each function returns the written path, or a ``Skipped`` with
the reason (e.g. the axis it plots has a single value), which report.md prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fastxlt.reports.collect import NONE  # noqa: E402
from fastxlt.reports.compare import AVERAGE, XTREME, Layout, headline_rows, is_summary_language  # noqa: E402
from fastxlt.reports.resources import is_low_resource  # noqa: E402
from fastxlt.reports.tables import context_title, label_without  # noqa: E402

DPI = 110


@dataclass(frozen=True)
class Skipped:
    figure: str
    reason: str


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # long row labels and tables stay inside the image
    plt.close(fig)
    return path


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "all"


def _per_language(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[~summary["language"].map(is_summary_language) & (summary["task"] != XTREME)]


def paper_table_figure(table: pd.DataFrame, title: str, path: Path) -> Path:
    """The paper-style table rendered as an image (the same text as report.md)."""
    fig, ax = plt.subplots(figsize=(2.2 + 1.9 * len(table.columns), 0.9 + 0.42 * len(table)))
    ax.axis("off")
    rendered = ax.table(cellText=table.values.tolist(), rowLabels=list(table.index), colLabels=list(table.columns),
                        loc="center", cellLoc="center")  # fmt: skip
    rendered.auto_set_font_size(False)
    rendered.set_fontsize(9)
    rendered.scale(1.0, 1.3)
    ax.set_title(f"{title}\nlanguage-average score (delta vs no intermediate; * = 95% CI excludes 0)", fontsize=10)
    return _save(fig, path)


def delta_heatmap(summary: pd.DataFrame, task: str, path: Path) -> Path | Skipped:
    """Languages x intermediate settings, colour = delta vs no intermediate, '*' = significant."""
    rows = _per_language(summary)
    rows = rows[(rows["task"] == task) & (rows["intermediate"] != NONE) & rows["delta"].notna()]
    if rows.empty:
        return Skipped(f"delta heatmap ({task})", "no intermediate setting has a paired no-intermediate cell")
    rows = rows.assign(row_label=rows["context"] + " | " + rows["setting"] if "context" in rows else rows["setting"])
    labels = list(dict.fromkeys(rows["row_label"]))
    languages = list(dict.fromkeys(rows["language"]))
    grid = np.full((len(labels), len(languages)), np.nan)
    stars = np.full(grid.shape, "", dtype=object)
    for _, row in rows.iterrows():
        i, j = labels.index(row["row_label"]), languages.index(row["language"])
        grid[i, j] = row["delta"]
        stars[i, j] = "*" if row["significant"] is True else ""
    limit = float(np.nanmax(np.abs(grid))) or 1.0
    fig, ax = plt.subplots(figsize=(1.6 + 0.62 * len(languages), 1.4 + 0.5 * len(labels)))
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(labels)):
        for j in range(len(languages)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.1f}{stars[i, j]}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("language")
    ax.set_ylabel("intermediate setting")
    ax.set_title(f"{task}: delta vs no intermediate\n(score points; * = 95% CI excludes 0)")
    fig.colorbar(image, ax=ax, label="delta (score points)")
    return _save(fig, path)


def _size_order(values) -> list[str]:
    def key(value: str):
        try:
            return (0, float(value))
        except ValueError:
            return (1, 0.0)

    return sorted({str(v) for v in values}, key=key)


def gain_vs_size_points(summary: pd.DataFrame, lay: Layout) -> pd.DataFrame | Skipped:
    """The points of the gain-vs-size figure: per panel (the other context axes and the task) and intermediate
    setting, the headline average's delta vs no intermediate at each target size, with its 95% paired-bootstrap
    interval (``low``, ``high``) -- the interval of the average itself, which per-language intervals cannot give."""
    name = "gain vs target size"
    if "target_size" not in lay.context_axes or summary["target_size"].nunique() < 2:
        return Skipped(name, "the target_size axis has a single value")
    rows = headline_rows(summary[summary["task"] != XTREME])
    rows = rows[(rows["intermediate"] != NONE) & rows["delta"].notna()]
    if rows.empty:
        return Skipped(name, "no intermediate setting has a paired no-intermediate cell")
    others = [axis for axis in lay.context_axes if axis != "target_size"]
    panel_keys = others + ["task"]
    rows = rows.assign(panel=[_panel_title(tuple(row[k] for k in panel_keys)) for _, row in rows.iterrows()])
    if rows.groupby(["panel", "setting"], sort=False)["target_size"].nunique().max() < 2:
        return Skipped(name, "no task was trained at two target sizes (each target at its own size)")
    columns = ["panel", "setting", "target_size", "language", "delta", "low", "high"]
    return rows[columns].assign(target_size=rows["target_size"].astype(str)).reset_index(drop=True)


def gain_vs_size(summary: pd.DataFrame, lay: Layout, path: Path) -> Path | Skipped:
    """Delta of each intermediate setting vs no intermediate against the target training-set size, one panel per
    task, with the 95% intervals as error bars: question 1's figure (does the gain shrink as target data grows?)."""
    points = gain_vs_size_points(summary, lay)
    if isinstance(points, Skipped):
        return points
    panels = list(points.groupby("panel", sort=False))
    sizes = _size_order(points["target_size"])
    settings = list(dict.fromkeys(points["setting"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.0), squeeze=False)
    for ax, (panel, part) in zip(axes[0], panels):
        for s, setting in enumerate(settings):
            line = part[part["setting"] == setting].set_index("target_size").reindex(sizes)
            if line["delta"].notna().sum() == 0:
                continue
            xs = np.arange(len(sizes)) + (s - (len(settings) - 1) / 2) * 0.06  # nudged apart: bars stay readable
            errors = [(line["delta"] - line["low"]).clip(lower=0), (line["high"] - line["delta"]).clip(lower=0)]
            ax.errorbar(xs, line["delta"], yerr=errors, marker="o", capsize=3, label=str(setting))
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_xlabel("target training examples (English)")
        ax.set_ylabel(f"{part['language'].iloc[0]}: delta vs no intermediate")
        ax.set_title(panel, fontsize=9)
        ax.legend(title="intermediate", fontsize=8)
    fig.suptitle("Gain of intermediate training vs target size (bars: 95% paired-bootstrap intervals)", fontsize=9)
    return _save(fig, path)


def _panel_title(key) -> str:
    """A panel's group key as 'a | b', leaving out empty parts (an axis a grid does not set)."""
    parts = key if isinstance(key, tuple) else (key,)
    return " | ".join(str(part) for part in parts if str(part) not in ("", "nan", "None"))


def score_vs_steps(summary: pd.DataFrame, lay: Layout, path: Path) -> Path | Skipped:
    """Zero-shot score per language against intermediate optimizer steps (no intermediate = step 0);
    low-resource languages (Joshi class 0-2) drawn in colour, the others in grey."""
    name = "score vs intermediate steps"
    rows = _per_language(summary)
    arm = rows[(rows["intermediate"] != NONE) & rows["steps"].notna()]
    if arm["steps"].nunique() < 2:
        return Skipped(name, "fewer than two distinct intermediate step counts (no snapshot / duration axis)")
    arm = arm.assign(curve=[label_without(row, lay, "snapshot") for _, row in arm.iterrows()])
    panels = list(arm.groupby(lay.context_axes + ["task", "curve"] if lay.context_axes else ["task", "curve"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.0), squeeze=False)
    for ax, (key, part) in zip(axes[0], panels):
        context = dict(zip(lay.context_axes, key[: len(lay.context_axes)])) if lay.context_axes else {}
        baseline = rows[(rows["intermediate"] == NONE) & (rows["task"] == part["task"].iloc[0])]
        for axis, value in context.items():
            baseline = baseline[baseline[axis] == value]
        for language, curve in part.groupby("language", sort=False):
            points = curve.groupby("steps")["score"].mean().sort_index()
            start = baseline[baseline["language"] == language]["score"]
            xs = ([0.0] if len(start) else []) + list(points.index)
            ys = ([float(start.mean())] if len(start) else []) + list(points.values)
            low = is_low_resource(str(language))
            ax.plot(xs, ys, marker="o" if low else ".", linewidth=2.0 if low else 0.8, color=None if low else "0.65",
                    label=f"{language} (low-resource)" if low else (language if language == "en" else None), zorder=3 if low else 2)  # fmt: skip
            ax.annotate(str(language), (xs[-1], ys[-1]), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        va="center", color="black" if low else "0.4")  # fmt: skip
        ax.set_xlabel("intermediate training steps (0 = no intermediate)")
        ax.set_ylabel("zero-shot score")
        ax.set_title(_panel_title(key), fontsize=9)
        ax.legend(fontsize=7, title="grey: other languages", title_fontsize=7)
    fig.suptitle("Zero-shot score vs intermediate-training duration", fontsize=10)
    return _save(fig, path)


def model_curves(summary: pd.DataFrame, lay: Layout, path: Path) -> Path | Skipped:
    """Language-average score per model (axis order), one line per intermediate setting, per task."""
    name = "model-size curves"
    if "model" not in lay.context_axes or summary["model"].nunique() < 2:
        return Skipped(name, "the model axis has a single value")
    rows = summary[summary["language"] == AVERAGE]
    models = list(dict.fromkeys(rows["model"]))
    tasks = list(dict.fromkeys(rows["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = rows[rows["task"] == task]
        for setting, curve in part.groupby("setting", sort=False):
            means = curve.groupby("model")["score"].mean().reindex(models)
            ax.plot(range(len(models)), means.values, marker="o", label=str(setting))
        ax.set_xticks(range(len(models)), [Path(m).name for m in models], rotation=20, fontsize=8)
        ax.set_xlabel("model (axis order)")
        ax.set_ylabel("language-average score")
        ax.set_title(task)
        ax.legend(fontsize=7, title="intermediate")
    fig.suptitle("Model size x intermediate setting", fontsize=10)
    return _save(fig, path)


def mono_vs_multi(summary: pd.DataFrame, lay: Layout, path: Path) -> Path | Skipped:
    """Non-English average delta of each intermediate task set trained on English only vs on several
    languages, with the 95% intervals as error bars."""
    name = "mono vs multilingual intermediate data"
    if "intermediate_languages" not in lay.varying_arm_axes:
        return Skipped(name, "the intermediate_languages axis has a single value")
    rows = summary[(summary["intermediate"] != NONE) & (summary["task"] != XTREME) & summary["delta"].notna()]
    rows = headline_rows(rows)
    if rows.empty:
        return Skipped(name, "no intermediate setting has a paired no-intermediate cell")
    groups = list(rows.groupby(["task", "intermediate"], sort=False))
    variants = list(dict.fromkeys(rows["intermediate_languages"]))
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * len(groups), 3.8))
    width = 0.8 / len(variants)
    for v, variant in enumerate(variants):
        values, errors = [], [[], []]
        for _, part in groups:
            chosen = part[part["intermediate_languages"] == variant]
            delta = float(chosen["delta"].mean()) if len(chosen) else np.nan
            values.append(delta)
            low, high = float(chosen["low"].mean()) if len(chosen) else np.nan, float(chosen["high"].mean()) if len(chosen) else np.nan
            errors[0].append(max(delta - low, 0) if not np.isnan(low) else 0)
            errors[1].append(max(high - delta, 0) if not np.isnan(high) else 0)
        ax.bar(np.arange(len(groups)) + v * width, values, width, yerr=errors, capsize=3, label=str(variant))
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [f"{t}\n{i}" for (t, i), _ in groups], fontsize=8)
    ax.set_ylabel("non-English delta vs no intermediate (points)")
    ax.set_xlabel("target task / intermediate task set")
    ax.set_title("Monolingual vs multilingual intermediate data (bars: 95% CI)")
    ax.legend(title="intermediate languages", fontsize=8)
    return _save(fig, path)


def context_names(summary: pd.DataFrame, lay: Layout) -> pd.Series:
    """One readable context label per summary row (for figure rows that mix contexts)."""
    if not lay.context_axes:
        return pd.Series([""] * len(summary), index=summary.index)
    return pd.Series([context_title({axis: row[axis] for axis in lay.context_axes}) for _, row in summary.iterrows()],
                     index=summary.index)  # fmt: skip


def learning_curve(curves, path: Path) -> Path | Skipped:
    """One phase: train loss (and learning rate) against optimizer steps, and the dev scores at each evaluation."""
    loss, rate = curves.scalars.get("train/loss", []), curves.scalars.get("train/learning_rate", [])
    dev = {tag[4:]: points for tag, points in curves.scalars.items() if tag.startswith("dev/")}
    if not loss and not dev:
        return Skipped(f"learning curve of {curves.name}", "the phase recorded no training loss or dev score")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if loss:
        left.plot(*zip(*loss), color="tab:blue", label="train loss")
        left.set_ylabel("train loss")
    if rate:
        twin = left.twinx()
        twin.plot(*zip(*rate), color="tab:gray", linestyle=":", label="learning rate")
        twin.set_ylabel("learning rate")
    for task, points in sorted(dev.items(), key=lambda item: item[0] != "mean"):
        right.plot(*zip(*points), marker="o", label=task, linewidth=2.0 if task == "mean" else 1.0)
    right.set_ylabel("English dev score")
    if dev:
        right.legend(fontsize=8)
    for axis in (left, right):
        axis.set_xlabel("optimizer step")
    fig.suptitle(f"{curves.name} ({curves.source})", fontsize=10)
    return _save(fig, path)
