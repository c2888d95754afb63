"""Running a grid: each cell's phases come from the shared phase store, each cell is evaluated on its own.

    pretrained ─(mlm)─> base ─(intermediate, with snapshots)─> snapshot ─(target)─> final ─(evaluate)─> cell
        │                                                                    ▲
        └───────────────────────────── (no intermediate) ───────────────────┘

Every phase is looked up by its identity (``fastxlt.experiments.store``): trained once under a per-phase
lock, then reused by every cell and every grid that needs it. A cell is done when its ``results.json``
holds results (a damaged one is re-scored); cells run under a cell lock, so concurrent shards
(``--shard I/N``) and re-runs never train or evaluate the same thing twice, and a killed grid resumes
like a single run: re-run the same command.

Grid run directory::

    grid.json                          the axes and the cell ids, in order
    cells/<cell_id>/config.yaml        the cell's resolved experiment config
    cells/<cell_id>/cell.json          axis values, phase keys, the intermediate snapshot used
    cells/<cell_id>/eval/<arm>/<task>/<lang>.json, results.json     as in a single run
    store/ (or grid.store)             the phase store
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fastxlt.config import ExperimentConfig, dump_config
from fastxlt.errors import ConfigError, FastXLTError
from fastxlt.evaluation.model_eval import evaluate_models
from fastxlt.experiments.cell_results import read_cell_results
from fastxlt.experiments.grid import (
    AVERAGE_PREFIX,
    BEST_SNAPSHOT,
    COLLAPSED,
    Cell,
    GridSpec,
    select_shard,
)
from fastxlt.experiments.pipeline import evaluation_settings
from fastxlt.experiments.preflight import check_experiment, check_run_dir
from fastxlt.experiments.phases import SYNTHETIC_MODEL, base_identity, intermediate_identity, phase_of
from fastxlt.experiments.store import PhaseStore, key_of
from fastxlt.models.encoder import load_encoder, load_tokenizer
from fastxlt.synthetic import build_default_assets
from fastxlt.training import distributed
from fastxlt.training.loop import (
    phase_is_done,
    phase_model_dir,
    resolve_snapshot_steps,
    run_phase,
    snapshot_dir,
)
from fastxlt.training.tracking import run_name
from fastxlt.utils.io import follow_umask, read_json, write_json_atomic, write_text_atomic
from fastxlt.utils.locks import DirectoryLock
from fastxlt.utils.run_layout import CELL_FILENAME, CONFIG_FILENAME, GRID_FILENAME, PHASE_DONE, cell_dir


@dataclass
class EncoderRef:
    """An encoder a phase starts from: where it is, and the identity of what produced it."""

    path: str
    tokenizer: str
    identity: dict[str, Any]
    steps: int | None = None
    dev_score: float | None = None


# ---------------------------------------------------------------------------------------------- grid


def run_grid(
    spec: GridSpec, *, shard: str | None = None, cell_ids: list[str] | None = None, evaluate: bool = True
) -> dict[str, Any]:
    """Run (or resume) this shard's cells -- or exactly ``cell_ids``, as ``fastxlt submit`` hands them to a job;
    returns {'done': [...], 'skipped': [...]} (skipped: running elsewhere)."""
    distributed.prepare_environment()
    check_run_dir(spec.run_dir)
    check_run_dir(spec.store, "grid.store")
    write_or_check_grid(spec)
    store = PhaseStore(spec.store)
    snapshot_requests = _snapshot_requests(spec)
    cells = select_shard(spec.cells, shard) if cell_ids is None else select_cells(spec.cells, cell_ids)
    for cell in cells:  # every check that needs files or the model's config, before any cell trains
        check_experiment(cell.config)
    done, skipped = [], []
    for cell in tqdm(cells, desc=f"grid {spec.name}", unit="cell", disable=len(cells) < 2):
        directory = cell_dir(spec.run_dir, cell.cell_id)
        if read_cell_results(directory) is not None or (not evaluate and _trained(directory)):
            done.append(cell.cell_id)
            continue
        lock = DirectoryLock(directory, what="grid cell")
        try:
            lock.acquire(blocking=False)
        except FastXLTError:
            skipped.append(cell.cell_id)  # another shard is on it
            continue
        try:
            run_cell(spec, cell, store, snapshot_requests, evaluate=evaluate)
            done.append(cell.cell_id)
        finally:
            lock.release()
    return {"done": done, "skipped": skipped}


def grid_status(run_dir: str | Path) -> dict[str, list[str]]:
    """Cells of a grid run directory by state: done (results written), running (locked), pending (a damaged
    results file included: ``fastxlt.experiments.cell_results``)."""
    run_dir = Path(run_dir)
    path = run_dir / GRID_FILENAME
    if not path.is_file():
        raise ConfigError(f"'{run_dir}' is not a grid run directory (no {GRID_FILENAME}); run the grid first")
    states: dict[str, list[str]] = {"done": [], "running": [], "pending": []}
    for cell_id in read_json(path)["cells"]:
        directory = cell_dir(run_dir, cell_id)
        if read_cell_results(directory) is not None:
            states["done"].append(cell_id)
        elif directory.is_dir() and _is_locked(directory):
            states["running"].append(cell_id)
        else:
            states["pending"].append(cell_id)
    return states


def _is_locked(directory: Path) -> bool:
    lock = DirectoryLock(directory, what="grid cell")
    try:
        lock.acquire(blocking=False)
    except FastXLTError:
        return True
    lock.release()
    return False


def select_cells(cells: list[Cell], cell_ids: list[str]) -> list[Cell]:
    """The cells named by id, in grid order; an id that the grid does not have is an error (another grid's job)."""
    unknown = sorted(set(cell_ids) - {cell.cell_id for cell in cells})
    if unknown:
        raise ConfigError(f"cell {unknown[0]!r} is not a cell of this grid; was the grid file changed after submitting?")
    wanted = set(cell_ids)
    return [cell for cell in cells if cell.cell_id in wanted]


def write_or_check_grid(spec: GridSpec) -> None:
    """grid.json names the cells; a run directory refuses a grid whose cells differ (other axes)."""
    path = spec.run_dir / GRID_FILENAME
    record = {
        "name": spec.name,
        "axes": {axis: [_plain(v) for v in values] for axis, values in spec.axes.items()},
        "cells": [cell.cell_id for cell in spec.cells],
        "store": str(spec.store),
    }
    if path.is_file():
        existing = read_json(path)
        if existing.get("cells") != record["cells"]:
            raise ConfigError(
                f"run directory '{spec.run_dir}' holds another grid (its cells differ); set a new run_dir or delete it"
            )
        return
    write_json_atomic(path, record)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)


