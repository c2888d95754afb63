"""The learning curves of a run's phases, from the run directory alone: the TensorBoard event files that
``logging.report_to: [tensorboard]`` wrote (every optimizer step), else ``phase.json``'s dev history (the
smoothed train loss and the dev scores at each evaluation), so every report has a curve per phase.

A grid's phases live in its store and are shared between cells: each is read once, named by kind and key.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from fastxlt.training.tracking import TENSORBOARD_DIRNAME
from fastxlt.utils.io import read_json
from fastxlt.utils.run_layout import CELLS_DIRNAME, CELL_FILENAME, PHASE_DONE, cell_phase_dirs, is_grid_dir

# = fastxlt.training.loop.PHASE_DONE (a test checks): not imported, so that `fastxlt report` stays torch-free

Series = list[tuple[int, float]]


@dataclass
class PhaseCurves:
    """One phase's scalars by tag (``train/loss``, ``train/learning_rate``, ``dev/mean``, ...)."""

    name: str
    directory: Path
    source: str  # "tensorboard" or "phase.json"
    scalars: dict[str, Series] = field(default_factory=dict)


def phase_directories(run_dir: Path) -> dict[str, Path]:
    """Finished phases of a run directory (through each done cell's phase keys), by display name."""
    run_dir = Path(run_dir)
    return _grid_phases(run_dir) if is_grid_dir(run_dir) else {}


def _grid_phases(run_dir: Path) -> dict[str, Path]:
    phases: dict[str, Path] = {}
    for record_path in sorted((run_dir / CELLS_DIRNAME).glob(f"*/{CELL_FILENAME}")):
        for kind, directory in cell_phase_dirs(run_dir, record_path.parent.name).items():
            if (directory / PHASE_DONE).is_file():
                phases.setdefault(f"{kind} {directory.name}", directory)
    return phases


def read_curves(name: str, directory: Path) -> PhaseCurves:
    """Event files when there are (and TensorBoard is installed to read them), else phase.json's history."""
    logs = sorted((directory / TENSORBOARD_DIRNAME).glob("*")) if (directory / TENSORBOARD_DIRNAME).is_dir() else []
    if logs and importlib.util.find_spec("tensorboard") is not None:
        return PhaseCurves(name, directory, "tensorboard", _event_scalars(logs))
    return PhaseCurves(name, directory, PHASE_DONE, _history_scalars(directory))


def _event_scalars(log_dirs: list[Path]) -> dict[str, Series]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    merged: dict[str, dict[int, float]] = {}
    for log_dir in log_dirs:
        events = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})  # 0: keep every point
        events.Reload()
        for tag in events.Tags()[SCALARS]:
            merged.setdefault(tag, {}).update({event.step: event.value for event in events.Scalars(tag)})
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def _history_scalars(directory: Path) -> dict[str, Series]:
    scalars: dict[str, Series] = {}
    for entry in read_json(directory / PHASE_DONE).get("history", []):
        for key, value in entry.items():
            if value is None or key == "step":
                continue
            tag = "train/loss" if key == "train_loss" else f"dev/{key[4:]}" if key.startswith("dev_") else key
            scalars.setdefault(tag, []).append((int(entry["step"]), float(value)))
    return scalars
