"""The run-directory layout: every file and folder name that a run, a grid cell or a phase writes, in one place.

Why one module: the names were string literals in six modules (the runner, the grid table, the report collector,
the learning curves, the XTREME-R suite, the command line), and a reader that spelled one differently from the
writer would silently find nothing. Everything that reads or writes a run directory takes its names from here.

    <run_dir>/config.yaml          the resolved config (a single run, and each grid cell)
    <run_dir>/results.json         a run's or a cell's scores (written last: a run is done when it holds results)
    <run_dir>/grid.json            a grid's axes and cell ids (only in a grid's directory)
    <run_dir>/cells/<id>/          one directory per grid cell, with cell.json (its axis values) and the files above
    <run_dir>/report.md, results.csv, summary.csv    what `fastxlt report` writes
    <phase_dir>/phase.json         a finished phase's summary (written last: a phase is done when it exists)
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG_FILENAME = "config.yaml"
RESULTS_FILENAME = "results.json"
GRID_FILENAME = "grid.json"
CELL_FILENAME = "cell.json"
CELLS_DIRNAME = "cells"
PHASE_DONE = "phase.json"
REPORT_FILENAME = "report.md"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"


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
