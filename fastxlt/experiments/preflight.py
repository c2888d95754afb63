"""Every check an experiment can fail before its first training step, run once when it starts.

``ExperimentConfig.validate`` checks what a config file says on its own (types, ranges).
``experiment_from_dict`` / ``load_experiment`` add what needs the layers above the config (task names
against the registry, perturbation specs, what the encoder family allows): the config stays pure data.
This module checks the config against the world: that the run directory can be created, that every
split and language a phase or the evaluation reads exists for its task, that every local data file
is where its task looks for it, and that no phase's ``max_length`` exceeds what the model's position
embeddings hold (training would otherwise stop hours in, with ``index 130 is out of bounds``). Each
failure is one ``FastXLTError`` line naming the field and the fix. The checks read directory listings
and the model's ``config.json``; data files are parsed only where a limit depends on their content
(``train_examples`` beyond the training data, withheld evaluation labels), and no weight is loaded.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fastxlt.config import ExperimentConfig, config_from_dict, read_config_data
from fastxlt.errors import ConfigError
from fastxlt.experiments.phases import SYNTHETIC_MODEL  # built inside the run: no config to read beforehand
from fastxlt.models.family import check_masked_lm, check_pooling, check_precision, default_pooling, model_type_of
from fastxlt.models.limits import check_max_length, model_position_limit, position_limit
from fastxlt.robustness import PerturbationError, parse_perturbations
from fastxlt.synthetic.model import SYNTHETIC_MAX_LENGTH
from fastxlt.tasks.base import Family, TaskSpec, all_tasks, get_task
from fastxlt.tasks.sanity import _checked, check_data_files, check_scorable
from fastxlt.training.loop import check_train_examples, reads_dev_split, train_splits
from fastxlt.training.tracking import check_integrations

SYNTHETIC_POSITION_LIMIT = SYNTHETIC_MAX_LENGTH  # what it is built with (fastxlt.synthetic.model)
TRAINING_PHASES = ("mlm", "intermediate", "target")



def experiment_from_dict(data: dict[str, Any], *, source: str | None = None) -> ExperimentConfig:
    """``config_from_dict`` plus the checks against the registry, the perturbations and the model family."""
    config = config_from_dict(data, source=source)
    where = f"{source}: " if source else ""
    try:
        check_config(config)
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(where) else f"{where}{message}") from None
    return config


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override (``key.sub=value``, values parsed as YAML) and fully check a config file."""
    return experiment_from_dict(read_config_data(path, overrides), source=str(path))


def check_config(config: ExperimentConfig) -> None:
    """What a config says, checked against the layers above it: perturbation specs, task names, model family.

    Why here and not in ``ExperimentConfig.validate``: the config is pure data (docs/design.md, layer 2) and
    imports none of the registry, the perturbations or the models; this module sits above all of them.
    """
    evaluate = config.phases.evaluate
    if evaluate is not None:
        try:
            parse_perturbations(evaluate.perturbations)
        except PerturbationError as error:
            raise ConfigError(f"phases.evaluate.perturbations: {error}") from None
    _check_task_names(config)
    resolve_model_family(config)


def _check_task_names(config: ExperimentConfig) -> None:
    known = all_tasks()

    def require(task: str, path: str) -> None:
        if task not in known:
            raise ConfigError(f"{path}: unknown task '{task}'; known: {', '.join(sorted(known))}")

    for phase_name in ("mlm", "intermediate", "target"):
        phase = getattr(config.phases, phase_name)
        for index, task in enumerate(phase.tasks if phase else []):
            require(task, f"phases.{phase_name}.tasks[{index}]")
    for index, task in enumerate(config.phases.evaluate.tasks or [] if config.phases.evaluate else []):
        require(task, f"phases.evaluate.tasks[{index}]")
    for task in config.data:
        require(task, f"data.{task}")


def resolve_model_family(config: ExperimentConfig) -> None:
    """Apply what the encoder family decides (``fastxlt.models.family``): the default pooling, and refusals of
    settings that cannot work for it (fp16, ``cls`` pooling and masked LM for mT5), before anything runs."""
    model_type = model_type_of(config.model.name_or_path)
    if config.model.pooling is None:
        config.model.pooling = default_pooling(model_type)
    check_pooling(model_type, config.model.pooling)
    check_precision(model_type, config.deepspeed.precision)
    if config.phases.mlm is not None:
        check_masked_lm(model_type)


def check_experiment(config: ExperimentConfig) -> None:
    """Raise the first problem that would stop this experiment after it started; return None when there is none."""
    check_run_dir(Path(config.run_dir))
    for phase_name in TRAINING_PHASES:
        if getattr(config.phases, phase_name) is not None:
            _check_phase_data(config, phase_name)
    _check_evaluation(config)
    check_integrations(config.logging.integrations())
    _check_max_lengths(config)


# ---------------------------------------------------------------------------------------- run directory