def _trained(directory: Path) -> bool:
    return (directory / CELL_FILENAME).is_file()


def _snapshot_requests(spec: GridSpec) -> dict[str, list[int | float]]:
    """Intermediate phase key -> every snapshot point that the config lists or any cell starts from.

    Computed over the whole grid, not the shard: whichever shard trains a phase saves every snapshot; grids
    that share a store list the same ``snapshots`` so that whichever trains a phase first saves them all.
    """
    requests: dict[str, set] = {}
    for cell in spec.cells:
        if not cell.has_intermediate:
            continue
        key = key_of(intermediate_identity(cell.config, spec.base_seed))
        listed = cell.config.phases.intermediate.snapshots  # saved whether or not a cell here starts from them
        requests.setdefault(key, set()).update(listed, _snapshot_points(cell.snapshot, cell.config))
    return {key: sorted(points, key=lambda p: (isinstance(p, float), p)) for key, points in requests.items()}


def _snapshot_points(snapshot: Any, config: ExperimentConfig) -> list[int | float]:
    if snapshot in (BEST_SNAPSHOT, COLLAPSED):
        return []
    if isinstance(snapshot, str) and snapshot.startswith(AVERAGE_PREFIX):
        listed = [p for p in (config.phases.intermediate.snapshots or [])]
        count = int(snapshot[len(AVERAGE_PREFIX):])
        if len(listed) < count:
            raise ConfigError(
                f"snapshot {snapshot} averages the last {count} snapshots, but phases.intermediate.snapshots lists "
                f"{len(listed)}; list at least {count} there"
            )
        return listed
    return [snapshot]


# ---------------------------------------------------------------------------------------------- cell


