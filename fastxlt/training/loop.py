"""One training loop for every phase (MLM warm-up, intermediate, target), on a DeepSpeed engine.

A phase reads its tasks' English training data, mixes the tasks with a deterministic multi-task
schedule, trains the shared encoder and the task heads, evaluates on the English dev sets for early
stopping, checkpoints for resumption, and finally writes ``<phase_dir>/model/{encoder/,heads.pt}`` and
``<phase_dir>/phase.json``. A phase directory with ``phase.json`` is complete and is never trained again;
one with checkpoints resumes from the latest, and ends with the same weights as an uninterrupted run.

Determinism: the batch at global micro-batch index g, its MLM masking, and the dropout of its forward
pass are pure functions of (seed, g), so neither a restart nor the number of ranks' history matters.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fastxlt.config import FP32_WEIGHT_PRECISIONS, DeepSpeedConfig, OptimizationConfig, PhaseConfig
from fastxlt.errors import CheckpointError, ConfigError, DataNotFoundError
from fastxlt.inference.predict import score_examples
from fastxlt.kernels.patching import patch
from fastxlt.models.encoder import load_encoder, load_tokenizer
from fastxlt.models.transfer import TransferModel, save_phase_outputs
from fastxlt.tasks import metrics
from fastxlt.tasks.base import Family, TaskSpec
from fastxlt.tasks.features import Feature, ops_for
from fastxlt.training import distributed
from fastxlt.training.adversarial import adversarial_step
from fastxlt.training.checkpoint import CheckpointManager, consolidated_state_dict
from fastxlt.training.deepspeed_config import build_deepspeed_config
from fastxlt.training.dropout import install_fast_dropout
from fastxlt.training.embedding_grads import RowSparseEmbeddingGrads
from fastxlt.training.optim import lr_schedule, make_optimizer
from fastxlt.training.precision import resolved_deepspeed
from fastxlt.training.samplers import MultiTaskSchedule, mixing_rates
from fastxlt.training.tracking import StepMeter, Tracker, open_tracker, run_name
from fastxlt.utils.io import read_json, write_json_atomic
from fastxlt.utils.run_layout import PHASE_DONE

MODEL_DIRNAME = "model"
BEST_DIRNAME = "best"
SNAPSHOTS_DIRNAME = "snapshots"
KILL_ENV = "FASTXLT_DEBUG_KILL_AT_STEP"  # tests: SIGKILL this process right after checkpointing this optimizer step
FINISH_KILL_ENV = "FASTXLT_DEBUG_KILL_IN_FINISH"  # tests: SIGKILL this process at this point (1-4) of _finish
KEEP_ALLREDUCE_ENV = "FASTXLT_KEEP_ONE_RANK_ALLREDUCE"  # tests: keep DeepSpeed's identity all-reduce on one rank
WEIGHTS_MARKER = "weights.json"  # in model/ and best/: the optimizer step whose weights the directory holds


@dataclass
class PhasePlan:
    """Everything one phase needs; built by the pipeline from the experiment config."""

    name: str
    tasks: list[TaskSpec]
    phase: PhaseConfig
    optimization: OptimizationConfig
    init_encoder: str
    tokenizer: str
    phase_dir: Path
    seed: int
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    data_dirs: dict[str, str] = field(default_factory=dict)
    kernels: str = "none"
    pooling: str = "cls"
    report_to: list[str] = field(default_factory=list)  # HF Trainer's names (logging.report_to); never in a store key
    run_name: str = ""  # the curves' run name (phase kind, key, cell); default: the phase name and its folder


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[Feature]
    dev: list[Feature]
    dev_examples: list[Any] = field(default_factory=list)
    available: int = 0  # training examples before train_examples / train_fraction took a subset


def phase_is_done(phase_dir: Path) -> bool:
    return (Path(phase_dir) / PHASE_DONE).is_file()


def run_phase(plan: PhasePlan) -> dict[str, Any]:
    """Train one phase (or return the summary of a finished one)."""
    phase_dir = Path(plan.phase_dir)
    if phase_is_done(phase_dir):
        _remove_leftovers(phase_dir)  # a kill right after phase.json can leave checkpoints/ and best/ behind
        return read_json(phase_dir / PHASE_DONE)
    distributed.init_distributed()
    import deepspeed

    plan = dataclasses.replace(plan, deepspeed=resolved_deepspeed(plan.deepspeed))  # 'auto' -> this machine's
    settings = plan.optimization
    tokenizer = load_tokenizer(plan.tokenizer)
    task_data = [_load_task_data(spec, plan, tokenizer) for spec in plan.tasks]
    check_train_examples(plan.phase, {data.spec.name: data.available for data in task_data}, "train_examples")
    world = distributed.world_size()
    sizes = [len(data.train) for data in task_data]
    rates = mixing_rates(sizes, plan.phase.sampler, plan.phase.sampling_cap, plan.phase.temperature)
    total_steps = _total_optimizer_steps(sizes, plan.phase.sampling_cap, settings, world)
    micro_steps = total_steps * settings.grad_accum
    schedule = MultiTaskSchedule(
        sizes, rates, settings.batch_size, micro_steps * world, plan.seed,
        lengths=_train_lengths(task_data) if settings.group_by_length else None,
        group_by_length=settings.group_by_length,
    )
    eval_every = settings.eval_every or max(1, _steps_per_epoch(sizes, plan.phase.sampling_cap, settings, world))
    evaluates = any(data.dev for data in task_data)
    checkpoint_every = settings.checkpoint_every or (eval_every if evaluates else max(1, total_steps // 4))

    model = _build_model(plan, task_data)
    optimizer = make_optimizer(model, settings, offload=plan.deepspeed.offload_optimizer)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lr_schedule(total_steps, settings),
        config=build_deepspeed_config(plan.deepspeed, settings),
    )
    fill_missing = skip_one_rank_allreduce(engine, plan.deepspeed)
    checkpoints = CheckpointManager(phase_dir / "checkpoints", keep=settings.keep_checkpoints)
    state = checkpoints.resume(engine) or {"micro_step": 0, "best_score": None, "bad_evals": 0, "history": []}
    if distributed.is_main():
        phase_dir.mkdir(parents=True, exist_ok=True)
        _describe_phase(plan, sizes, rates, total_steps, world, state["micro_step"])

    tracker = _open_tracker(plan, state["micro_step"] // settings.grad_accum)
    try:
        state = _train(engine, plan, task_data, schedule, state, tokenizer, eval_every, checkpoint_every, checkpoints,
                       fill_missing_grads=fill_missing, tracker=tracker)
    finally:
        tracker.close()
    summary = _finish(engine, plan, tokenizer, state, total_steps, sizes, rates)
    checkpoints.remove_all()
    return summary


# ---------------------------------------------------------------------------------------- set-up


def _open_tracker(plan: PhasePlan, start_step: int) -> Tracker:
    """Rank 0's curve writers for ``plan.report_to`` (TensorBoard under the phase directory, wandb)."""
    name = plan.run_name or run_name(plan.name, Path(plan.phase_dir).name)
    config = {"phase": plan.name, "seed": plan.seed, **asdict(plan.optimization)}
    return open_tracker(plan.report_to, Path(plan.phase_dir), name, start_step=start_step, config=config,
                        main=distributed.is_main())


