"""Read run directories into one tidy table: one row per cell x task x language.

Two layouts are understood, from their files alone:

- a grid (``grid.json`` + ``cells/<id>/{cell.json, results.json, eval/...}``): each done cell (its
  ``results.json`` exists) has one arm; cells without results are pending;
- a single run (``results.json`` with the arms ``baseline`` and ``<intermediate tasks>``): each arm is
  treated as a cell whose ``intermediate`` is the arm name (``none`` for the baseline), with the other
  axes read from the run's ``config.yaml``.

Per-example metric rows (``example_scores`` of ``eval/<arm>/<task>/<lang>.json``) are loaded on demand,
for the bootstrap; files written before they existed simply have none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fastxlt.errors import CorruptDataError, DataNotFoundError
from fastxlt.tasks.aggregate import task_score
from fastxlt.experiments.cell_results import read_cell_results
from fastxlt.experiments.grid import value_label
from fastxlt.utils.io import read_json
from fastxlt.utils.run_layout import CELL_FILENAME, CONFIG_FILENAME, GRID_FILENAME, RESULTS_FILENAME, cell_dir, is_grid_dir

NONE = "none"
COLLAPSED = "-"  # a grid's value for an axis that only shapes the intermediate phase, in a cell without one
BASELINE_ARM = "baseline"
# Axes that describe the intermediate phase: a no-intermediate cell is the baseline of every cell that
# differs from it only on these (see fastxlt/experiments/grid.py, INTERMEDIATE_ONLY).
INTERMEDIATE_AXES = ("intermediate", "intermediate_languages", "intermediate_examples", "intermediate_steps", "snapshot")
DEFAULT_AXES = {"model": "", "intermediate": NONE, "intermediate_languages": "en", "snapshot": "best",
                "target": "", "target_size": "all", "seed": 0}  # fmt: skip


@dataclass
class Cell:
    """One finished experiment with one arm: its axis values and where its evaluation files are."""

    cell_id: str
    axes: dict[str, Any]
    directory: Path
    arm: str
    results: dict[str, Any]
    intermediate_steps: int | None = None
    intermediate_dev_score: float | None = None

    def example_rows(self, task: str, language: str) -> np.ndarray | None:
        """The per-example metric rows of one task and language, None when they were not stored."""
        rows = _eval_file(self.directory / "eval" / self.arm / task / f"{language}.json").get("example_scores")
        return None if not rows else np.asarray(rows, dtype=np.float64)


@dataclass
class Collection:
    """Everything a report is built from."""

    name: str
    kind: str  # "grid" or "run"
    axes: dict[str, list[Any]]
    cells: list[Cell]
    pending: list[str] = field(default_factory=list)

    @property
    def axis_names(self) -> list[str]:
        names = list(DEFAULT_AXES)
        for cell in self.cells:
            names += [axis for axis in cell.axes if axis not in names]
        return names


def collect(run_dir: str | Path) -> Collection:
    """The done cells (and names of pending ones) of a grid or a single run directory."""
    run_dir = Path(run_dir)
    _eval_file.cache_clear()  # files may have changed since the last report in this process
    if is_grid_dir(run_dir):
        return _collect_grid(run_dir)
    if (run_dir / RESULTS_FILENAME).is_file():
        return _collect_run(run_dir)
    raise DataNotFoundError(
        f"'{run_dir}' holds neither grid.json nor results.json; pass a grid or run directory "
        "(run it first with fastxlt run --config ...)"
    )


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except ValueError as error:
        raise CorruptDataError(f"'{path}' is not valid JSON ({error}); re-run that cell to rewrite it") from None


def _collect_grid(run_dir: Path) -> Collection:
    grid = _read(run_dir / GRID_FILENAME)
    cells, pending = [], []
    for cell_id in grid.get("cells", []):
        directory = cell_dir(run_dir, cell_id)
        results = read_cell_results(directory)  # None: not done, or damaged (named; `fastxlt run` re-scores it)
        if results is None or not (directory / CELL_FILENAME).is_file():
            pending.append(cell_id)
            continue
        meta = _read(directory / CELL_FILENAME)
        axes = {**_fixed_by_config(directory), **meta.get("axes", {})}
        for arm, arm_results in results.get("arms", {}).items():
            cells.append(Cell(cell_id, _normalised(axes), directory, arm, arm_results,
                              meta.get("intermediate_steps"), meta.get("intermediate_dev_score")))  # fmt: skip
    return Collection(str(grid.get("name", run_dir.name)), "grid", dict(grid.get("axes", {})), cells, pending)


def _collect_run(run_dir: Path) -> Collection:
    results = _read(run_dir / RESULTS_FILENAME)
    config = _run_config(run_dir)
    cells = []
    for arm, arm_results in results.get("arms", {}).items():
        axes = dict(config, intermediate=NONE if arm == BASELINE_ARM else arm)
        cells.append(Cell(arm, _normalised(axes), run_dir, arm, arm_results))
    axes = {"intermediate": [cell.axes["intermediate"] for cell in cells]}
    return Collection(str(results.get("name", run_dir.name)), "run", axes, cells)


def _run_config(run_dir: Path) -> dict[str, Any]:
    """Axis values of a single run, from its resolved config.yaml (defaults where it is absent)."""
    path = run_dir / CONFIG_FILENAME
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    phases = data.get("phases") or {}
    target = phases.get("target") or {}
    intermediate = phases.get("intermediate") or {}
    axes: dict[str, Any] = {"model": (data.get("model") or {}).get("name_or_path", ""), "seed": data.get("seed", 0)}
    if target.get("tasks"):
        axes["target"] = "+".join(target["tasks"])
    if target.get("train_examples"):
        axes["target_size"] = target["train_examples"]
    elif target.get("train_fraction"):
        axes["target_size"] = target["train_fraction"]
    if intermediate.get("train_languages"):
        axes["intermediate_languages"] = "+".join(intermediate["train_languages"])
    return axes


def _fixed_by_config(cell_dir: Path) -> dict[str, Any]:
    """Model, target task and size that a grid fixes in its base config rather than on an axis (read from the
    cell's resolved config.yaml), so a grid at one size of 500 is not labelled "all", and its model column is
    filled (``synthetic``, or a directory's name, as a model axis labels it)."""
    fixed = _run_config(cell_dir)
    if fixed.get("model"):
        fixed["model"] = value_label("model", fixed["model"])
    return {axis: fixed[axis] for axis in ("model", "target", "target_size") if axis in fixed}


def _normalised(axes: dict[str, Any]) -> dict[str, Any]:
    """Every default axis present; list values joined with '+' (as the grid labels them)."""
    out = dict(DEFAULT_AXES)
    for axis, value in axes.items():
        out[axis] = "+".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    if out["intermediate"] in (None, "", []):
        out["intermediate"] = NONE
    return out


def results_frame(collection: Collection) -> pd.DataFrame:
    """The tidy table: one row per cell x evaluated task x language, with the task score (XTREME's:
    primary metric, (F1 + EM) / 2 for span QA), the metric name and the number of test examples."""
    records = []
    axis_names = collection.axis_names
    for cell in collection.cells:
        for task, task_results in cell.results.get("tasks", {}).items():
            metric = task_results["metric"]
            for language, scores in task_results["languages"].items():
                record = {axis: cell.axes.get(axis, DEFAULT_AXES.get(axis, "")) for axis in axis_names}
                record.update(cell_id=cell.cell_id, arm=cell.arm, task=task, language=language, metric=metric,
                              score=float(task_score(metric, scores)), examples=_examples(cell, task, language),
                              majority_share=majority_share(cell, task, language),
                              steps=cell.intermediate_steps, dev_score=cell.intermediate_dev_score)  # fmt: skip
                if not record.get("target"):
                    record["target"] = task
                records.append(record)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return frame
    for axis in axis_names:  # one dtype per axis column (sizes may mix 250 and "all")
        if axis != "seed":
            frame[axis] = frame[axis].astype(str)
    return frame


def majority_share(cell: Cell, task: str, language: str) -> float | None:
    """Percent of the test examples given the cell's most frequent answer, for tasks that answer with a class or
    a choice (integer predictions); None otherwise. Near 100 the model answers one class whatever the input:
    its score is the class's frequency, and deltas between such models compare constant classifiers."""
    predictions = _eval_file(cell.directory / "eval" / cell.arm / task / f"{language}.json").get("predictions")
    if not predictions or not all(isinstance(p, int) and not isinstance(p, bool) for p in predictions):
        return None
    return 100.0 * Counter(predictions).most_common(1)[0][1] / len(predictions)


def _examples(cell: Cell, task: str, language: str) -> int | None:
    value = _eval_file(cell.directory / "eval" / cell.arm / task / f"{language}.json").get("examples")
    return int(value) if value is not None else None


@lru_cache(maxsize=8192)
def _eval_file(path: Path) -> dict[str, Any]:
    """A per-language evaluation file, read once per report ({} when absent or damaged)."""
    try:
        return read_json(path) if path.is_file() else {}
    except ValueError:
        return {}