def run_cell(
    spec: GridSpec, cell: Cell, store: PhaseStore, snapshot_requests: dict[str, list], *, evaluate: bool = True
) -> dict[str, Any]:
    """Train (or reuse) the cell's phases, evaluate its final model, write cell.json and results.json."""
    config = cell.config
    directory = Path(config.run_dir)
    write_text_atomic(directory / CONFIG_FILENAME, dump_config(config))
    encoder = _base_encoder(spec, config, store)
    phase_keys: dict[str, str] = {}
    if config.phases.mlm is not None:
        phase_keys["mlm"], encoder = _train_phase(spec, config, store, "mlm", encoder, seed=spec.base_seed)
    if cell.has_intermediate:
        identity = intermediate_identity(config, spec.base_seed)
        key = key_of(identity)
        phase_keys["intermediate"], phase_dir = key, _train_phase_dir(
            spec, config, store, "intermediate", encoder, seed=config.seed, snapshots=snapshot_requests.get(key, [])
        )
        encoder = select_snapshot(phase_dir, cell.snapshot, config, encoder.tokenizer)
    if config.phases.target is None:
        raise ConfigError(f"cell {cell.cell_id}: a grid cell needs a target phase (phases.target)")
    phase_keys["target"], final = _train_phase(spec, config, store, "target", encoder, seed=config.seed)
    record = {
        "cell_id": cell.cell_id,
        "axes": cell.labels,
        "values": {axis: _plain(value) for axis, value in cell.values.items()},
        "phase_keys": phase_keys,
        "store": str(spec.store),
        "intermediate_steps": encoder.steps if cell.has_intermediate else None,
        "intermediate_dev_score": encoder.dev_score if cell.has_intermediate else None,
    }
    write_json_atomic(directory / CELL_FILENAME, record)
    if not evaluate or config.phases.evaluate is None:
        return {}
    arm = "+".join(config.phases.intermediate.tasks) if cell.has_intermediate else "none"
    return _evaluate_cell(config, arm, Path(final.path).parent, directory)


def _evaluate_cell(config: ExperimentConfig, arm: str, model_dir: Path, cell_dir: Path) -> dict[str, Any]:
    return evaluate_models({arm: model_dir}, config.evaluation_tasks(), out_root=cell_dir, **evaluation_settings(config))


# ---------------------------------------------------------------------------------------------- phases


def _base_encoder(spec: GridSpec, config: ExperimentConfig, store: PhaseStore) -> EncoderRef:
    """The pretrained encoder; the embedded default's is generated once into the store."""
    model = config.model
    identity = base_identity(config, spec.base_seed)
    if model.name_or_path != SYNTHETIC_MODEL:
        return EncoderRef(model.name_or_path, model.tokenizer or model.name_or_path, identity)
    directory = store.phase_dir("pretrained", identity)
    with _phase_lock(directory):
        build_default_assets(directory / "model", seed=spec.base_seed)
    return EncoderRef(str(directory / "model"), str(directory / "model"), identity)


def _train_phase(
    spec: GridSpec, config: ExperimentConfig, store: PhaseStore, kind: str, encoder: EncoderRef, *, seed: int
) -> tuple[str, EncoderRef]:
    phase_dir = _train_phase_dir(spec, config, store, kind, encoder, seed=seed)
    summary = read_json(phase_dir / PHASE_DONE)
    identity = {"phase": kind, "key": phase_dir.name}
    ref = EncoderRef(str(phase_model_dir(phase_dir) / "encoder"), encoder.tokenizer, identity,
                     steps=summary.get("optimizer_steps"), dev_score=summary.get("best_dev_score"))
    return phase_dir.name, ref


def _train_phase_dir(
    spec: GridSpec, config: ExperimentConfig, store: PhaseStore, kind: str, encoder: EncoderRef, *, seed: int,
    snapshots: list | None = None,
) -> Path:
    """The phase's store directory, trained first when needed (under its lock; another shard may be on it)."""
    phase = phase_of(config, kind, seed=seed, snapshots=snapshots or [])
    phase_dir = store.phase_dir(kind, phase.identity(encoder.identity))
    if not phase_is_done(phase_dir):
        with _phase_lock(phase_dir):
            if not phase_is_done(phase_dir):
                curves = run_name(kind, phase_dir.name, Path(config.run_dir).name)  # the cell that trained it
                run_phase(phase.plan(phase_dir=phase_dir, init_encoder=encoder.path, tokenizer=encoder.tokenizer,
                                     run_name=curves))
    _check_snapshots(phase_dir, snapshots or [])
    return phase_dir


