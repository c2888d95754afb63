"""The run-directory layout: every file and folder name that a run, a grid cell or a phase writes, in one place.

Why one module: the names were string literals in six modules (the runner, the grid table, the report collector,
the learning curves, the XTREME-R suite, the command line), and a reader that spelled one differently from the
writer would silently find nothing. Everything that reads or writes a run directory takes its names from here.

A single experiment is a grid of one cell (two with ``compare_without_intermediate``), so every run directory is
a grid's:

    <run_dir>/grid.json            the grid's axes and cell ids
    <run_dir>/cells/<id>/          one directory per cell: config.yaml (its resolved config), cell.json (its axis
                                   values and phase keys), eval/, results.json (written last: done when it holds results)
    <run_dir>/store/               the phase store, unless grid.store names a shared one
    <run_dir>/results.json         a single experiment's arms side by side (the cells' results merged)
    <run_dir>/report.md, results.csv, summary.csv    what `fastxlt report` writes
    <phase_dir>/phase.json         a finished phase's summary (written last: a phase is done when it exists)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

CONFIG_FILENAME = "config.yaml"
RESULTS_FILENAME = "results.json"
GRID_FILENAME = "grid.json"
CELL_FILENAME = "cell.json"
CELLS_DIRNAME = "cells"
STORE_DIRNAME = "store"
PHASE_DONE = "phase.json"
REPORT_FILENAME = "report.md"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
PHASE_ORDER = ("mlm", "intermediate", "target")  # the order a cell trains its phases in


def cell_dir(run_dir: str | Path, cell_id: str) -> Path:
    """Where a grid cell lives inside its grid's run directory."""
    return Path(run_dir) / CELLS_DIRNAME / cell_id


def default_output_dir(model: str) -> Path:
    """Where ``fastxlt-eval --retrieval`` / ``--suite`` write: <model>/eval for a local model, runs/eval/<name> for a
    hub name."""
    if Path(model).exists():
        return Path(model) / "eval"
    return Path("runs") / "eval" / re.sub(r"[^A-Za-z0-9_.-]+", "_", model)


def is_grid_dir(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a grid (its ``grid.json``) rather than a single run."""
    return (Path(run_dir) / GRID_FILENAME).is_file()


def cell_phase_dirs(run_dir: str | Path, cell_id: str) -> dict[str, Path]:
    """Phase kind -> the store directory of each phase a finished cell trained (from its cell.json), in training
    order. The store is the recorded path (relative to where the grid ran) when it exists from here, else the run
    directory's own ``store/`` (a run directory read from elsewhere, or moved)."""
    record = json.loads((cell_dir(run_dir, cell_id) / CELL_FILENAME).read_text(encoding="utf-8"))
    recorded, keys = record.get("store"), record.get("phase_keys") or {}
    store = Path(recorded) if recorded and Path(recorded).is_dir() else Path(run_dir) / STORE_DIRNAME
    return {kind: store / kind / keys[kind] for kind in PHASE_ORDER if kind in keys}


def final_models(run_dir: str | Path) -> dict[str, Path]:
    """Cell id -> the model directory (``encoder/`` + ``heads.pt``) of its last phase, for every trained cell."""
    models = {}
    for cell_id in json.loads((Path(run_dir) / GRID_FILENAME).read_text(encoding="utf-8"))["cells"]:
        if (cell_dir(run_dir, cell_id) / CELL_FILENAME).is_file():
            phases = cell_phase_dirs(run_dir, cell_id)
            if phases:
                models[cell_id] = list(phases.values())[-1] / "model"
    return models


def arm_phase_dir(run_dir: str | Path, kind: str, arm: str = "none") -> Path:
    """The store directory of a single experiment's ``kind`` phase (mlm, intermediate, target) on ``arm`` (``none``
    or its intermediate task set): from the arm's cell.json once the cell has finished, otherwise the one phase
    of that kind in the run's own store that no finished cell claims (the phase being trained)."""
    run_dir = Path(run_dir)
    cell_id = f"intermediate={arm}"
    if (cell_dir(run_dir, cell_id) / CELL_FILENAME).is_file():
        phases = cell_phase_dirs(run_dir, cell_id)
        if kind not in phases:
            raise FileNotFoundError(f"cell {cell_id} of {run_dir} trained no {kind} phase")
        return phases[kind]
    candidates = sorted(p for p in (run_dir / STORE_DIRNAME / kind).glob("*/") if p.is_dir())
    if len(candidates) > 1:  # leave out the phases finished cells claim
        claimed = {
            path.resolve()
            for other in (run_dir / CELLS_DIRNAME).glob(f"*/{CELL_FILENAME}")
            for path in cell_phase_dirs(run_dir, other.parent.name).values()
        }
        candidates = [p for p in candidates if p.resolve() not in claimed]
    if len(candidates) != 1:
        raise FileNotFoundError(f"{run_dir}: {len(candidates)} candidate {kind} phases in its store; cannot tell arm {arm}'s")
    return candidates[0]
