"""``fastxlt submit``: a grid handed to submitit as one array of shard jobs (SLURM, or local processes).

Before this, a grid reached a cluster only through ``fastxlt run --shard I/N`` in an array script that each
user wrote by hand. Here the pending cells are dealt round-robin over ``--jobs`` array tasks; each task runs
its cells with the same ``run_grid`` as ``fastxlt run``, so phases and cells stay locked through the shared
store (a phase two tasks need is trained once, the second waits and reuses it) and a resubmission after
failures runs only the cells without ``results.json``. ``--cluster local`` runs the same path as local
processes (submitit's LocalExecutor), which is how it is tested without a cluster.

submitit writes its files under ``<run_dir>/submitit/``: the sbatch script, the pickled call and each task's
``*_log.out`` / ``*_log.err``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastxlt.errors import ConfigError, FastXLTError
from fastxlt.experiments.grid import GridSpec, load_grid
from fastxlt.experiments.grid_runner import grid_status, run_grid, write_or_check_grid
from fastxlt.experiments.preflight import check_experiment, check_run_dir

CLUSTERS = ("slurm", "local")
SUBMITIT_DIRNAME = "submitit"
DEFAULT_TIME_MIN = 24 * 60  # submitit's own defaults (5 min on SLURM, 2 locally) would kill any real training
SLURM_ONLY = {"partition": "--partition", "account": "--account", "constraint": "--constraint", "qos": "--qos",
              "array_parallelism": "--array-parallelism", "setup": "--setup", "sbatch": "--sbatch"}  # fmt: skip


@dataclass
class ClusterOptions:
    """What the jobs ask the scheduler for; SLURM-only fields are refused for ``local``."""

    cluster: str
    jobs: int | None = None  # array tasks; default: one per pending cell
    time_min: int = DEFAULT_TIME_MIN
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    qos: str | None = None
    array_parallelism: int | None = None
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load, source venv)
    sbatch: dict[str, str] = field(default_factory=dict)  # any other #SBATCH option

    def validate(self) -> None:
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"--cluster {self.cluster!r}: unknown cluster; known: {', '.join(CLUSTERS)}")
        if self.cluster != "slurm":
            given = [flag for name, flag in SLURM_ONLY.items() if getattr(self, name)]
            if given:
                raise ConfigError(f"{given[0]} is a SLURM option; it needs --cluster slurm (got --cluster {self.cluster})")
        for name in ("jobs", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "gpus_per_node" else 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
        if self.time_min < 1:
            raise ConfigError(f"--time must be at least one minute, got {self.time_min} min")


@dataclass
class Submission:
    """What was submitted: the jobs (submitit Job objects), their cells, and what was already done or running."""

    run_dir: Path
    jobs: list[Any]
    shards: list[list[str]]
    done: list[str]
    running: list[str]


def parse_time(text: str) -> int:
    """Minutes from ``90``, ``1:30`` (H:MM), ``1:30:00`` (H:MM:SS) or ``2-00:00:00`` (SLURM's D-HH:MM:SS)."""
    match = re.fullmatch(r"\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\s*", str(text))
    if not match:
        raise ConfigError(f"--time {text!r}: expected minutes (90), H:MM, H:MM:SS or D-HH:MM:SS")
    days, first, second, third = (int(part) if part else 0 for part in match.groups())
    if match[3] is None and match[1] is None:  # plain minutes
        return first
    return days * 1440 + first * 60 + second + (1 if third else 0)  # round seconds up: never ask for less


def parse_sbatch(pairs: list[str] | None) -> dict[str, str]:
    """``--sbatch KEY=VALUE`` pairs (e.g. mail-type=END) for options submitit has no name for."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--sbatch {pair!r}: expected KEY=VALUE, e.g. --sbatch mail-type=END")
        options[key.strip().lstrip("-")] = value.strip()
    return options


# ---------------------------------------------------------------------------------------------- submitting


def submit_grid(config: str | Path, overrides: list[str], options: ClusterOptions) -> Submission:
    """Check the grid, then submit its pending cells as an array of ``options.jobs`` tasks."""
    options.validate()
    submitit = _import_submitit()
    spec = load_grid(config, overrides)
    _prepare(spec)
    states = grid_status(spec.run_dir)
    shards = deal(states["pending"], options.jobs or len(states["pending"]))
    jobs = []
    if shards:
        executor = make_executor(submitit, spec, options)
        config_path, count = str(Path(config).resolve()), len(shards)
        jobs = executor.map_array(RunCells(), [config_path] * count, [list(overrides)] * count, shards)
    return Submission(spec.run_dir, jobs, shards, states["done"], states["running"])


def deal(cell_ids: list[str], jobs: int) -> list[list[str]]:
    """Round-robin, as ``--shard I/N`` does, so each task gets a similar mix of cells; no empty task."""
    count = min(jobs, len(cell_ids))
    return [cell_ids[index::count] for index in range(count)]


def _prepare(spec: GridSpec) -> None:
    """Every check a job could fail at its start, done once here before anything is queued."""
    check_run_dir(spec.run_dir)
    check_run_dir(spec.store, "grid.store")
    write_or_check_grid(spec)
    for cell in spec.cells:
        check_experiment(cell.config)


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("fastxlt submit needs the 'submitit' package, which is not installed; "
                          "pip install submitit (or pip install 'fastxlt[cluster]')") from None
    return submitit


def make_executor(submitit, spec: GridSpec, options: ClusterOptions):
    """submitit's AutoExecutor for the cluster, with the generic and the SLURM parameters set."""
    executor = submitit.AutoExecutor(folder=spec.run_dir / SUBMITIT_DIRNAME / "%j", cluster=options.cluster)
    executor.update_parameters(**executor_parameters(spec, options))
    return executor


def executor_parameters(spec: GridSpec, options: ClusterOptions) -> dict[str, Any]:
    """AutoExecutor's names: generic ones for every cluster, ``slurm_*`` for SLURM (unset ones left out)."""
    generic = {"name": f"fastxlt-{spec.name}", "timeout_min": options.time_min, "tasks_per_node": 1, "nodes": 1,
               "gpus_per_node": options.gpus_per_node, "cpus_per_task": options.cpus_per_task,
               "mem_gb": options.mem_gb}  # fmt: skip
    slurm = {"slurm_partition": options.partition, "slurm_account": options.account,
             "slurm_constraint": options.constraint, "slurm_qos": options.qos,
             "slurm_array_parallelism": options.array_parallelism, "slurm_setup": options.setup or None,
             "slurm_additional_parameters": options.sbatch or None}  # fmt: skip
    chosen = generic | (slurm if options.cluster == "slurm" else {})
    return {name: value for name, value in chosen.items() if value is not None}


# ---------------------------------------------------------------------------------------------- in the job


def run_cells(config: str, overrides: list[str], cell_ids: list[str]) -> dict[str, list[str]]:
    """One array task: these cells of the grid, exactly as ``fastxlt run`` would run them (locks included)."""
    spec = load_grid(config, overrides)
    return run_grid(spec, cell_ids=cell_ids)


class RunCells:
    """``run_cells`` as submitit's checkpointable callable: a task that SLURM times out or preempts is requeued
    with the same cells (submitit calls ``checkpoint`` on USR2), and resumes like a re-run -- finished cells
    skipped, a phase in progress restarted from its last checkpoint. Duck-typed, so that importing this module
    does not need submitit."""

    def __call__(self, config: str, overrides: list[str], cell_ids: list[str]) -> dict[str, list[str]]:
        return run_cells(config, overrides, cell_ids)

    def checkpoint(self, config: str, overrides: list[str], cell_ids: list[str]):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, config, overrides, cell_ids)


# ---------------------------------------------------------------------------------------------- waiting


def wait(submission: Submission) -> list[str]:
    """Block until every job ends; one line per failed job, naming its log."""
    failures = []
    for job in submission.jobs:
        try:
            job.result()
        except Exception as error:  # submitit re-raises the job's error (or a FailedJobState) here
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            failures.append(f"job {job.job_id} failed ({_short(reason)}); log: {job.paths.stderr}")
    return failures


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure_error(failures: list[str], total: int, config: str) -> FastXLTError:
    """The one-line error after ``--wait``: how many failed, the first log, and that resubmitting resumes."""
    return FastXLTError(f"{len(failures)} of {total} job(s) failed; first: {failures[0]}; fix it and re-run "
                        f"`fastxlt submit --config {config} ...`: only the missing cells run again")