class _phase_lock:
    """Blocking directory lock for one phase: a second shard waits, then finds the phase done."""

    def __init__(self, directory: Path) -> None:
        self.lock = DirectoryLock(directory, what="phase")

    def __enter__(self) -> None:
        self.lock.acquire(blocking=True)

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _check_snapshots(phase_dir: Path, points: list) -> None:
    """A phase trained for another grid may lack a snapshot this one needs: say how to get it."""
    if not points:
        return
    summary = read_json(phase_dir / PHASE_DONE)
    steps = resolve_snapshot_steps(points, summary["planned_steps"])
    missing = [s for s in sorted(steps) if not (snapshot_dir(phase_dir, s) / "snapshot.json").is_file()]
    if missing:
        reached = summary.get("optimizer_steps")
        raise ConfigError(
            f"intermediate phase {phase_dir} has no snapshot at step(s) {missing} (it ran {reached} steps, saving "
            f"{summary.get('snapshots', 'other')} ); delete {phase_dir} to retrain it with these snapshots, or pick others"
        )


# ---------------------------------------------------------------------------------------------- snapshots


def select_snapshot(phase_dir: Path, snapshot: Any, config: ExperimentConfig, tokenizer: str) -> EncoderRef:
    """The intermediate encoder a target starts from: the dev-selected model, a step, or an average."""
    summary = read_json(phase_dir / PHASE_DONE)
    identity = {"phase": "intermediate", "key": phase_dir.name}
    if snapshot in (BEST_SNAPSHOT, COLLAPSED):
        return EncoderRef(str(phase_model_dir(phase_dir) / "encoder"), tokenizer, {**identity, "snapshot": BEST_SNAPSHOT},
                          steps=summary.get("best_step") or summary.get("optimizer_steps"), dev_score=summary.get("best_dev_score"))
    all_steps = sorted(resolve_snapshot_steps(config.phases.intermediate.snapshots or [], summary["planned_steps"]))
    if isinstance(snapshot, str) and snapshot.startswith(AVERAGE_PREFIX):
        count = int(snapshot[len(AVERAGE_PREFIX):])
        steps = all_steps[-count:]
        directory = average_snapshots(phase_dir, steps)
        return EncoderRef(str(directory / "encoder"), tokenizer, {**identity, "snapshot": f"avg{steps}"}, steps=steps[-1])
    (step,) = resolve_snapshot_steps([snapshot], summary["planned_steps"])
    directory = snapshot_dir(phase_dir, step)
    info = read_json(directory / "snapshot.json")
    return EncoderRef(str(directory / "encoder"), tokenizer, {**identity, "snapshot": step}, steps=step,
                      dev_score=info.get("dev_score"))


def average_snapshots(phase_dir: Path, steps: list[int]) -> Path:
    """The element-wise mean of the encoders saved at ``steps`` (checkpoint averaging), built once."""
    out = Path(phase_dir) / "snapshots" / ("avg-" + "-".join(str(s) for s in steps))
    if (out / "encoder" / "config.json").is_file():
        return out
    with _phase_lock(out.parent):
        if (out / "encoder" / "config.json").is_file():
            return out
        import shutil


        sources = [snapshot_dir(phase_dir, step) / "encoder" for step in steps]
        model = load_encoder(str(sources[0]))
        states = [load_encoder(str(source)).state_dict() for source in sources]
        averaged = {
            name: (sum(state[name] for state in states) / len(states)).to(tensor.dtype) if tensor.is_floating_point() else tensor
            for name, tensor in model.state_dict().items()
        }
        model.load_state_dict(averaged)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp / "encoder")
        load_tokenizer(str(sources[0])).save_pretrained(tmp / "encoder")
        write_json_atomic(tmp / "snapshot.json", {"averaged_steps": steps})
        follow_umask(tmp)  # safetensors writes 0600 whatever the umask
        tmp.rename(out)
    return out