def check_run_dir(run_dir: Path, field: str = "run_dir") -> None:
    """Create ``run_dir`` (and its parents) now, so that a path that cannot exist fails before any work."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"{field}: cannot create '{run_dir}' ({reason}); choose a writable directory") from None
    if not run_dir.is_dir():
        raise ConfigError(f"{field}: '{run_dir}' is not a directory; choose another path")


# ---------------------------------------------------------------------------------------- data


def _check_phase_data(config: ExperimentConfig, phase_name: str) -> None:
    """The training split in each training language, and the English dev split that early stopping reads."""
    phase = getattr(config.phases, phase_name)
    for index, name in enumerate(phase.tasks):
        spec = get_task(name)
        field = f"phases.{phase_name}.tasks[{index}] ({name})"
        splits = train_splits(phase)
        for split in splits:
            _checked(field, spec.check_split, split)
        languages = _checked(f"phases.{phase_name}.train_languages", _phase_languages, spec, phase)
        data_dir = config.data.get(name)
        for language in languages:
            for split in splits:
                check_data_files(spec, split, language, data_dir, field)
        if reads_dev_split(spec, phase):
            check_data_files(spec, spec.dev_split, spec.train_language, data_dir, field)
    if phase.train_examples is not None:
        _check_train_size(config, phase_name)


def _phase_languages(spec: TaskSpec, phase) -> list[str]:
    """The languages a phase trains a task in (as the training loop chooses them)."""
    if phase.train_languages:
        return spec.resolve_languages(phase.train_languages)
    return list(spec.languages) if spec.family is Family.MASKED_LM else [spec.train_language]


def _check_train_size(config: ExperimentConfig, phase_name: str) -> None:
    """``train_examples`` within the training data of some task of the phase (``check_train_examples``);
    counted where the data is local or generated: the hub's is counted when the phase loads it."""
    phase = getattr(config.phases, phase_name)
    available = {}
    for spec in map(get_task, phase.tasks):
        data_dir = config.data.get(spec.name)
        if data_dir is None and spec.hub_id is not None:
            return  # a hub task may be the large one: the loop checks once it has loaded it
        total = sum(_count_examples(spec.name, split, language, data_dir, _stamp(spec, split, language, data_dir))
                    for language in _phase_languages(spec, phase) for split in train_splits(phase))
        available[spec.name] = total - (phase.dev_holdout or 0)
    check_train_examples(phase, available, f"phases.{phase_name}.train_examples")


def _stamp(spec: TaskSpec, split: str, language: str, data_dir: str | None) -> tuple:
    """What a count depends on: each local file's path, size and mtime (nothing for generated data)."""
    files = spec.data_files(split, language, data_dir) or []
    return tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)


@functools.lru_cache(maxsize=256)
def _count_examples(task: str, split: str, language: str, data_dir: str | None, stamp: tuple) -> int:
    """Examples of one split and language, counted once per process (every cell of a grid asks)."""
    return len(get_task(task).load(split, language, data_dir))


def _check_evaluation(config: ExperimentConfig) -> None:
    evaluate = config.phases.evaluate
    if evaluate is None:
        return
    for name in config.evaluation_tasks():
        spec = get_task(name)
        _checked("phases.evaluate.split", spec.check_split, evaluate.split)
        languages = _checked("phases.evaluate.languages", spec.resolve_languages, evaluate.languages)
        data_dir = config.data.get(name)
        for language in languages:
            check_data_files(spec, evaluate.split, language, data_dir, f"phases.evaluate ({name})")
            if data_dir is not None:  # local files: withheld labels are refused now, not after training
                check_scorable(spec, spec.load(evaluate.split, language, data_dir),
                               f"phases.evaluate ({name}) {evaluate.split} '{language}' ({data_dir})",
                               allow_constant_labels=evaluate.allow_constant_labels)  # fmt: skip


# ---------------------------------------------------------------------------------------- model


def _check_max_lengths(config: ExperimentConfig) -> None:
    """No phase, and not the evaluation, may ask for more tokens than the model's position embeddings hold.

    The embedded default's model is built inside the run, so its limit is the one it is built with; the
    evaluation reads the target phase's max_length (or the experiment's), checked here so that it is not
    refused only after training -- when following the advice would be refused as a changed config.
    """
    name = config.model.name_or_path
    limit = SYNTHETIC_POSITION_LIMIT if name == SYNTHETIC_MODEL else model_position_limit(name)
    if limit is None:
        return
    for phase_name in TRAINING_PHASES:
        if getattr(config.phases, phase_name) is not None:
            check_max_length(config.phase_optimization(phase_name).max_length, limit, _length_field(config, phase_name), name)
    if config.phases.evaluate is not None and config.phases.target is None:  # else it reads the target's, checked above
        check_max_length(config.optimization.max_length, limit, "optimization.max_length", name)


def _length_field(config: ExperimentConfig, phase_name: str) -> str:
    """Where a phase's max_length is set: its own optimization section, or the experiment-wide one."""
    phase = getattr(config.phases, phase_name)
    if "max_length" in (phase.optimization or {}):
        return f"phases.{phase_name}.optimization.max_length"
    return "optimization.max_length"


__all__ = ["check_experiment", "check_run_dir", "check_data_files", "check_max_length", "model_position_limit",
           "position_limit"]  # fmt: skip
