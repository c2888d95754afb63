"""The terminal table of a grid: zero-shot score per language for each intermediate setting, averaged
over seeds, with the difference to no intermediate training. What it shows, with intervals, is said by the
report's conclusion (``fastxlt.reports.tables.conclusions``), printed after it.

Built from the grid run directory alone (``grid.json`` and each done cell's ``cell.json`` and
``results.json``); ``fastxlt.reports.build`` writes the full report (intervals, figures, results.csv).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from fastxlt.tasks.aggregate import task_score
from fastxlt.experiments.cell_results import read_cell_results
from fastxlt.utils.io import read_json
from fastxlt.utils.run_layout import CELL_FILENAME, GRID_FILENAME, cell_dir

NONE_LABEL = "none"
# Axes that tell apart the columns of the table; seeds are averaged over; the rest make separate tables.
COLUMN_AXES = ("intermediate", "snapshot", "intermediate_languages")


def collect_cells(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every done cell: its axis labels and per-language scores of each evaluated task."""
    run_dir = Path(run_dir)
    cells = []
    for cell_id in read_json(run_dir / GRID_FILENAME)["cells"]:
        directory = cell_dir(run_dir, cell_id)
        results = read_cell_results(directory)
        if results is None:
            continue  # not done, or damaged (named on stderr; `fastxlt run` re-scores it)
        record = read_json(directory / CELL_FILENAME)
        (arm,) = results["arms"].values()
        scores = {
            task: {lang: task_score(result["metric"], values) for lang, values in result["languages"].items()}
            for task, result in arm["tasks"].items()
        }
        cells.append({"axes": record["axes"], "scores": scores, "seed": record["axes"].get("seed")})
    return cells


def grid_tables(run_dir: str | Path) -> list[Table]:
    """One table per (task, other axes)."""
    cells = collect_cells(run_dir)
    groups: dict[tuple, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for cell in cells:
        axes = cell["axes"]
        column = " ".join(axes[a] for a in COLUMN_AXES if a in axes and axes[a] != "-") or NONE_LABEL
        if axes.get("intermediate") == NONE_LABEL:
            column = NONE_LABEL
        rest = tuple((a, v) for a, v in axes.items() if a not in COLUMN_AXES and a != "seed")
        for task, per_language in cell["scores"].items():
            groups[(task, rest)][column][cell["seed"]] = per_language
    tables = []
    for (task, rest), columns in groups.items():
        title = f"{task} zero-shot" + "".join(f", {axis} {value}" for axis, value in rest)
        tables.append(_table(title, columns))
    return tables


def _table(title: str, columns: dict[str, dict]) -> Table:
    """``columns``: setting -> seed -> per-language scores. A delta compares seed with seed: the baseline
    is averaged over the seeds its setting has (a cut-short grid may have fewer seeds in some columns)."""
    names = sorted(columns, key=lambda c: (c != NONE_LABEL, c))
    means = {name: _mean_over_seeds(list(columns[name].values())) for name in names}
    seeds = {name: len(columns[name]) for name in names}
    baselines = {
        name: _mean_over_seeds([columns[NONE_LABEL][s] for s in columns[name] if s in columns[NONE_LABEL]] or [{}])
        for name in names if NONE_LABEL in columns
    }
    languages = list(next(iter(means.values())))
    table = Table(title=title + f" (mean of {max(seeds.values())} seed(s))", title_justify="left")
    table.add_column("language")
    for name in names:
        table.add_column(name, justify="right")
        if name != NONE_LABEL and NONE_LABEL in means:
            table.add_column("delta", justify="right")
    rows = {lang: lang for lang in languages}
    zero_shot = [lang for lang in languages if lang != "en"]
    for label, langs in [*((lang, [lang]) for lang in rows), ("average (non-English)", zero_shot)]:
        if not langs:
            continue
        cells = []
        for name in names:
            value = float(np.mean([means[name][lang] for lang in langs]))
            cells.append(f"{value:.2f}")
            if name != NONE_LABEL and NONE_LABEL in means:
                cells.append(_delta(value, baselines[name], langs))
        if label.startswith("average"):
            table.add_section()
        table.add_row(label, *cells, style="bold" if label.startswith("average") else None)
    return table


def _delta(value: float, baseline: dict[str, float], languages: list[str]) -> str:
    if not all(lang in baseline for lang in languages):
        return "n/a"  # no baseline cell with these seeds
    return f"{value - float(np.mean([baseline[lang] for lang in languages])):+.2f}"


def _mean_over_seeds(runs: list[dict[str, float]]) -> dict[str, float]:
    languages = list(runs[0])
    return {lang: float(np.mean([run[lang] for run in runs if lang in run])) for lang in languages}


def print_grid(run_dir: str | Path, console: Console | None = None) -> None:
    console = console or Console()
    for table in grid_tables(run_dir):
        console.print(table)
