"""The plan of phases for one experiment, run into one run directory.

    pretrained encoder ──(mlm, optional)──> base encoder
    base ──(intermediate)──> intermediate encoder ──(target)──> arm "<intermediate tasks>"
    base ─────────────────────────────────────────(target)──> arm "baseline" (if asked, or if no intermediate)
    every arm's final model ──(evaluate)──> zero-shot scores in every language

Run-directory layout (everything a report needs is in here):

    config.yaml                      the resolved config
    pretrained/                      the embedded default's tokenizer + initial tiny encoder (synthetic only)
    mlm/  intermediate/              phase dirs: model/{encoder/,heads.pt}, phase.json, checkpoints/ while running
    target/<arm>/                    one target phase per arm
    eval/<arm>/<task>/<lang>.json    predictions + scores per language, written atomically
    results.json                     all scores, per arm, task and language, plus the aggregates
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fastxlt.config import ExperimentConfig, dump_config
from fastxlt.errors import ConfigError
from fastxlt.evaluation.model_eval import evaluate_models
from fastxlt.experiments.phases import SYNTHETIC_MODEL, phase_of
from fastxlt.experiments.preflight import check_experiment
from fastxlt.synthetic import build_default_assets
from fastxlt.training import distributed
from fastxlt.training.loop import PhasePlan, phase_model_dir, run_phase
from fastxlt.training.tracking import run_name
from fastxlt.utils.io import write_text_atomic
from fastxlt.utils.locks import DirectoryLock
from fastxlt.utils.run_layout import CONFIG_FILENAME

BASELINE_ARM = "baseline"


@dataclass
class Arm:
    """One way of producing a final model: with a given intermediate phase, or without one."""

    name: str
    intermediate: bool


def plan_arms(config: ExperimentConfig) -> list[Arm]:
    arms = []
    phases = config.phases
    if phases.intermediate is None or config.compare_without_intermediate:
        arms.append(Arm(BASELINE_ARM, intermediate=False))
    if phases.intermediate is not None:
        arms.append(Arm("+".join(phases.intermediate.tasks), intermediate=True))
    return arms


def run_experiment(config: ExperimentConfig, *, evaluate: bool = True) -> dict[str, Any]:
    """Run (or resume) every phase of the experiment and return the results."""
    check_experiment(config)  # every check that needs files or the model config, before any training
    run_dir = Path(config.run_dir)
    distributed.prepare_environment()
    # One writer per run directory: rank 0 holds the lock for the whole run (the other ranks of its launch
    # are part of the same run); a second `fastxlt run` on this directory is refused with one line.
    with DirectoryLock(run_dir, fix="use another run_dir") if distributed.is_main() else nullcontext():
        return _run_locked(config, run_dir, evaluate=evaluate)


def _run_locked(config: ExperimentConfig, run_dir: Path, *, evaluate: bool) -> dict[str, Any]:
    """``run_experiment``'s body, run while this process holds the run directory's lock."""
    if distributed.is_main():
        _write_or_check_config(config, run_dir)
    base_encoder, tokenizer_path = _pretrained(config, run_dir)
    phases = config.phases
    if phases.mlm is not None:
        run_phase(_plan(config, "mlm", run_dir / "mlm", base_encoder, tokenizer_path))
        base_encoder = str(phase_model_dir(run_dir / "mlm") / "encoder")

    final_models: dict[str, Path] = {}
    for arm in plan_arms(config):
        encoder = base_encoder
        if arm.intermediate:
            run_phase(_plan(config, "intermediate", run_dir / "intermediate", encoder, tokenizer_path))
            encoder = str(phase_model_dir(run_dir / "intermediate") / "encoder")
            final_models[arm.name] = phase_model_dir(run_dir / "intermediate")
        if phases.target is not None:
            target_dir = run_dir / "target" / arm.name
            run_phase(_plan(config, "target", target_dir, encoder, tokenizer_path, label=f"target[{arm.name}]"))
            final_models[arm.name] = phase_model_dir(target_dir)

    if not evaluate or phases.evaluate is None or not distributed.is_main():
        distributed.barrier()
        return {}
    results = evaluate_arms(config, final_models, run_dir)
    distributed.barrier()
    return results


def evaluate_arms(config: ExperimentConfig, final_models: dict[str, Path], run_dir: Path) -> dict[str, Any]:
    """Zero-shot evaluation of every arm's final model on every evaluation task and language."""
    return evaluate_models(final_models, config.evaluation_tasks(), out_root=run_dir, **evaluation_settings(config))


