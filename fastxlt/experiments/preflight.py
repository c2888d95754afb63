"""Every check an experiment can fail before its first training step, run once when it starts.

``ExperimentConfig.validate`` checks what a config file says on its own (types, ranges, task names).
This module checks the config against the world: that the run directory can be created, that every
split and language a phase or the evaluation reads exists for its task, that every local data file
is where its task looks for it, and that no phase's ``max_length`` exceeds what the model's position
embeddings hold (training would otherwise stop hours in, with ``index 130 is out of bounds``). Each
failure is one ``FastXLTError`` line naming the field and the fix. The checks read directory listings
and the model's ``config.json`` only: no data file is parsed and no weight is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastxlt.config import ExperimentConfig
from fastxlt.errors import CheckpointError, ConfigError, FastXLTError
from fastxlt.tasks.base import Family, TaskSpec, get_task
from fastxlt.training.loop import reads_dev_split, train_splits
from fastxlt.training.tracking import check_integrations

SYNTHETIC_MODEL = "synthetic"  # built inside the run, so there is no config to read beforehand
TRAINING_PHASES = ("mlm", "intermediate", "target")
# Model types whose position ids start after the padding index (RoBERTa's scheme): two of XLM-R's 514
# positions are never used by a token, so its usable length is max_position_embeddings - padding_idx - 1.
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer")
# Relative position schemes: no learned table, so no length limit from the config.
RELATIVE_POSITION_TYPES = ("t5", "mt5", "umt5")


def check_experiment(config: ExperimentConfig) -> None:
    """Raise the first problem that would stop this experiment after it started; return None when there is none."""
    check_run_dir(Path(config.run_dir))
    for phase_name in TRAINING_PHASES:
        if getattr(config.phases, phase_name) is not None:
            _check_phase_data(config, phase_name)
    _check_evaluation(config)
    check_integrations(config.logging.integrations())
    if config.model.name_or_path != SYNTHETIC_MODEL:
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
        if phase.train_languages:
            languages = _checked(f"phases.{phase_name}.train_languages", spec.resolve_languages, phase.train_languages)
        else:
            languages = list(spec.languages) if spec.family is Family.MASKED_LM else [spec.train_language]
        data_dir = config.data.get(name)
        for language in languages:
            for split in splits:
                check_data_files(spec, split, language, data_dir, field)
        if reads_dev_split(spec, phase):
            check_data_files(spec, spec.dev_split, spec.train_language, data_dir, field)


def _check_evaluation(config: ExperimentConfig) -> None:
    evaluate = config.phases.evaluate
    if evaluate is None:
        return
    for name in config.evaluation_tasks():
        spec = get_task(name)
        _checked("phases.evaluate.split", spec.check_split, evaluate.split)
        languages = _checked("phases.evaluate.languages", spec.resolve_languages, evaluate.languages)
        for language in languages:
            check_data_files(spec, evaluate.split, language, config.data.get(name), f"phases.evaluate ({name})")


def check_data_files(
    spec: TaskSpec, split: str, language: str, data_dir: str | Path | None, field: str, dir_field: str | None = None
) -> None:
    """The local files of one split and language exist (the hub and generated tasks are not checked)."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigError(
            f"{dir_field or f'data.{spec.name}'}: directory '{data_dir}' does not exist; point it at the task's files"
        )
    _checked(field, spec.data_files, split, language, data_dir)


def _checked(field: str, check, *args):
    """Run a task-level check; its one-line error gains the config field it came from."""
    try:
        return check(*args)
    except FastXLTError as error:
        raise type(error)(f"{field}: {error}") from None


# ---------------------------------------------------------------------------------------- model


def _check_max_lengths(config: ExperimentConfig) -> None:
    """No phase may ask for more tokens than the model's position embeddings hold."""
    limit = model_position_limit(config.model.name_or_path)
    if limit is None:
        return
    for phase_name in TRAINING_PHASES:
        if getattr(config.phases, phase_name) is not None:
            check_max_length(config.phase_optimization(phase_name).max_length, limit, _length_field(config, phase_name),
                             config.model.name_or_path)  # fmt: skip


def _length_field(config: ExperimentConfig, phase_name: str) -> str:
    """Where a phase's max_length is set: its own optimization section, or the experiment-wide one."""
    phase = getattr(config.phases, phase_name)
    if "max_length" in (phase.optimization or {}):
        return f"phases.{phase_name}.optimization.max_length"
    return "optimization.max_length"


def check_max_length(max_length: int, limit: int, field: str, model: str) -> None:
    if max_length > limit:
        raise ConfigError(
            f"{field}: {max_length} exceeds the {limit} tokens that model '{model}' can take "
            f"(its position embeddings); set {field} to {limit} or less"
        )


def model_position_limit(name_or_path: str | Path, field: str = "model.name_or_path") -> int | None:
    """The longest input the model's position embeddings hold, from its ``config.json`` (None: no limit)."""
    from transformers import AutoConfig

    from fastxlt.models.encoder import resolve_encoder_path

    try:
        model_config = AutoConfig.from_pretrained(resolve_encoder_path(name_or_path))
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{field}: cannot read the config of '{name_or_path}' ({reason}); "
            "pass a local Hugging Face directory or a hub name available offline"
        ) from None
    return position_limit(model_config)


def position_limit(model_config: Any) -> int | None:
    """Usable positions of a model config: XLM-R's is ``max_position_embeddings - padding_idx - 1`` (512 of 514)."""
    model_type = getattr(model_config, "model_type", "")
    positions = getattr(model_config, "max_position_embeddings", None)
    if model_type in RELATIVE_POSITION_TYPES or positions is None:
        return None
    if model_type in PADDING_OFFSET_TYPES:
        padding_idx = getattr(model_config, "pad_token_id", None)
        return int(positions) - (1 if padding_idx is None else int(padding_idx)) - 1
    return int(positions)


__all__ = ["check_experiment", "check_run_dir", "check_data_files", "check_max_length", "model_position_limit",
           "position_limit"]  # fmt: skip
