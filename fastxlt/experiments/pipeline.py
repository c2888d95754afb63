"""One experiment, run as a grid of one cell -- or of two, when it also trains the target without its
intermediate phase (``compare_without_intermediate``) -- by the grid runner, through a phase store.

Why a grid: a single runner with its own run-directory layout had to be kept in step with the grid runner by
hand (its phase plans, its resume rules, the readers of its files); now there is one runner and one layout.

    pretrained encoder ──(mlm, optional)──> base encoder
    base ──(intermediate)──> intermediate encoder ──(target)──> cell "intermediate=<tasks>"
    base ─────────────────────────────────────────(target)──> cell "intermediate=none" (if asked, or if no intermediate)
    every cell's final model ──(evaluate)──> zero-shot scores in every language

Run directory: the grid layout (``fastxlt.utils.run_layout``) with its phase store in ``<run_dir>/store``, plus
``results.json`` at the top: every arm's scores side by side (arm ``none`` and arm ``<intermediate tasks>``).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import yaml

from fastxlt.config import ExperimentConfig, dump_config
from fastxlt.errors import ConfigError
from fastxlt.experiments.cell_results import read_cell_results
from fastxlt.experiments.grid import NONE_LABEL, GridSpec, expand
from fastxlt.experiments.grid_runner import run_grid
from fastxlt.experiments.preflight import check_experiment, check_run_dir
from fastxlt.training import distributed
from fastxlt.utils.io import write_json_atomic
from fastxlt.utils.locks import DirectoryLock
from fastxlt.utils.run_layout import CONFIG_FILENAME, RESULTS_FILENAME, STORE_DIRNAME, cell_dir, is_grid_dir


def experiment_arms(config: ExperimentConfig) -> list[str]:
    """The arms of one experiment: ``none`` (no intermediate phase) and/or its intermediate task set."""
    intermediate = config.phases.intermediate
    arms = [NONE_LABEL] if intermediate is None or config.compare_without_intermediate else []
    return arms + (["+".join(intermediate.tasks)] if intermediate is not None else [])


def experiment_grid(config: ExperimentConfig) -> GridSpec:
    """The grid that runs ``config``: one ``intermediate`` axis over its arms, the store inside its run directory."""
    run_dir = Path(config.run_dir)
    spec = GridSpec(
        base=yaml.safe_load(dump_config(config)), axes={"intermediate": experiment_arms(config)},
        store=run_dir / STORE_DIRNAME, run_dir=run_dir, name=config.name, source=config.source,
    )
    spec.cells = expand(spec)
    return spec


def run_experiment(config: ExperimentConfig, *, evaluate: bool = True) -> dict[str, Any]:
    """Run (or resume) every phase of the experiment; return every arm's results (also in results.json)."""
    check_experiment(config)  # every check that needs files or the model config, before anything is written
    run_dir = Path(config.run_dir)
    _refuse_old_layout(run_dir)
    check_run_dir(run_dir)
    spec = experiment_grid(config)
    distributed.prepare_environment()
    # One writer per run directory: rank 0 holds the lock for the whole run (the other ranks of its launch
    # are part of the same run); a second `fastxlt run` on this directory is refused with one line.
    with DirectoryLock(run_dir, fix="use another run_dir") if distributed.is_main() else nullcontext():
        run_grid(spec, evaluate=evaluate)
        if not evaluate or config.phases.evaluate is None or not distributed.is_main():
            return {}
        return _merge_arms(spec, run_dir)


def _merge_arms(spec: GridSpec, run_dir: Path) -> dict[str, Any]:
    """Every cell's arm in one results record, written to ``<run_dir>/results.json``."""
    merged: dict[str, Any] = {"name": spec.name, "arms": {}}
    for cell in spec.cells:
        results = read_cell_results(cell_dir(run_dir, cell.cell_id))
        if results is not None:
            merged["arms"].update(results["arms"])
    if merged["arms"]:
        write_json_atomic(run_dir / RESULTS_FILENAME, merged)
    return merged if merged["arms"] else {}


def _refuse_old_layout(run_dir: Path) -> None:
    """A run directory written by the former single runner (phase folders at its top) cannot be resumed."""
    if (run_dir / CONFIG_FILENAME).is_file() and not is_grid_dir(run_dir):
        raise ConfigError(
            f"run directory '{run_dir}' holds a run in the former single-run layout (target/, intermediate/ at its "
            "top); its phases cannot be reused: set a new run_dir, or delete the old one"
        )
