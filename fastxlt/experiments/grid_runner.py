"""Running a grid -- and every single experiment, a grid of its arms (``fastxlt.experiments.pipeline``): each
cell's phases come from the phase store, each cell is evaluated on its own.

    pretrained ─(mlm)─> base ─(intermediate, with snapshots)─> snapshot ─(target)─> final ─(evaluate)─> cell
        │                                                                    ▲
        └───────────────────────────── (no intermediate) ───────────────────┘

Every phase is looked up by its identity (``fastxlt.experiments.store``): trained once under a per-phase
lock, then reused by every cell and every grid that needs it. A cell is done when its ``results.json``
holds results (a damaged one is re-scored); cells run under a cell lock, so concurrent shards
(``--shard I/N``) and re-runs never train or evaluate the same thing twice, and a killed grid resumes
when the same command is re-run.

Run directory (``fastxlt.utils.run_layout``)::

    grid.json                          the axes and the cell ids, in order
    cells/<cell_id>/config.yaml        the cell's resolved experiment config
    cells/<cell_id>/cell.json          axis values, phase keys, the intermediate snapshot used
    cells/<cell_id>/eval/<arm>/<task>/<lang>.json, results.json     per-language files, then the cell's scores
    store/ (or grid.store)             the phase store
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from fastxlt.config import ExperimentConfig, dump_config
from fastxlt.errors import ConfigError, FastXLTError
from fastxlt.evaluation.model_eval import evaluate_models
from fastxlt.experiments.cell_results import read_cell_results
from fastxlt.experiments.grid import (
    AVERAGE_PREFIX,
    BEST_SNAPSHOT,
    COLLAPSED,
    NONE_LABEL,
    Cell,
    GridSpec,
    select_shard,
)
from fastxlt.experiments.preflight import check_experiment, check_run_dir
from fastxlt.experiments.rekey import stale_phase_note
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
    returns {'done': [...], 'skipped': [...]} (skipped: running elsewhere).

    Under a launcher (``deepspeed fastxlt/train.py``) every rank runs this: rank 0 holds the cell and phase
    locks, writes the files and evaluates, and broadcasts each decision, so all ranks train the same phases.
    """
    distributed.prepare_environment()
    if distributed.world_size() > 1:
        distributed.init_distributed()  # the ranks agree on every decision below through rank 0
    check_run_dir(spec.run_dir)  # only creates it (empty): a path that cannot exist fails first, by its own name
    cells = select_shard(spec.cells, shard) if cell_ids is None else select_cells(spec.cells, cell_ids)
    for cell in cells:  # every check that needs files or the model's config, before anything is written
        check_experiment(cell.config)
        check_cell_config(cell)
    check_run_dir(spec.store, "grid.store")
    if distributed.is_main():
        write_or_check_grid(spec)
        note = stale_phase_note(spec.store)
        if note:
            print(f"fastxlt: note: {note}", file=sys.stderr, flush=True)
    store = PhaseStore(spec.store)
    snapshot_requests = _snapshot_requests(spec)
    done, skipped = [], []
    for cell in tqdm(cells, desc=f"grid {spec.name}", unit="cell", disable=len(cells) < 2 or not distributed.is_main()):
        state, lock = _claim_cell(cell_dir(spec.run_dir, cell.cell_id), evaluate=evaluate)
        state = distributed.broadcast_object(state)
        if state != "claimed":
            (done if state == "done" else skipped).append(cell.cell_id)  # skipped: another shard is on it
            continue
        try:
            run_cell(spec, cell, store, snapshot_requests, evaluate=evaluate)
            done.append(cell.cell_id)
        finally:
            if lock is not None:
                lock.release()
    distributed.barrier()
    return {"done": done, "skipped": skipped}


def _claim_cell(directory: Path, *, evaluate: bool) -> tuple[str, DirectoryLock | None]:
    """Rank 0's view of a cell: 'done', 'skipped' (locked by another process) or 'claimed' (with its lock)."""
    if not distributed.is_main():
        return "", None  # the decision comes from rank 0
    if read_cell_results(directory) is not None or (not evaluate and _trained(directory)):
        return "done", None
    lock = DirectoryLock(directory, what="grid cell")
    try:
        lock.acquire(blocking=False)
    except FastXLTError:
        return "skipped", None
    return "claimed", lock


