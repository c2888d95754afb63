"""Evaluate trained models (one per arm) on tasks over languages: the engine behind the ``evaluate``
phase and ``fastxlt-eval``. One loaded model serves every language of every task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from fastxlt.errors import CheckpointError, ConfigError
from fastxlt.evaluation.zero_shot import evaluate_task
from fastxlt.export import OnnxModel, precision_name
from fastxlt.inference.precision import cast_for_precision, resolve_eval_precision
from fastxlt.models.encoder import load_tokenizer
from fastxlt.models.limits import check_max_length, model_position_limit
from fastxlt.models.transfer import HEADS_FILENAME, load_transfer_model
from fastxlt.robustness import parse_perturbations
from fastxlt.robustness.evaluate import check_supported
from fastxlt.tasks.aggregate import xtreme_score
from fastxlt.tasks.base import get_task
from fastxlt.tasks.sanity import check_data_files
from fastxlt.utils.hardware import default_device
from fastxlt.utils.io import write_json_atomic
from fastxlt.utils.locks import DirectoryLock
from fastxlt.utils.run_layout import RESULTS_FILENAME, final_models, is_grid_dir

BACKENDS = ("torch", "onnx")
CLI_OUTPUT_DIRNAME = "eval-cli"  # fastxlt-eval writes to <model>/eval-cli unless --output says otherwise
DEFAULT_MAX_LENGTH = 256  # fastxlt-eval without --max-length: this, or less where a model's positions end


def evaluate_models(
    models: Mapping[str, Path],
    task_names: list[str],
    *,
    languages: str | list[str],
    split: str,
    out_root: Path,
    data_dirs: Mapping[str, str | None],
    max_length: int | None,
    batch_tokens: int | None = None,
    name: str = "evaluation",
    backend: str = "torch",
    quantize: str | None = None,
    precision: str = "fp32",
    allow_constant_labels: bool = False,
    perturbations: str | list[str] | None = None,
    perturbation_seed: int = 0,
    muse_dir: str | None = None,
    max_examples: int | None = None,
) -> dict[str, Any]:
    """Results for every (arm, task, language); written to ``out_root/results.json`` as well.

    ``perturbations`` (``NAME[:strength]`` specs, ``fastxlt.robustness``) are evaluated after each task's
    clean pass, seeded by ``perturbation_seed``: ``arms[arm]["tasks"][task]["perturbations"]``.

    ``backend="onnx"`` evaluates through ONNX Runtime: each arm's heads are exported once (beside the
    checkpoint, ``<model>/onnx/``, parity-checked, reused on re-runs) and ``quantize="int8"`` runs them
    with int8 dynamic quantisation. ``precision`` ('fp32', 'bf16' or 'auto', see
    ``fastxlt.inference.precision``) is the torch backend's; ``batch_tokens=None`` takes the device's
    default token budget. ``allow_constant_labels`` scores files whose gold is one value throughout
    (refused otherwise: ``fastxlt.tasks.sanity``). ``max_length=None`` takes ``DEFAULT_MAX_LENGTH``, or
    the models' position limit when that is smaller; a given ``max_length`` beyond it is refused.
    """
    precision = _check_backend(backend, quantize, precision)
    specs = [get_task(task) for task in task_names]
    max_length = _preflight(models, specs, languages, split, data_dirs, max_length)
    perturbation_list = _check_perturbations(perturbations, specs, backend)
    results: dict[str, Any] = {"name": name, "arms": {}}
    for arm, model_dir in models.items():
        model = _load_model(Path(model_dir), specs, backend, quantize, precision, data_dirs, max_length)
        tokenizer = load_tokenizer(Path(model_dir) / "encoder")
        model_id = _model_id(Path(model_dir)) + _backend_tag(backend, quantize, precision)
        arm_results: dict[str, Any] = {"model": str(model_dir), "tasks": {}}
        for spec in specs:
            arm_results["tasks"][spec.name] = evaluate_task(
                model, tokenizer, spec,
                languages=spec.resolve_languages(languages), split=split,
                out_dir=Path(out_root) / "eval" / arm, model_id=model_id,
                data_dir=data_dirs.get(spec.name), max_length=max_length, batch_tokens=batch_tokens,
                allow_constant_labels=allow_constant_labels, perturbations=perturbation_list,
                perturbation_seed=perturbation_seed, muse_dir=muse_dir, max_examples=max_examples,
            )
        arm_results["benchmark_score"] = xtreme_score({t: r["score"] for t, r in arm_results["tasks"].items()})
        results["arms"][arm] = arm_results
    write_json_atomic(Path(out_root) / RESULTS_FILENAME, results)
    return results


def evaluate_model(
    model: str, task_names: list[str], *, languages: str, split: str, data_dir: str | None, output: str | None,
    batch_tokens: int | None, max_length: int | None, backend: str = "torch", quantize: str | None = None,
    precision: str = "fp32", allow_constant_labels: bool = False, perturbations: str | None = None,
    perturbation_seed: int = 0, muse_dir: str | None = None, max_examples: int | None = None,
) -> dict[str, Any]:
    """``fastxlt-eval``: evaluate every final model found under ``model`` (a run or a phase model dir);
    results go to ``output``, by default ``<model>/eval-cli`` (``CLI_OUTPUT_DIRNAME``)."""
    models = find_models(Path(model))
    out_root = Path(output) if output else Path(model) / CLI_OUTPUT_DIRNAME
    with DirectoryLock(out_root, what="evaluation output directory", fix="use another --output"):  # one writer
        return evaluate_models(
            models, task_names, languages=languages, split=split, out_root=out_root,
            data_dirs={task: data_dir for task in task_names}, max_length=max_length, batch_tokens=batch_tokens,
            name=str(model), backend=backend, quantize=quantize, precision=precision,
            allow_constant_labels=allow_constant_labels, perturbations=perturbations,
            perturbation_seed=perturbation_seed, muse_dir=muse_dir, max_examples=max_examples,
        )


def _check_perturbations(perturbations: str | list[str] | None, specs, backend: str) -> list:
    """Parse the specs and refuse tasks or backends they cannot run on, before any model is loaded."""
    if not perturbations:
        return []
    parsed = parse_perturbations(perturbations)
    for spec in specs:
        check_supported(spec, parsed, backend)
    return parsed


def _preflight(
    models: Mapping[str, Path], specs, languages, split: str, data_dirs: Mapping[str, str | None],
    max_length: int | None,
) -> int:
    """Fail on an unknown language or split, a missing data file or a max_length beyond a model's positions
    before any model is loaded; returns the max_length to use."""
    for spec in specs:
        spec.check_split(split)
        for language in spec.resolve_languages(languages):
            check_data_files(spec, split, language, data_dirs.get(spec.name), f"task '{spec.name}'",
                             dir_field=f"data directory of task '{spec.name}'")
    limits = {str(d): model_position_limit(Path(d) / "encoder", field="model") for d in models.values()}
    limits = {model_dir: limit for model_dir, limit in limits.items() if limit is not None}
    if max_length is None:
        return min([DEFAULT_MAX_LENGTH, *limits.values()])
    for model_dir, limit in limits.items():
        check_max_length(max_length, limit, "max_length", model_dir)
    return max_length


def find_models(path: Path) -> dict[str, Path]:
    """Arm name -> model directory (with ``encoder/`` and ``heads.pt``) for a run, phase or model dir."""
    if not path.exists():
        raise CheckpointError(f"model path '{path}' does not exist; pass a fastxlt run directory or a phase's model directory")
    if is_grid_dir(path):
        return _grid_final_models(path)
    if (path / HEADS_FILENAME).is_file():
        return {path.parent.name if path.name == "model" else path.name: path}
    if (path / "model" / HEADS_FILENAME).is_file():
        return {path.name: path / "model"}
    # a folder of model directories named target/<arm>/model (a run directory of fastxlt's former single runner)
    targets = sorted(p.parent for p in path.glob(f"target/*/model/{HEADS_FILENAME}"))
    if targets:
        return {p.parent.name: p for p in targets}
    raise CheckpointError(
        f"'{path}' holds no trained fastxlt model (no {HEADS_FILENAME}); pass a run directory or a phase's model directory"
    )


def _grid_final_models(run_dir: Path) -> dict[str, Path]:
    """A run directory's trained cells, named by their one axis's value when there is one axis (a single
    experiment: ``none``, ``synth-nli``), by their cell id otherwise."""
    models = {cell_id: model for cell_id, model in final_models(run_dir).items() if (model / HEADS_FILENAME).is_file()}
    if not models:
        raise CheckpointError(f"run directory '{run_dir}' has no finished cell yet; run it first")
    if all(cell_id.count("=") == 1 and "," not in cell_id for cell_id in models):
        return {cell_id.split("=", 1)[1]: model for cell_id, model in models.items()}
    return models


def _check_backend(backend: str, quantize: str | None, precision: str) -> str:
    """Validate the engine settings; returns the precision the torch backend runs at ('fp32' for onnx)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; choose {' or '.join(BACKENDS)}")
    if quantize is not None and backend != "onnx":
        raise ConfigError(f"quantize={quantize} needs the onnx backend (--backend onnx)")
    resolved = resolve_eval_precision(precision, default_device())
    if backend == "onnx":
        if precision == "bf16":
            raise ConfigError("precision bf16 runs on the torch backend; with --backend onnx use --quantize int8 for speed")
        return "fp32"
    return resolved


def _load_model(
    model_dir: Path, specs, backend: str, quantize: str | None, precision: str, data_dirs: Mapping[str, str | None],
    max_length: int,
):
    """The PyTorch model in ``precision``, or its exported graphs (exported on first use, parity-checked on the
    task's own data)."""
    if backend == "onnx":
        return OnnxModel.for_phase(
            model_dir, specs, precision=precision_name(quantize, False), data_dirs=data_dirs, max_length=max_length
        )
    # The device that 'auto' precision was resolved for: the GPU when there is one, else the CPU.
    return cast_for_precision(load_transfer_model(model_dir, specs).to(default_device()), precision)


def _backend_tag(backend: str, quantize: str | None, precision: str = "fp32") -> str:
    """Cached per-language results are keyed by backend and precision too; torch fp32 keeps the plain id."""
    if backend == "torch":
        return "" if precision == "fp32" else f"#torch-{precision}"
    return f"#{backend}-{quantize or 'fp32'}"


def _model_id(model_dir: Path) -> str:
    """Identifies a trained model: its path and when its heads were written."""
    return f"{model_dir.resolve()}@{(model_dir / HEADS_FILENAME).stat().st_mtime_ns}"