def forward_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a training forward runs in: ``torch.autocast`` to bf16 for ``bf16_autocast`` (products and
    attention in bf16; LayerNorm, softmax, the loss and the fp32 weights, gradients and optimizer as in fp32),
    nothing otherwise (DeepSpeed's bf16/fp16 modes cast the weights themselves)."""
    if precision == "bf16_autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def skip_one_rank_allreduce(engine, deepspeed_settings) -> bool:
    """Turn off DeepSpeed's gradient all-reduce where it is the identity: one rank, no ZeRO, fp32 weights.

    There it still flattens every gradient into a fresh buffer, divides by 1 and copies it back: about a fifth
    of an fp32 step of multilingual-e5-small on 2 CPU cores (issue 13). Returns whether it did: the caller then
    fills missing gradients with zeros (``fill_missing_gradients``), the one other thing that all-reduce does. ZeRO stages >= 1 reduce through their
    own optimizer, and DeepSpeed's fp16/bf16 optimizers keep gradient buffers of their own, so both keep it.
    ``FASTXLT_KEEP_ONE_RANK_ALLREDUCE=1`` keeps it everywhere (a test compares the weights both ways).
    """
    skip = (
        engine.dp_world_size == 1 and deepspeed_settings.zero_stage == 0
        and deepspeed_settings.precision in FP32_WEIGHT_PRECISIONS
        and os.environ.get(KEEP_ALLREDUCE_ENV) != "1"
    )
    if skip:
        engine.enable_backward_allreduce = False
    return skip


def fill_missing_gradients(model: torch.nn.Module) -> None:
    """Give every trainable parameter without a gradient a zero one, as DeepSpeed's all-reduce does before it
    reduces: AdamW then decays those parameters (another task's head in a multi-task phase, an unused pooler)
    exactly as in a run that keeps the all-reduce, so skipping it changes no weight."""
    for param in model.parameters():
        if param.requires_grad and param.grad is None and param.numel():
            param.grad = torch.zeros_like(param)


def _train_lengths(task_data: list[TaskData]) -> list[list[int]]:
    """Token length of every training feature of every task (what length grouping sorts by)."""
    return [[ops_for(data.spec).length(feature) for feature in data.train] for data in task_data]


def _load_task_data(spec: TaskSpec, plan: PhasePlan, tokenizer) -> TaskData:
    """English training examples (optionally a seeded subset) and the English dev set used for early stopping."""
    data_dir = plan.data_dirs.get(spec.name)
    ops = ops_for(spec)
    max_length = plan.optimization.max_length
    splits = train_splits(plan.phase)
    per_language = [
        [example for split in splits for example in spec.load(split, language, data_dir)]
        for language in _train_languages(spec, plan.phase)
    ]
    dev_examples: list = []
    if plan.phase.dev_holdout:
        examples = [example for rows in per_language for example in rows]
        if plan.phase.dev_holdout >= len(examples):
            raise ConfigError(
                f"task '{spec.name}': dev_holdout {plan.phase.dev_holdout} leaves no training data of {len(examples)} examples"
            )
        order = np.random.default_rng(0).permutation(len(examples))  # a fixed random slice, not the file's tail
        held = set(order[: plan.phase.dev_holdout].tolist())
        dev_examples = [ex for i, ex in enumerate(examples) if i in held]
        per_language = [[ex for i, ex in enumerate(examples) if i not in held]]
    elif reads_dev_split(spec, plan.phase):
        dev_examples = spec.load(spec.dev_split, spec.train_language, data_dir)
    examples = subset_examples(per_language, plan.phase)
    train = ops.featurize(spec, examples, tokenizer, max_length)
    if not train:
        raise DataNotFoundError(f"task '{spec.name}' has no training examples in split '{plan.phase.train_split}'; check the data directory")
    dev = ops.featurize(spec, dev_examples, tokenizer, max_length) if dev_examples else []
    return TaskData(spec, train, dev, list(dev_examples), available=sum(map(len, per_language)))


def train_splits(phase: PhaseConfig) -> list[str]:
    """``train_split`` may join splits with '+': "validation+test" trains on both (no training set at hand)."""
    return [split for split in phase.train_split.split("+") if split]


def reads_dev_split(spec: TaskSpec, phase: PhaseConfig) -> bool:
    """Whether early stopping reads the task's English dev split: not when it is held out of, or part of, training."""
    return (
        not phase.dev_holdout and spec.family is not Family.MASKED_LM
        and spec.dev_split in spec.splits and spec.dev_split not in train_splits(phase)
    )  # fmt: skip


def check_train_examples(phase: PhaseConfig, available: dict[str, int], field: str) -> None:
    """Refuse a ``train_examples`` beyond the training data of every task of the phase (task -> examples):
    it would train on all of them silently, and a grid cell labelled 99999 would really be "all". A cap that
    binds one task of a multi-task phase is meaningful and kept. Preflight runs this too, before any training."""
    wanted = phase.train_examples
    if wanted is None or not available or wanted <= max(available.values()):
        return
    largest = max(available.values())
    if len(available) == 1:
        ((task, count),) = available.items()
        data = f"the {count} training examples of task '{task}'"
    else:
        counts = ", ".join(f"{task}: {count}" for task, count in available.items())
        data = f"the training examples of every task of the phase ({counts})"
    raise ConfigError(f"{field}: {wanted} exceeds {data}; set it to {largest} or less, "
                      "or leave it out (target_size 'all' in a grid) to train on all of them")


def subset_examples(per_language: list[list[Any]], phase: PhaseConfig) -> list[Any]:
    """The training examples a phase uses: all of them, or ``train_examples`` / ``train_fraction`` of them.

    The subset is a prefix of one permutation seeded by ``phase.subset_seed``, so the 250-example set of a
    target-size curve lies inside its 500-example set. With several languages the budget is the total over
    languages, dealt round-robin along the permutation: each language gets an equal share and, when the
    languages' files are parallel (same length), the shares are different items -- a multilingual phase sees
    as many examples, and as much content, as a monolingual one.
    """
    if phase.train_examples is None and phase.train_fraction is None:
        return [example for rows in per_language for example in rows]
    total = sum(len(rows) for rows in per_language)
    wanted = phase.train_examples if phase.train_examples is not None else max(1, round(phase.train_fraction * total))
    rng = np.random.default_rng(phase.subset_seed)
    lengths = {len(rows) for rows in per_language}
    if len(per_language) > 1 and len(lengths) == 1:  # parallel files: one permutation of the shared item indices
        order, count = rng.permutation(lengths.pop()), len(per_language)
        # pass p gives item order[k] the language (k + p) % count: the first pass sees every item once, in
        # balanced languages; all passes together hold every (language, item) pair exactly once
        picks = [((k + p) % count, int(item)) for p in range(count) for k, item in enumerate(order)]
    else:
        orders = [rng.permutation(len(rows)).tolist() for rows in per_language]
        picks = [(lang, orders[lang][k]) for k in range(max(map(len, orders), default=0))
                 for lang in range(len(per_language)) if k < len(orders[lang])]
    chosen = sorted(picks[:wanted])  # file order within each language: the schedule decides the training order
    return [per_language[lang][index] for lang, index in chosen]


def _train_languages(spec: TaskSpec, phase: PhaseConfig) -> list[str]:
    """English for the recipe's tasks; every language for masked LM (multilingual MLM), unless configured."""
    if phase.train_languages:
        return spec.resolve_languages(phase.train_languages)
    return list(spec.languages) if spec.family is Family.MASKED_LM else [spec.train_language]


def _build_model(plan: PhasePlan, task_data: list[TaskData]) -> TransferModel:
    dropout = plan.optimization.dropout
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    torch.manual_seed(plan.seed)  # identical head initialisation on every rank and every restart
    encoder = load_encoder(plan.init_encoder, **overrides)
    if plan.optimization.freeze_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)
    model = TransferModel(encoder, [data.spec for data in task_data], pooling=plan.pooling)
    if plan.kernels != "none":
        patch(model.encoder, backend=plan.kernels)
        for head in model.heads.values():
            if hasattr(head, "kernel_backend"):
                head.kernel_backend = plan.kernels
    masked_lm = any(spec.family is Family.MASKED_LM for spec in plan.tasks)
    install_speed_options(model, plan.optimization, masked_lm=masked_lm)
    return model