def evaluation_settings(config: ExperimentConfig) -> dict[str, Any]:
    """The ``evaluate_models`` settings a config's evaluate section asks for (shared with grid cells)."""
    evaluate = config.phases.evaluate
    max_length = config.phase_optimization("target").max_length if config.phases.target else config.optimization.max_length
    return dict(
        languages=evaluate.languages, split=evaluate.split, data_dirs=config.data, max_length=max_length,
        batch_tokens=evaluate.batch_tokens, name=config.name, backend=evaluate.backend, quantize=evaluate.quantize,
        precision=evaluate.precision, allow_constant_labels=evaluate.allow_constant_labels,
        perturbations=evaluate.perturbations, perturbation_seed=config.seed, muse_dir=evaluate.muse_dir,
        max_examples=evaluate.max_examples,
    )


# ---------------------------------------------------------------------------------------- helpers


def _plan(config: ExperimentConfig, kind: str, phase_dir: Path, encoder: str, tokenizer: str, label: str | None = None) -> PhasePlan:
    """The ``kind`` phase's plan in this run directory; ``label`` names an arm's target phase in the logs."""
    name = label or kind
    return phase_of(config, kind).plan(
        phase_dir=phase_dir, init_encoder=encoder, tokenizer=tokenizer, name=name, run_name=run_name(name, config.name)
    )


def _pretrained(config: ExperimentConfig, run_dir: Path) -> tuple[str, str]:
    """The starting encoder and tokenizer; for ``synthetic``, built into the run directory first."""
    if config.model.name_or_path == SYNTHETIC_MODEL:
        target = run_dir / "pretrained"
        if distributed.is_main():
            build_default_assets(target, seed=config.seed)
        _wait_for(target / "config.json")
        return str(target), str(target)
    return config.model.name_or_path, config.model.tokenizer or config.model.name_or_path


def _wait_for(path: Path, timeout: float = 600.0) -> None:
    """Other ranks wait for rank 0's files without a process group (it may not exist yet)."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {path}")
        time.sleep(0.2)


# Fields that change how a run is carried out or reported, not what it trains: free to change on resume.
OPERATIONAL_FIELDS = ("name", "run_dir", "kernels", "source", "logging")
OPERATIONAL_OPTIMIZATION = ("checkpoint_every", "keep_checkpoints", "eval_batch_tokens")


def _training_identity(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that determines the trained weights."""
    data = {k: v for k, v in data.items() if k not in OPERATIONAL_FIELDS}
    data["phases"] = {k: v for k, v in (data.get("phases") or {}).items() if k != "evaluate"}
    for section in [data.get("optimization") or {}] + [p.get("optimization") or {} for p in data["phases"].values() if p]:
        for name in OPERATIONAL_OPTIMIZATION:
            section.pop(name, None)
    return data


def _write_or_check_config(config: ExperimentConfig, run_dir: Path) -> None:
    """Write config.yaml; refuse to continue a run directory that was trained with different settings."""
    path = run_dir / CONFIG_FILENAME
    text = dump_config(config)
    if path.is_file():
        existing = _training_identity(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        current = _training_identity(yaml.safe_load(text))
        if existing != current:
            changed = sorted(k for k in set(existing) | set(current) if existing.get(k) != current.get(k))
            raise ConfigError(
                f"run directory '{run_dir}' was trained with a different config (differs in: {', '.join(changed)}); "
                "set a new run_dir or delete the old one"
            )
    write_text_atomic(path, text)