def check_cell_config(cell: Cell) -> None:
    """A cell directory trained with other settings (the grid file was edited, or a single run's config
    changed) is refused in one line: its results and phases would silently stand for the new settings."""
    path = Path(cell.config.run_dir) / CONFIG_FILENAME
    if not path.is_file():
        return
    existing = training_identity(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    current = training_identity(yaml.safe_load(dump_config(cell.config)))
    if existing != current:
        changed = sorted(k for k in set(existing) | set(current) if existing.get(k) != current.get(k))
        run_dir = Path(cell.config.run_dir).parent.parent
        raise ConfigError(
            f"run directory '{run_dir}' was trained with a different config (cell {cell.cell_id} differs in: "
            f"{', '.join(changed)}); set a new run_dir or delete the old one"
        )


# Fields that change how a run is carried out or reported, not what it trains: free to change on resume.
OPERATIONAL_FIELDS = ("name", "run_dir", "kernels", "source", "logging")
OPERATIONAL_OPTIMIZATION = ("checkpoint_every", "keep_checkpoints", "eval_batch_tokens")


def training_identity(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that determines the trained weights."""
    data = {k: v for k, v in data.items() if k not in OPERATIONAL_FIELDS}
    data["phases"] = {k: v for k, v in (data.get("phases") or {}).items() if k != "evaluate"}
    for section in [data.get("optimization") or {}] + [p.get("optimization") or {} for p in data["phases"].values() if p]:
        for name in OPERATIONAL_OPTIMIZATION:
            section.pop(name, None)
    return data


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
    """Train (or reuse) the cell's phases, evaluate its final model, write cell.json and results.json.

    The final model is the target phase's; a cell without a target phase (a single run that trains an
    intermediate model for retrieval, say) ends with its last phase: intermediate, mlm, or none at all.
    """
    config = cell.config
    directory = Path(config.run_dir)
    main = distributed.is_main()
    if main:
        write_text_atomic(directory / CONFIG_FILENAME, dump_config(config))
    encoder = pretrained = _base_encoder(spec, config, store)
    phase_keys: dict[str, str] = {}
    final: Path | None = None
    if config.phases.mlm is not None:
        phase_keys["mlm"], encoder = _train_phase(spec, config, store, "mlm", encoder, seed=spec.base_seed)
        final = Path(encoder.path).parent
    if cell.has_intermediate:
        identity = intermediate_identity(config, spec.base_seed)
        key = key_of(identity)
        phase_keys["intermediate"], phase_dir = key, _train_phase_dir(
            spec, config, store, "intermediate", encoder, seed=config.seed, snapshots=snapshot_requests.get(key, [])
        )
        encoder = select_snapshot(phase_dir, cell.snapshot, config, encoder.tokenizer)
        final = phase_model_dir(phase_dir)
    if config.phases.target is not None:
        phase_keys["target"], target = _train_phase(spec, config, store, "target", encoder, seed=config.seed)
        final = Path(target.path).parent
    record = {
        "cell_id": cell.cell_id,
        "axes": cell.labels,
        "values": {axis: _plain(value) for axis, value in cell.values.items()},
        "phase_keys": phase_keys,
        "store": str(spec.store),
        "pretrained": pretrained.path,
        "intermediate_steps": encoder.steps if cell.has_intermediate else None,
        "intermediate_dev_score": encoder.dev_score if cell.has_intermediate else None,
    }
    results: dict[str, Any] = {}
    if main:
        write_json_atomic(directory / CELL_FILENAME, record)
        if evaluate and config.phases.evaluate is not None and final is not None:
            results = evaluate_models({cell_arm(cell): final}, config.evaluation_tasks(), out_root=directory,
                                      **evaluation_settings(config))
    distributed.barrier()
    return results


def cell_arm(cell: Cell) -> str:
    """The arm a cell's results are filed under: its intermediate task set, or ``none``."""
    return "+".join(cell.config.phases.intermediate.tasks) if cell.has_intermediate else NONE_LABEL


def evaluation_settings(config: ExperimentConfig) -> dict[str, Any]:
    """The ``evaluate_models`` settings a config's evaluate section asks for."""
    evaluate = config.phases.evaluate
    max_length = config.phase_optimization("target").max_length if config.phases.target else config.optimization.max_length
    return dict(
        languages=evaluate.languages, split=evaluate.split, data_dirs=config.data, max_length=max_length,
        batch_tokens=evaluate.batch_tokens, name=config.name, backend=evaluate.backend, quantize=evaluate.quantize,
        precision=evaluate.precision, allow_constant_labels=evaluate.allow_constant_labels,
        perturbations=evaluate.perturbations, perturbation_seed=config.seed, muse_dir=evaluate.muse_dir,
        max_examples=evaluate.max_examples,
    )


# ---------------------------------------------------------------------------------------------- phases


def _base_encoder(spec: GridSpec, config: ExperimentConfig, store: PhaseStore) -> EncoderRef:
    """The pretrained encoder; the embedded default's is generated once into the store."""
    model = config.model
    identity = base_identity(config, spec.base_seed)
    if model.name_or_path != SYNTHETIC_MODEL:
        return EncoderRef(model.name_or_path, model.tokenizer or model.name_or_path, identity)
    directory = store.phase_dir("pretrained", identity)
    if distributed.is_main():
        with _phase_lock(directory):
            build_default_assets(directory / "model", seed=spec.base_seed)
    distributed.barrier()
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
    if distributed.broadcast_object(not phase_is_done(phase_dir)):
        with _phase_lock(phase_dir):  # held by rank 0; the ranks train together when rank 0 finds it undone
            if distributed.broadcast_object(not phase_is_done(phase_dir)):
                curves = run_name(kind, phase_dir.name, Path(config.run_dir).name)  # the cell that trained it
                run_phase(phase.plan(phase_dir=phase_dir, init_encoder=encoder.path, tokenizer=encoder.tokenizer,
                                     run_name=curves))
    _check_snapshots(phase_dir, snapshots or [])
    return phase_dir


class _phase_lock:
    """Blocking directory lock for one phase, held by rank 0: a second shard waits, then finds the phase done."""

    def __init__(self, directory: Path) -> None:
        self.lock = DirectoryLock(directory, what="phase") if distributed.is_main() else None

    def __enter__(self) -> None:
        if self.lock is not None:
            self.lock.acquire(blocking=True)

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
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
    if distributed.is_main() and not (out / "encoder" / "config.json").is_file():
        with _phase_lock(out.parent):
            if not (out / "encoder" / "config.json").is_file():
                _write_average(phase_dir, steps, out)
    distributed.barrier()
    return out


def _write_average(phase_dir: Path, steps: list[int], out: Path) -> None:
    """Average the encoders saved at ``steps`` into ``out`` (written beside it, then renamed into place)."""
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