def install_speed_options(model: TransferModel, settings: OptimizationConfig, *, masked_lm: bool) -> None:
    """``fast_dropout`` and ``sparse_embedding_grads`` on a built model (the benchmark calls this too).

    Masked LM ties its decoder to the word embeddings: a dense gradient reaches them anyway, and summing both would
    differ from the dense reference in rounding, so those phases keep the dense backward (the option promises
    bit-identical weights)."""
    if settings.fast_dropout:
        install_fast_dropout(model)
    embeddings = model.encoder.get_input_embeddings()
    if settings.sparse_embedding_grads and embeddings.weight.requires_grad and not masked_lm:
        model._sparse_embedding_grads = RowSparseEmbeddingGrads(embeddings)  # its hooks live as long as the model


def _steps_per_epoch(sizes: list[int], cap: int | None, settings: OptimizationConfig, world: int) -> int:
    """Optimizer steps for one pass over the (capped) mixture."""
    examples = sum(min(size, cap) if cap else size for size in sizes)
    return max(1, math.ceil(examples / (settings.batch_size * settings.grad_accum * world)))


def _total_optimizer_steps(sizes: list[int], cap: int | None, settings: OptimizationConfig, world: int) -> int:
    if settings.max_steps is not None:
        return settings.max_steps
    return max(1, math.ceil(settings.epochs * _steps_per_epoch(sizes, cap, settings, world)))


