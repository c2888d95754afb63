"""Experiment grids: axes that expand into cells, each cell an ordinary experiment fed by the phase store.

A grid file is an ordinary experiment file (the *base*) plus a ``grid`` section::

    grid:
      store: runs/phase-store          # shared by every grid that names it (default: <run_dir>/store)
      axes:
        intermediate: [none, snli, anli, [snli, anli]]   # task sets; none = straight to the target
        target_size: [250, 1000, all]                    # counts, fractions (0.5) or all
        target: [xnli, {tasks: commonsense_qa, evaluate: xcopa}]   # train on one task, evaluate another
        snapshot: [best, 100, 200, 0.5, avg-2]           # which intermediate encoder the target starts from
        seed: [1, 2]
        phases.target.optimization.lr: [1.0e-5, 3.0e-5]  # any config field by its dotted path

Named axes (``AXES``) know where they go in the config; any other axis is a dotted config path. Cells are
the Cartesian product in the order the axes are written, each with a stable id built from its values.
For a cell without an intermediate phase, the axes that only shape that phase collapse to ``-`` (so
``none`` is trained once, not once per snapshot); the report pairs it with every intermediate cell that
shares the other axes.

Seeds: the ``seed`` axis seeds the intermediate and target phases (and the target subset stays the
``subset_seed``'s); the pretrained model and the MLM phase use the base file's ``seed``, so every cell of
a grid starts from the same pretrained encoder.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from fastxlt.config import ExperimentConfig, apply_override, read_yaml_file
from fastxlt.errors import ConfigError
from fastxlt.experiments.preflight import experiment_from_dict
from fastxlt.utils.run_layout import STORE_DIRNAME, cell_dir

NONE_LABEL = "none"
COLLAPSED = "-"
BEST_SNAPSHOT = "best"
AVERAGE_PREFIX = "avg-"


# ------------------------------------------------------------------------------------------ axes


def _set_model(data: dict, value: Any) -> None:
    if isinstance(value, dict):
        data["model"] = {**(data.get("model") or {}), **value}
    else:
        data.setdefault("model", {})["name_or_path"] = str(value)


def _set_intermediate(data: dict, value: Any) -> None:
    tasks = task_list(value)
    phases = data.setdefault("phases", {})
    if not tasks:
        phases["intermediate"] = None
        return
    phases["intermediate"] = {**(phases.get("intermediate") or {}), "tasks": tasks}


# target-value key -> phases.evaluate field
EVALUATE_FIELDS = {"evaluate": "tasks", "languages": "languages", "split": "split"}


def _set_target(data: dict, value: Any) -> None:
    """A task set, or a mapping ``{tasks: commonsense_qa, train_split: train, evaluate: xcopa, languages: [...]}``:
    the target phase's tasks and any of its fields, plus the tasks, languages and split to evaluate -- to train
    one task and evaluate zero-shot on another that shares its head (XTREME-R trains English SIQA for XCOPA)."""
    phases = data.setdefault("phases", {})
    if not isinstance(value, dict):
        phases["target"] = {**(phases.get("target") or {}), "tasks": task_list(value)}
        return
    if "tasks" not in value:
        raise ConfigError(f"grid.axes.target: {value!r} needs 'tasks' (and may set 'evaluate', 'languages', target fields)")
    evaluate = dict(phases.get("evaluate") or {})
    target = dict(phases.get("target") or {})
    for key, item in value.items():
        if key in EVALUATE_FIELDS:
            evaluate[EVALUATE_FIELDS[key]] = task_list(item) if key == "evaluate" else item
        else:
            target[key] = task_list(item) if key == "tasks" else item  # unknown fields: refused when parsed
    phases["evaluate"], phases["target"] = evaluate, target


def _set_target_size(data: dict, value: Any) -> None:
    phases = data.setdefault("phases", {})
    target = phases["target"] = dict(phases.get("target") or {})
    target.pop("train_examples", None)
    target.pop("train_fraction", None)
    if value in (None, "all"):
        return
    if isinstance(value, float):
        target["train_fraction"] = value
    elif isinstance(value, int) and not isinstance(value, bool):
        target["train_examples"] = value
    else:
        raise ConfigError(f"grid.axes.target_size: {value!r} is not a count, a fraction or 'all'")


def _intermediate_field(*path: str) -> Callable[[dict, Any], None]:
    def apply(data: dict, value: Any) -> None:
        node = data.setdefault("phases", {}).get("intermediate")
        if node is None:
            return  # collapsed: no intermediate phase in this cell
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value

    return apply


def _set_intermediate_languages(data: dict, value: Any) -> None:
    _intermediate_field("train_languages")(data, task_list(value))


def _set_seed(data: dict, value: Any) -> None:
    data["seed"] = value


# Axis name -> how its value enters the experiment dict. "snapshot" is the cell's own: it picks the
# intermediate encoder a target phase starts from and changes no config field.
AXES: dict[str, Callable[[dict, Any], None]] = {
    "model": _set_model,
    "intermediate": _set_intermediate,
    "intermediate_languages": _set_intermediate_languages,
    "intermediate_examples": _intermediate_field("train_examples"),
    "intermediate_steps": _intermediate_field("optimization", "max_steps"),
    "snapshot": lambda data, value: None,
    "target": _set_target,
    "target_size": _set_target_size,
    "seed": _set_seed,
}
INTERMEDIATE_ONLY = ("intermediate_languages", "intermediate_examples", "intermediate_steps", "snapshot")


def task_list(value: Any) -> list[str]:
    """``none`` / null / [] -> []; ``snli+anli`` or ``[snli, anli]`` -> the task names."""
    if value is None or value == NONE_LABEL or value == []:
        return []
    if isinstance(value, str):
        return [part for part in value.split("+") if part]
    if isinstance(value, list):
        return [str(part) for part in value]
    raise ConfigError(f"expected a task name, a '+'-joined list or a list of names, got {value!r}")


def value_label(axis: str, value: Any) -> str:
    """How a value is shown in cell ids, tables and results.csv."""
    if axis == "target" and isinstance(value, dict):  # trained on tasks, evaluated on evaluate: both in the label
        label = "+".join(task_list(value.get("tasks")))
        return f"{label}-to-{'+'.join(task_list(value['evaluate']))}" if "evaluate" in value else label
    if axis in ("intermediate", "target", "intermediate_languages"):
        return "+".join(task_list(value)) or NONE_LABEL
    if axis == "model":
        name = value.get("name_or_path", "") if isinstance(value, dict) else str(value)
        return Path(name.rstrip("/")).name or name
    if axis == "snapshot":
        return snapshot_label(value)
    if value is None:
        return "null"
    if isinstance(value, dict):  # e.g. adversarial: {method: freelb, steps: 3} -> freelb,steps-3
        parts = [str(value["method"])] if "method" in value else []
        parts += [f"{key}-{item}" for key, item in value.items() if key != "method"]
        return ",".join(parts) or "default"
    return str(value)


def snapshot_label(value: Any) -> str:
    if isinstance(value, bool):
        raise ConfigError(f"grid.axes.snapshot: {value!r} is not a snapshot")
    if isinstance(value, int):
        return f"step-{value}"
    if isinstance(value, float):
        return f"frac-{value:g}"
    if value == BEST_SNAPSHOT or value == COLLAPSED or (isinstance(value, str) and re.fullmatch(r"avg-\d+", value)):
        return value
    raise ConfigError(
        f"grid.axes.snapshot: {value!r} is not a snapshot; use best, a step (200), a fraction (0.5) or avg-K"
    )


# ------------------------------------------------------------------------------------------ grid and cells


@dataclass
class Cell:
    """One experiment of the grid: its axis values (raw and as labels), its config and its snapshot."""

    cell_id: str
    values: dict[str, Any]
    labels: dict[str, str]
    config: ExperimentConfig
    snapshot: Any = BEST_SNAPSHOT

    @property
    def has_intermediate(self) -> bool:
        return self.config.phases.intermediate is not None


@dataclass
class GridSpec:
    """A parsed grid file: the base experiment (as a dict), its axes, the store, and where it runs."""

    base: dict[str, Any]
    axes: dict[str, list[Any]]
    store: Path
    run_dir: Path
    name: str
    source: str | None = None
    cells: list[Cell] = field(default_factory=list)

    @property
    def base_seed(self) -> int:
        return int(self.base.get("seed", ExperimentConfig().seed))


def has_grid_section(path: str | Path) -> bool:
    data = read_yaml_file(Path(path))
    return isinstance(data, dict) and "grid" in data


def load_grid(path: str | Path, overrides: list[str] | None = None) -> GridSpec:
    """Read a grid file (overrides apply to the base, e.g. ``run_dir=...``), validate it and expand its cells."""
    path = Path(path)
    data = read_yaml_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("grid"), dict):
        raise ConfigError(f"{path}: no 'grid' section; a grid file is an experiment file with grid: {{axes: ...}}")
    section = data.pop("grid")
    for override in overrides or []:
        apply_override(data, override)
    unknown = set(section) - {"axes", "store"}
    if unknown:
        raise ConfigError(f"{path}: grid.{sorted(unknown)[0]}: unknown field; known: axes, store")
    axes = section.get("axes") or {}
    if not isinstance(axes, dict) or not axes:
        raise ConfigError(f"{path}: grid.axes must map at least one axis to a list of values")
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.axes.{axis}: expected a non-empty list of values, got {values!r}")
    run_dir = Path(str(data.get("run_dir") or "runs/grid"))
    store = Path(str(section.get("store") or run_dir / STORE_DIRNAME))
    spec = GridSpec(
        base=data, axes=axes, store=store, run_dir=run_dir, name=str(data.get("name", "grid")), source=str(path)
    )
    spec.cells = expand(spec)
    return spec


def expand(spec: GridSpec) -> list[Cell]:
    """The cells of a grid in a fixed order (the axes' order, then each axis's values), without duplicates."""
    cells: list[Cell] = []
    seen: set[str] = set()
    names = list(spec.axes)
    for combination in itertools.product(*(spec.axes[name] for name in names)):
        values = dict(zip(names, combination))
        if not _has_intermediate(spec.base, values):
            values = {k: (COLLAPSED if _only_shapes_intermediate(k) else v) for k, v in values.items()}
        labels = {name: (COLLAPSED if value == COLLAPSED else value_label(name, value)) for name, value in values.items()}
        cell_id = _cell_id(labels)
        if cell_id in seen:
            continue
        seen.add(cell_id)
        cells.append(Cell(cell_id, values, labels, _cell_config(spec, values, cell_id), values.get("snapshot", BEST_SNAPSHOT)))
    return cells


def select_shard(cells: list[Cell], shard: str | None) -> list[Cell]:
    """``I/N`` (1-based): every N-th cell starting at the I-th, so shards get similar mixes of cells."""
    if not shard:
        return cells
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(f"--shard {shard!r}: expected I/N with 1 <= I <= N, e.g. --shard 2/8")
    index, count = int(match[1]), int(match[2])
    return cells[index - 1 :: count]


def _has_intermediate(base: dict[str, Any], values: dict[str, Any]) -> bool:
    if "intermediate" in values:
        return bool(task_list(values["intermediate"]))
    return bool((base.get("phases") or {}).get("intermediate"))


def _only_shapes_intermediate(axis: str) -> bool:
    return axis in INTERMEDIATE_ONLY or axis.startswith("phases.intermediate.")


def _cell_id(labels: dict[str, str]) -> str:
    parts = [f"{_short(axis)}={label}" for axis, label in labels.items()]
    return re.sub(r"[^A-Za-z0-9_.+=,-]", "_", ",".join(parts))


def _short(axis: str) -> str:
    return axis.rsplit(".", 1)[-1] if axis.startswith("phases.") else axis


def _cell_config(spec: GridSpec, values: dict[str, Any], cell_id: str) -> ExperimentConfig:
    data = copy.deepcopy(spec.base)
    for axis, value in values.items():
        if value == COLLAPSED:
            continue
        if axis in AXES:
            AXES[axis](data, value)
        else:
            apply_override(data, f"{axis}={yaml.safe_dump(value, default_flow_style=True).strip()}")
    data["compare_without_intermediate"] = False
    data["run_dir"] = str(cell_dir(spec.run_dir, cell_id))
    data["name"] = f"{spec.name}/{cell_id}"
    where = f"{spec.source} (cell {cell_id})" if spec.source else f"cell {cell_id}"
    return experiment_from_dict(data, source=where)