def _describe_phase(plan, sizes, rates, total_steps, world, start_micro_step) -> None:
    mix = ", ".join(f"{d.name} {n} ex ({r:.0%})" for d, n, r in zip(plan.tasks, sizes, rates))
    resumed = f", resuming at micro-step {start_micro_step}" if start_micro_step else ""
    tqdm.write(f"[{plan.name}] {mix}; {total_steps} optimizer steps on {world} rank(s){resumed}")


# ---------------------------------------------------------------------------------------- the loop


def _train(engine, plan, task_data, schedule, state, tokenizer, eval_every, checkpoint_every, checkpoints,
           *, fill_missing_grads: bool = False, tracker: Tracker | None = None) -> dict:
    settings = plan.optimization
    rank, world = distributed.rank(), distributed.world_size()
    micro_steps = schedule.total_batches // world
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    bar = tqdm(
        total=micro_steps // settings.grad_accum,
        initial=state["micro_step"] // settings.grad_accum,
        desc=plan.name,
        unit="step",
        disable=not distributed.is_main(),
        dynamic_ncols=True,
    )
    snapshot_steps = resolve_snapshot_steps(plan.phase.snapshots, micro_steps // settings.grad_accum)
    engine.train()
    started, examples_seen, running_loss = time.perf_counter(), 0, None
    tracker, meter = tracker or Tracker([]), StepMeter()
    while state["micro_step"] < micro_steps and not state.get("stopped"):
        micro_step = state["micro_step"]
        meter.begin()
        global_index = micro_step * world + rank
        task_index, rows = schedule.batch(global_index)
        data = task_data[task_index]
        ops = ops_for(data.spec)
        generator = torch.Generator().manual_seed(_mix(plan.seed, global_index, 1))
        batch = ops.collate([data.train[i] for i in rows], tokenizer, generator)
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        if plan.phase.adversarial is None:
            torch.manual_seed(_mix(plan.seed, global_index, 2))  # dropout depends on (seed, batch) only
            with forward_precision(engine.device, plan.deepspeed.precision):
                loss, _ = engine(head=engine.module.head_for(data.spec.name), **batch)
            engine.backward(loss)
        else:  # its own forward/backward passes; dropout and noise still depend on (seed, batch) only
            with forward_precision(engine.device, plan.deepspeed.precision):
                loss = adversarial_step(engine, engine.module.head_for(data.spec.name), batch,
                                        plan.phase.adversarial, _mix(plan.seed, global_index, 2),
                                        _mix(plan.seed, global_index, 3))
        if fill_missing_grads and engine.is_gradient_accumulation_boundary():
            fill_missing_gradients(engine.module)
        value = float(loss.detach())
        meter.add(value, len(rows))
        if tracker.active and engine.is_gradient_accumulation_boundary():
            meter.before_step(engine)
        engine.step()
        state["micro_step"] = micro_step + 1
        examples_seen += len(rows)
        running_loss = value if running_loss is None else 0.95 * running_loss + 0.05 * value
        if state["micro_step"] % settings.grad_accum:
            continue
        step = state["micro_step"] // settings.grad_accum
        bar.update(1)
        bar.set_postfix(loss=f"{running_loss:.4f}", ex_per_s=f"{examples_seen * world / (time.perf_counter() - started):.1f}")
        tracker.log(meter.scalars(engine, world), step)
        stop = False
        if step % eval_every == 0 or state["micro_step"] == micro_steps:
            stop = _evaluate_and_track(engine, plan, task_data, tokenizer, state, step, running_loss)
            tracker.log_dev(state["history"][-1], step)
            state["stopped"] = stop  # checkpointed: a phase resumed after an early stop does not train on
        if step in snapshot_steps:
            _save_snapshot(engine, plan, tokenizer, state, step)
        if step % checkpoint_every == 0 or stop or state["micro_step"] == micro_steps:
            checkpoints.save(engine, step, state)
            tracker.flush()
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        if stop:
            break
    bar.close()
    return state


def resolve_snapshot_steps(points: list[int | float], total_steps: int) -> set[int]:
    """Optimizer steps to snapshot: ints are steps, floats in (0, 1] fractions of the planned steps."""
    steps = set()
    for point in points:
        step = point if isinstance(point, int) else max(1, round(point * total_steps))
        if step > total_steps:
            raise ConfigError(f"snapshot at step {step} is beyond the phase's {total_steps} optimizer steps; lower it or train longer")
        steps.add(int(step))
    return steps


def snapshot_dir(phase_dir: Path, step: int) -> Path:
    return Path(phase_dir) / SNAPSHOTS_DIRNAME / f"step-{step:08d}"


def _save_snapshot(engine, plan: PhasePlan, tokenizer, state: dict, step: int) -> None:
    """Encoder + heads at this step, and its English dev score when the step was also an evaluation.

    Written before the step's checkpoint: a kill in between re-runs the step and rewrites the same snapshot.
    """
    _save_model(engine, plan, tokenizer, snapshot_dir(plan.phase_dir, step))
    if distributed.is_main():
        dev = next((entry.get("dev_mean") for entry in state["history"] if entry["step"] == step), None)
        write_json_atomic(snapshot_dir(plan.phase_dir, step) / "snapshot.json", {"step": step, "dev_score": dev})
    distributed.barrier()


def _mix(seed: int, index: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, index, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _evaluate_and_track(engine, plan, task_data, tokenizer, state, step, running_loss) -> bool:
    """English dev evaluation; saves the best model; returns whether to stop early."""
    scores = dev_scores(engine.module, task_data, tokenizer, plan.optimization.eval_batch_tokens)
    entry = {"step": step, "train_loss": running_loss, **{f"dev_{k}": v for k, v in scores.items()}}
    state["history"].append(entry)
    if not scores:
        return False
    score = scores["mean"]
    improved = state["best_score"] is None or score > state["best_score"]
    if improved:
        state["best_score"], state["best_step"], state["bad_evals"] = score, step, 0
        _save_model(engine, plan, tokenizer, Path(plan.phase_dir) / BEST_DIRNAME, step=step)
    else:
        state["bad_evals"] += 1
    if distributed.is_main():
        tqdm.write(f"[{plan.name}] step {step}: dev {score:.2f} (best {state['best_score']:.2f} at step {state['best_step']})")
    patience = plan.optimization.patience
    return bool(distributed.broadcast_object(patience is not None and state["bad_evals"] >= patience))


def dev_scores(model, task_data: list[TaskData], tokenizer, batch_tokens: int) -> dict[str, float]:
    """Primary English dev score per task (percent) and their mean."""
    scores = {}
    for data in task_data:
        if not data.dev:
            continue
        result, _ = score_examples(model, data.spec, data.dev_examples, data.dev, tokenizer, batch_tokens=batch_tokens)
        scores[data.spec.name] = metrics.primary_score(data.spec.metric, result)
    if scores:
        scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def _save_model(engine, plan: PhasePlan, tokenizer, out_dir: Path, step: int | None = None) -> None:
    """Write the model to ``out_dir`` through a staging folder; ``step`` is recorded in ``weights.json``."""
    staged = _stage_model(engine, plan, tokenizer, out_dir, step)
    if distributed.is_main():
        _replace_dir(staged, out_dir)
    distributed.barrier()


def _stage_model(engine, plan: PhasePlan, tokenizer, out_dir: Path, step: int | None) -> Path:
    """Every rank gathers the weights (a collective under ZeRO-3); rank 0 writes them to ``<out_dir>.tmp``."""
    state_dict = consolidated_state_dict(engine)
    staged = out_dir.with_name(out_dir.name + ".tmp")
    if distributed.is_main():
        shutil.rmtree(staged, ignore_errors=True)
        save_phase_outputs(engine.module, staged, tokenizer, state_dict)
        if step is not None:
            write_json_atomic(staged / WEIGHTS_MARKER, {"step": step})
    return staged


def _replace_dir(staged: Path, out_dir: Path) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
    staged.rename(out_dir)


def _weights_step(model_dir: Path) -> int | None:
    """The step recorded in a model directory's ``weights.json``; None when absent or unreadable."""
    try:
        return int(read_json(model_dir / WEIGHTS_MARKER)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finish(engine, plan, tokenizer, state, total_steps, sizes, rates) -> dict[str, Any]:
    """Put the phase's final weights in ``model/``, then write ``phase.json`` atomically, last.

    Idempotent, so a kill at any point and a resume end with the same files as an uninterrupted run: the
    final weights are the best dev model's (``best/``) when the phase evaluated, else the last step's, and
    ``model/weights.json`` records which step ``model/`` holds, so a resumed finish sees what is already
    done instead of guessing from which folders exist.
    """
    phase_dir = Path(plan.phase_dir)
    final = phase_dir / MODEL_DIRNAME
    last_step = state["micro_step"] // plan.optimization.grad_accum
    from_best = state.get("best_step") is not None
    wanted = state["best_step"] if from_best else last_step
    # Decide once, on rank 0, before anything moves: every rank must take the same branch (barriers).
    action = distributed.broadcast_object(_finish_action(phase_dir, wanted, from_best) if distributed.is_main() else None)
    _debug_kill_in_finish(1)  # decided, nothing moved
    if action == "promote":
        if distributed.is_main():
            shutil.rmtree(final, ignore_errors=True)
            _debug_kill_in_finish(2)  # old model/ gone, best/ not moved yet
            (phase_dir / BEST_DIRNAME).rename(final)
    elif action == "save":
        staged = _stage_model(engine, plan, tokenizer, final, last_step)
        if distributed.is_main():
            _debug_kill_in_finish(2)  # model.tmp/ written, not moved yet
            _replace_dir(staged, final)
    distributed.barrier()
    _debug_kill_in_finish(3)  # model/ final, no phase.json yet
    summary = {
        "phase": plan.name,
        "tasks": [spec.name for spec in plan.tasks],
        "train_sizes": sizes,
        "mixing_rates": [float(r) for r in rates],
        "optimizer_steps": last_step,
        "planned_steps": total_steps,
        "best_dev_score": state.get("best_score"),
        "best_step": state.get("best_step"),
        "history": state["history"],
        "init_encoder": plan.init_encoder,
        "seed": plan.seed,
        "world_size": distributed.world_size(),
        "optimization": asdict(plan.optimization),
        "deepspeed": asdict(plan.deepspeed),
    }
    if distributed.is_main():
        write_json_atomic(phase_dir / PHASE_DONE, summary)
        _debug_kill_in_finish(4)  # phase.json written, checkpoints/ not removed yet
    distributed.barrier()
    return summary


def _finish_action(phase_dir: Path, wanted_step: int, from_best: bool) -> str:
    """'keep' (model/ already holds step ``wanted_step``), 'promote' (move best/ there) or 'save' (the engine's)."""
    if _weights_step(phase_dir / MODEL_DIRNAME) == wanted_step:
        return "keep"
    if not from_best:
        return "save"
    best = phase_dir / BEST_DIRNAME
    if best.is_dir() and _weights_step(best) in (wanted_step, None):  # None: best/ of an older fastxlt
        return "promote"
    raise CheckpointError(
        f"the best model of '{phase_dir}' (step {wanted_step}) is neither in {BEST_DIRNAME}/ nor in {MODEL_DIRNAME}/; "
        "delete that folder to train the phase again"
    )


def _remove_leftovers(phase_dir: Path) -> None:
    """What a finished phase no longer needs, if a kill after ``phase.json`` left it (rank 0 only)."""
    if distributed.is_main():
        for name in ("checkpoints", BEST_DIRNAME, BEST_DIRNAME + ".tmp", MODEL_DIRNAME + ".tmp"):
            shutil.rmtree(phase_dir / name, ignore_errors=True)


def _debug_kill_in_finish(point: int) -> None:
    """Tests: SIGKILL this process at ``point`` of the finish when ``FASTXLT_DEBUG_KILL_IN_FINISH`` names it."""
    if os.environ.get(FINISH_KILL_ENV) == str(point):
        os.kill(os.getpid(), signal.SIGKILL)


def phase_model_dir(phase_dir: Path) -> Path:
    return Path(phase_dir) / MODEL_DIRNAME
