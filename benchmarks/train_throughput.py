"""Training speed: the Hugging Face Trainer users run against a plain PyTorch loop and fastxlt's DeepSpeed engine.

    python -m benchmarks.train_throughput --model .cache/me5-small [--data ../shared/data/xnli] [--quick]

The same encoder (``--model``: multilingual-e5-small, built by ``shared/tools/me5-small/build.sh``), the same English
data (XNLI's English dev file: a fixed 490 pairs held out for accuracy, the other 2,000 for training, as in
``configs/me5-small-xnli.yaml``), the same hyperparameters (batch 32, max length 128, AdamW lr 5e-5, weight decay
0.01 off biases and LayerNorms, 10 % linear warm-up then linear decay, gradient clipping at 1.0) and the same
examples in the same optimizer steps, for:

(a) the Hugging Face ``Trainer`` on ``AutoModelForSequenceClassification`` with its defaults otherwise (fp32, no
    length grouping; ``report_to=[]``, no saving); its sampler replaced by the fixed batch order below;
(b) a plain PyTorch loop: fastxlt's ``TransferModel``, ``make_optimizer`` (torch AdamW) and schedule, no engine;
(c) fastxlt fp32 through its DeepSpeed engine: the pieces ``fastxlt.training.loop.run_phase`` uses
    (``make_optimizer``, ``lr_schedule``, ``build_deepspeed_config``, ``deepspeed.initialize``, ``engine.backward``,
    ``engine.step``), without its dev evaluations and checkpoints. Like ``run_phase``, on one rank without ZeRO in
    fp32 it turns off DeepSpeed's gradient all-reduce, the identity there that still flattens every gradient
    into a fresh 118M-element buffer and copies it back, and zero-fills missing gradients as that all-reduce
    would (``fastxlt.training.loop.skip_one_rank_allreduce``: the same weights, a test checks);
(d) fastxlt's fastest path here, training every parameter: the engine of (c) with the five settings a config
    turns on (``deepspeed.precision: bf16_autocast``, ``optimization.group_by_length: 16``,
    ``optimization.fused_adamw: true``, ``optimization.sparse_embedding_grads: true``,
    ``optimization.fast_dropout: true``; the training loop's own functions run them here):
    - bf16 products where they are faster than fp32 products here: ``torch.autocast`` to bf16 around the forward
      (matrix products and attention in bf16; LayerNorm, softmax, the loss, the fp32 weights, their gradients and
      the optimizer stay fp32), where ``fastxlt.utils.hardware.fast_bf16`` says so (AMX CPUs, bf16 GPUs) or where
      a check measures an encoder-sized bf16 product at least 1.3x faster than the fp32 one
      (``fastxlt.utils.hardware.bf16_product_speedup``, the rule of ``deepspeed.precision: auto``: CPUs with
      AVX-512 BF16 but no AMX, e.g. AMD Zen 4, where oneDNN runs bf16 products natively and fp32 ones go to MKL);
    - length-grouped batches (the same 32-example batches' examples, sorted by length within groups of 16 batches,
      the batch order within each group then shuffled);
    - ``torch.optim.AdamW(fused=True)`` when a check here shows that it matches the unfused update to fp32 rounding
      (``fused_adamw_max_diff``);
    - the word embeddings' gradient as the batch's rows added into one persistent buffer instead of a fresh
      zero-filled 250k x 384 matrix every step (``fastxlt.training.embedding_grads``: bit-identical gradients);
    - dropout by a fused C++ kernel (Philox keep masks made and applied in one pass) instead of torch's
      per-element Bernoulli sampler on a CPU (``fastxlt.training.dropout``: the same keep probability, another
      random stream; nothing changes on a GPU);
(e) the same as (d) with the word embeddings frozen (``optimization.freeze_embeddings``: 96M of me5-small's 118M
    parameters): a documented option that changes the recipe, never counted as (d).

Every path runs in its own process (``--worker``), so peak memory is that process's peak resident set (``getrusage``;
on a GPU ``torch.cuda.max_memory_allocated``). Speed counts optimizer steps 2..N (step 1 warms up): examples/s and
real (non-pad) tokens/s, and examples per second of the process's CPU time (all threads), which a shared machine's
load stretches far less than the wall time (``fast_cpu_speedup``, ``engine_vs_torch_cpu``). The loss is the mean
training loss of the last 5 steps; accuracy is on the held-out pairs, for (a), (d) and (e). ``--quick``: 20 steps;
the full run: 2 epochs over the 2,000 pairs (126 steps). ``--smoke``: the synthetic tiny model and synthetic NLI,
3 steps, every path in one process. The machine may be shared: rows carry the load average.

Then the masked-LM head at XLM-R's vocabulary (issue 13 item 3): ``MaskedLMHead`` tied to the encoder's own
word embeddings (250,037 x 384 for multilingual-e5-small), on a batch of 32 x 128 hidden states with 15 % of the
positions labelled (614), one forward + backward of head and loss per step, fp32, in two processes:

- ``mlm-unfused``: the head's opt-out (``kernel_backend="none"``): the full (4,096 x vocabulary) fp32 logits, then
  ``F.cross_entropy`` over every position (what a Hugging Face ``...ForMaskedLM`` does);
- ``mlm-chunked``: the head's default (``kernel_backend="auto"``: the torch chunk loop on a CPU, Triton on CUDA).

Memory is the step's peak above what the process held before it: on a CPU the peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs`` before the steps) minus the resident set before them; on a GPU
``max_memory_allocated`` minus ``memory_allocated``. Time is the mean of the steps after a first, untimed one.
The unfused row is skipped (said so in the table) when the machine's available memory could not hold its logits.
``--part train|mlm`` runs one half.

A table, one CSV row per path in ``benchmarks/results/train_throughput.csv``, and a last line
``RESULT engine_vs_torch= fast_speedup= accuracy_delta= ... mlm_memory_ratio= mlm_time_ratio= ...``: (c)/(b)
examples/s, (d)/(a) examples/s, (d)'s held-out accuracy minus (a)'s in points, and the unfused MLM step's peak memory
and time divided by the chunked step's (above 1: the chunked head is leaner / faster).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as a file: the repository root replaces this folder at the head of sys.path, where a
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # file named like an installed package would shadow it

from benchmarks._results import SMOKE_HELP, append_rows, machine, module_command, results_path, skip  # noqa: E402

from fastxlt.config import DeepSpeedConfig, OptimizationConfig  # noqa: E402
from fastxlt.utils.hardware import BF16_MIN_SPEEDUP, bf16_product_speedup, cpu_has_amx, default_device, fast_bf16  # noqa: E402

RESULTS = results_path("train_throughput.csv")
BATCH = 32
MAX_LENGTH = 128
LR = 5e-5
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.1
SEED = 0
HOLDOUT = 490
GROUP_BATCHES = 16  # length grouping: batches sorted together (Hugging Face's group_by_length uses 50)
LOSS_WINDOW = 5
PATHS = ("trainer", "torch", "engine", "fast", "frozen")
LABELS = {"trainer": "(a) HF Trainer fp32", "torch": "(b) torch loop fp32", "engine": "(c) fastxlt engine fp32",
          "fast": "(d) fastxlt fastest", "frozen": "(e) (d) + frozen embeddings"}
FAST_PATHS = ("fast", "frozen")  # the paths with (d)'s settings
WORKER_TAG = "WORKER_JSON "


# ------------------------------------------------------------------------------------------ data


def load_data(args) -> tuple[str, list, list]:
    """(task name, training examples, held-out examples): XNLI English dev, or synthetic NLI in smoke mode."""
    from fastxlt.tasks.base import get_task

    if args.smoke:
        examples = get_task("synth-nli").load("train", "en")
        return "synth-nli", examples[:256], examples[256:320]
    examples = get_task("xnli").load("validation", "en", args.data)
    order = np.random.default_rng(SEED).permutation(len(examples))
    held = set(order[:HOLDOUT].tolist())
    return ("xnli", [e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def step_batches(n_train: int, steps: int) -> list[list[int]]:
    """The examples of every optimizer step: seeded permutations of the training set (one per epoch), cut in 32s."""
    rng = np.random.default_rng(SEED + 1)
    rows = np.concatenate([rng.permutation(n_train) for _ in range(math.ceil(steps * BATCH / n_train))])
    return [rows[i * BATCH:(i + 1) * BATCH].tolist() for i in range(steps)]


def length_grouped(batches: list[list[int]], lengths: list[int]) -> list[list[int]]:
    """The same examples in the same number of 32-example batches, sorted by length within groups of batches
    (``optimization.group_by_length``: the training loop's own function, ``group_batches_by_length``)."""
    from fastxlt.training.samplers import group_batches_by_length

    grouped: list[list[int]] = []
    for start in range(0, len(batches), GROUP_BATCHES):
        pool = np.concatenate(batches[start:start + GROUP_BATCHES])
        rng = np.random.default_rng([SEED + 2, start])
        grouped += [rows.tolist() for rows in group_batches_by_length(pool, np.asarray(lengths), BATCH, rng)]
    return grouped


def settings(steps: int) -> OptimizationConfig:
    return OptimizationConfig(lr=LR, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO, batch_size=BATCH,
                              grad_accum=1, max_length=MAX_LENGTH, max_steps=steps)


# ------------------------------------------------------------------------------------------ fused AdamW check


def fused_adamw_max_diff(steps: int = 5) -> float | None:
    """Largest |fused - unfused| AdamW parameter difference after ``steps`` identical updates, in units of the
    fp32 spacing at the parameters' largest magnitude (<= a few units: exact to rounding); None if unsupported."""
    torch.manual_seed(SEED)
    shapes = [(4096, 384), (384,), (1536, 384)]
    reference = [torch.randn(shape) * 0.05 for shape in shapes]
    fused_params = [torch.nn.Parameter(p.clone()) for p in reference]
    plain_params = [torch.nn.Parameter(p.clone()) for p in reference]
    try:
        fused = torch.optim.AdamW(fused_params, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)
    except (RuntimeError, TypeError):
        return None
    plain = torch.optim.AdamW(plain_params, lr=LR, weight_decay=WEIGHT_DECAY)
    for _ in range(steps):
        for a, b in zip(fused_params, plain_params):
            a.grad = torch.randn_like(a) * 0.01
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    with torch.no_grad():
        scale = max(float(p.abs().max()) for p in plain_params)
        spacing = float(np.spacing(np.float32(scale)))
        return max(float((a - b).abs().max()) for a, b in zip(fused_params, plain_params)) / spacing


def fast_precision(device: torch.device) -> tuple[str, float | None]:
    """(d)'s precision, ``bf16`` (autocast) or ``fp32``, and the measured bf16 product speedup on a CPU."""
    if fast_bf16(device):
        return "bf16", None
    if device.type != "cpu":
        return "fp32", None
    speedup = bf16_product_speedup()
    return ("bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"), speedup


# ------------------------------------------------------------------------------------------ the paths


class StepClock:
    """Wall time and process CPU time of optimizer steps 2..N, and the loss of every step.

    The CPU time (all threads) is the load-robust measure on a shared machine: other processes stretch the wall
    time of every step, not the work a step does (spinning OpenMP threads aside)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.started: float | None = None
        self.ended: float | None = None
        self.cpu_started: float | None = None
        self.cpu_ended: float | None = None

    def step_done(self, loss: float) -> None:
        self.losses.append(loss)
        now, cpu = time.perf_counter(), time.process_time()
        if len(self.losses) == 1:
            self.started, self.cpu_started = now, cpu
        self.ended, self.cpu_ended = now, cpu


def run_trainer(model_dir: Path, train_features: list[dict], batches: list[list[int]], steps: int) -> tuple[Any, StepClock]:
    """(a) ``Trainer`` with its defaults, fed the fixed batches in order (its shuffling sampler swapped out)."""
    from torch.utils.data import SequentialSampler
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments)

    from fastxlt.models.encoder import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    rows = [{"input_ids": train_features[i]["input_ids"], "labels": train_features[i]["label"]}
            for batch in batches for i in batch]
    clock = StepClock()

    step_losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(step_losses[-1])

    class FixedOrderTrainer(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

        def compute_loss(self, *args, **kwargs):  # records each step's loss as the other loops do (no log printing)
            loss = super().compute_loss(*args, **kwargs)
            step_losses.append(float((loss[0] if isinstance(loss, tuple) else loss).detach()))
            return loss

    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LR,
            weight_decay=WEIGHT_DECAY, warmup_steps=int(round(steps * WARMUP_RATIO)), report_to=[],
            save_strategy="no", seed=SEED, disable_tqdm=True, dataloader_num_workers=0,
        )
        trainer = FixedOrderTrainer(model=model, args=arguments, train_dataset=rows,
                                    data_collator=DataCollatorWithPadding(tokenizer), callbacks=[Clock()])
        trainer.train()
    clock.optimizer = "AdamW fused" if "fused" in str(arguments.optim).lower() else "AdamW"  # its default
    return model, clock


def build_transfer_model(model_dir: Path, task: str):
    from fastxlt.models.encoder import load_encoder
    from fastxlt.models.transfer import TransferModel
    from fastxlt.tasks.base import get_task

    torch.manual_seed(SEED)
    return TransferModel(load_encoder(model_dir), [get_task(task)], pooling="mean")


def run_torch(model_dir: Path, task: str, train_features, batches, steps: int, tokenizer) -> tuple[Any, StepClock]:
    """(b) The same model, optimizer, schedule and clipping as the engine, in a plain PyTorch loop."""
    from fastxlt.tasks.base import get_task
    from fastxlt.tasks.features import ops_for
    from fastxlt.training.optim import lr_schedule, make_optimizer

    spec, plan = get_task(task), settings(steps)
    ops, model = ops_for(spec), build_transfer_model(model_dir, task)
    optimizer = make_optimizer(model, plan)
    scheduler = lr_schedule(steps, plan)(optimizer)
    clock, head = StepClock(), model.head_for(task)
    model.train()
    for rows in batches:
        batch = ops.collate([train_features[i] for i in rows], tokenizer)
        loss, _ = model(head=head, **batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), plan.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        clock.step_done(float(loss.detach()))
    return model, clock


def run_engine(model_dir: Path, task: str, train_features, batches, steps: int, tokenizer, *, autocast: bool = False,
               fused: bool = False, fast: bool = False, freeze_embeddings: bool = False) -> tuple[Any, StepClock]:
    """(c)/(d)/(e) fastxlt's DeepSpeed engine in fp32, built from the pieces ``run_phase`` uses (one rank, ZeRO-0,
    fp32: no identity all-reduce, missing gradients zero-filled, as ``run_phase`` does); (d) adds bf16 autocast,
    fused AdamW, row-sparse embedding gradients and fast dropout; (e) freezes the word embeddings as the config
    option does."""
    import deepspeed

    from fastxlt.tasks.base import get_task
    from fastxlt.tasks.features import ops_for
    from fastxlt.training import distributed
    from fastxlt.training.deepspeed_config import build_deepspeed_config
    from fastxlt.training.loop import (fill_missing_gradients, forward_precision, install_speed_options,
                                       skip_one_rank_allreduce)
    from fastxlt.training.optim import lr_schedule, make_optimizer

    distributed.init_distributed()
    spec, plan = get_task(task), settings(steps)
    ops, model = ops_for(spec), build_transfer_model(model_dir, task)
    if freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    plan.fused_adamw = fused
    plan.sparse_embedding_grads = plan.fast_dropout = fast
    install_speed_options(model, plan, masked_lm=False)
    section = DeepSpeedConfig(precision="bf16_autocast" if autocast else "fp32")
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=make_optimizer(model, plan),
                                           lr_scheduler=lr_schedule(steps, plan),
                                           config=build_deepspeed_config(section, plan))
    fill_missing = skip_one_rank_allreduce(engine, section)
    clock, head = StepClock(), model.head_for(task)
    engine.train()
    for rows in batches:
        batch = {k: v.to(engine.device) for k, v in ops.collate([train_features[i] for i in rows], tokenizer).items()}
        with forward_precision(engine.device, section.precision):
            loss, _ = engine(head=head, **batch)
        engine.backward(loss)
        if fill_missing and engine.is_gradient_accumulation_boundary():
            fill_missing_gradients(engine.module)
        engine.step()
        clock.step_done(float(loss.detach()))
    return engine.module, clock


def held_out_accuracy(model, path: str, task: str, features: list[dict], tokenizer) -> float:
    """Accuracy (points) on the held-out pairs, batches of 64 in dataset order."""
    from fastxlt.tasks.base import get_task
    from fastxlt.tasks.features import ops_for

    ops, correct = ops_for(get_task(task)), 0
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(features), 64):
            batch = {k: v.to(device) for k, v in ops.collate(features[start:start + 64], tokenizer).items()}
            if path == "trainer":
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            else:
                _, logits = model(head=model.head_for(task), **batch)
            correct += int((logits.argmax(-1).cpu() == batch["labels"].cpu()).sum())
    return 100.0 * correct / len(features)


def run_worker(path: str, args) -> dict[str, Any]:
    """One path, measured: the dict printed after ``WORKER_JSON``."""
    from fastxlt.models.encoder import load_tokenizer
    from fastxlt.tasks.base import get_task
    from fastxlt.tasks.features import ops_for

    model_dir, steps = Path(args.model), args.steps
    task, train, held = load_data(args)
    tokenizer = load_tokenizer(model_dir)
    ops = ops_for(get_task(task))
    train_features = ops.featurize(get_task(task), train, tokenizer, MAX_LENGTH)
    held_features = ops.featurize(get_task(task), held, tokenizer, MAX_LENGTH)
    lengths = [len(f["input_ids"]) for f in train_features]
    batches = step_batches(len(train_features), steps)
    precision, fused_diff, fused, bf16_speedup = "fp32", None, False, None
    if path in FAST_PATHS:
        batches = length_grouped(batches, lengths)
        precision, bf16_speedup = fast_precision(default_device())
        fused_diff = fused_adamw_max_diff()
        fused = fused_diff is not None and fused_diff <= 4.0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if path == "trainer":
        model, clock = run_trainer(model_dir, train_features, batches, steps)
    elif path == "torch":
        model, clock = run_torch(model_dir, task, train_features, batches, steps, tokenizer)
    else:
        model, clock = run_engine(model_dir, task, train_features, batches, steps, tokenizer,
                                  autocast=precision == "bf16", fused=fused, fast=path in FAST_PATHS,
                                  freeze_embeddings=path == "frozen")
    seconds = (clock.ended - clock.started) if steps > 1 else math.nan
    cpu_seconds = (clock.cpu_ended - clock.cpu_started) if steps > 1 else math.nan
    timed = batches[1:]
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    accuracy = (held_out_accuracy(model, path, task, held_features, tokenizer)
                if path in ("trainer", *FAST_PATHS) else None)
    return {
        "path": path, "steps": steps, "seconds": seconds,
        "examples_per_s": sum(len(b) for b in timed) / seconds,
        "examples_per_cpu_s": sum(len(b) for b in timed) / cpu_seconds,
        "tokens_per_s": sum(lengths[i] for b in timed for i in b) / seconds,
        "peak_mb": peak / 2**20, "loss": float(np.nanmean(clock.losses[-LOSS_WINDOW:])),
        "accuracy": accuracy, "precision": "bf16 autocast" if precision == "bf16" else precision,
        "optimizer": getattr(clock, "optimizer", "AdamW fused" if fused else "AdamW"),
        "grouping": "length" if path in FAST_PATHS else "random",
        "embedding_grads": "frozen" if path == "frozen" else ("row-sparse" if path == "fast" else "dense"),
        "dropout": "fast" if path in FAST_PATHS else "torch",
        "fused_adamw_max_diff": fused_diff, "bf16_product_speedup": bf16_speedup,
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_pairs": len(train), "held_out_pairs": len(held),
    }


def spawn_worker(path: str, args) -> dict[str, Any]:
    """Run one path in a fresh process (its own peak memory, no state left by another path)."""
    command = [*module_command(__file__), "--worker", path, "--model", str(args.model),
               "--data", str(args.data), "--steps", str(args.steps)]
    command += [flag for flag, on in (("--smoke", args.smoke), ("--quick", args.quick)) if on]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    tagged = [line for line in result.stdout.splitlines() if line.startswith(WORKER_TAG)]
    if result.returncode != 0 or not tagged:
        raise SystemExit(f"path {path} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return json.loads(tagged[-1][len(WORKER_TAG):])


# ------------------------------------------------------------------------------------------ the masked-LM head


MLM_PATHS = ("mlm-unfused", "mlm-chunked")
MLM_LABELS = {"mlm-unfused": "MLM head unfused (opt-out)", "mlm-chunked": "MLM head chunked (default)"}
MLM_BACKENDS = {"mlm-unfused": "none", "mlm-chunked": "auto"}
MLM_MASKED = 0.15
MLM_UNFUSED_COPIES = 3  # logits-sized fp32 tensors the unfused pair holds at its peak (logits, log-softmax, gradient)


def mlm_shape(args) -> tuple[int, int]:
    """(batch, length) of the MLM step: the recipe's 32 x 128, or 4 x 32 in smoke mode."""
    return (4, 32) if args.smoke else (BATCH, MAX_LENGTH)


def mlm_steps(args) -> int:
    """Timed MLM steps (after one untimed): 1 in smoke and quick mode, 3 in the full run."""
    return 1 if args.smoke or args.quick else 3


def resident_bytes(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` (None where there is no procfs)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_resident() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def available_bytes() -> int | None:
    """``MemAvailable`` of the machine (None where there is no procfs)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mlm_inputs(hidden_size: int, vocab: int, args, device: torch.device):
    """Hidden states ``[B, T, H]`` (a leaf: its gradient is part of the step), a full attention mask, and labels with
    exactly 15 % of the positions set to a random word piece (seeded, so both processes see the same batch)."""
    batch, length = mlm_shape(args)
    gen = torch.Generator().manual_seed(SEED)
    sequence_output = torch.randn(batch, length, hidden_size, generator=gen)
    labels = torch.full((batch * length,), -100, dtype=torch.long)
    positions = torch.randperm(batch * length, generator=gen)[:round(MLM_MASKED * batch * length)]
    labels[positions] = torch.randint(0, vocab, (positions.numel(),), generator=gen)
    return (sequence_output.to(device).requires_grad_(), torch.ones(batch, length, dtype=torch.long, device=device),
            labels.view(batch, length).to(device))


def run_mlm_worker(path: str, args) -> dict[str, Any]:
    """One MLM head variant: a fresh head tied to the encoder's word embeddings, forward + backward per step."""
    from fastxlt.models.encoder import load_encoder
    from fastxlt.models.heads import MaskedLMHead

    device = default_device()
    encoder = load_encoder(args.model).to(device)
    embeddings = encoder.get_input_embeddings()
    vocab, hidden_size = embeddings.weight.shape
    batch, length = mlm_shape(args)
    logits_gb = batch * length * vocab * 4 / 1e9
    row = {"path": path, "case": MLM_LABELS[path], "vocab": vocab, "tokens": batch * length,
           "labelled": round(MLM_MASKED * batch * length), "logits_gb": logits_gb, "mlm_steps": mlm_steps(args)}
    available = available_bytes() if device.type == "cpu" else None
    if path == "mlm-unfused" and available is not None and MLM_UNFUSED_COPIES * logits_gb * 1e9 > 0.8 * available:
        return {**row, "skipped": f"needs ~{MLM_UNFUSED_COPIES * logits_gb:.1f} GB, {available / 1e9:.1f} GB available"}
    torch.manual_seed(SEED)
    eps = getattr(encoder.config, "layer_norm_eps", 1e-5)
    head = MaskedLMHead(hidden_size, embeddings, eps, kernel_backend=MLM_BACKENDS[path]).to(device)
    sequence_output, mask, labels = mlm_inputs(hidden_size, vocab, args, device)
    leaves = [sequence_output, embeddings.weight, *head.parameters()]

    def step() -> float:
        for leaf in leaves:
            leaf.grad = None
        loss, _ = head(sequence_output, mask, labels)
        loss.backward()
        return float(loss.detach())

    loss = step()  # untimed: first-call set-up; its gradients are dropped by the next step
    for leaf in leaves:
        leaf.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before, reset = resident_bytes("VmRSS"), reset_peak_resident()
        before = before if reset else None  # without a reset VmHWM would include the encoder's loading
    seconds = []
    for _ in range(mlm_steps(args)):
        started = time.perf_counter()
        loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        high = resident_bytes("VmHWM")
        peak = high - before if before is not None and high is not None else math.nan
    return {**row, "skipped": None, "seconds_per_step": float(np.mean(seconds)), "peak_mb": peak / 2**20,
            "loss": loss, "memory": "cuda allocated" if device.type == "cuda" else "resident set (VmHWM - VmRSS)"}


def print_mlm_table(results: dict[str, dict]) -> None:
    first = next(iter(results.values()))
    print(f"\nMLM head + loss, forward + backward: {first['tokens']} tokens ({first['labelled']} labelled) x "
          f"{first['vocab']:,} vocabulary, fp32 (the unfused logits alone: {first['logits_gb']:.2f} GB)")
    print(f"{'path':<28} {'s/step':>8} {'peak MB':>9} {'loss':>9}")
    for row in results.values():
        if row["skipped"]:
            print(f"{row['case']:<28} skipped: {row['skipped']}")
            continue
        print(f"{row['case']:<28} {row['seconds_per_step']:>8.3f} {row['peak_mb']:>9.0f} {row['loss']:>9.4f}")


def mlm_ratios(results: dict[str, dict]) -> dict[str, Any]:
    """Unfused over chunked (above 1: the chunked head is leaner / faster), and their loss difference."""
    unfused, chunked = results["mlm-unfused"], results["mlm-chunked"]
    if unfused["skipped"] or not chunked["peak_mb"] > 0:  # skipped, or too small for the resident set to show
        return {"mlm_memory_ratio": "nan", "mlm_time_ratio": "nan", "mlm_loss_diff": "nan",
                "mlm_chunked_peak_mb": f"{chunked['peak_mb']:.0f}", "mlm_unfused_skipped": bool(unfused["skipped"])}
    return {"mlm_memory_ratio": f"{unfused['peak_mb'] / chunked['peak_mb']:.2f}",
            "mlm_time_ratio": f"{unfused['seconds_per_step'] / chunked['seconds_per_step']:.2f}",
            "mlm_loss_diff": f"{abs(unfused['loss'] - chunked['loss']):.1e}",
            "mlm_chunked_peak_mb": f"{chunked['peak_mb']:.0f}", "mlm_unfused_peak_mb": f"{unfused['peak_mb']:.0f}"}


# ------------------------------------------------------------------------------------------ report


def environment() -> dict[str, Any]:
    import deepspeed
    import transformers

    return {**machine(), "threads": torch.get_num_threads(), "amx": cpu_has_amx(), "torch": torch.__version__,
            "transformers": transformers.__version__, "deepspeed": deepspeed.__version__}


def print_table(results: dict[str, dict]) -> None:
    base = results["trainer"]["examples_per_s"] if "trainer" in results else math.nan
    print(f"{'path':<28} {'precision':<13} {'optimizer':<11} {'batches':<7} {'trained':>8} {'ex/s':>6} {'tok/s':>6} "
          f"{'vs (a)':>7} {'ex/CPU-s':>8} {'vs (a)':>7} {'peak MB':>8} {'loss':>7} {'acc':>5}")
    cpu_base = results["trainer"]["examples_per_cpu_s"] if "trainer" in results else math.nan
    for path, row in results.items():
        accuracy = f"{row['accuracy']:.1f}" if row["accuracy"] is not None else "-"
        trained = f"{row['trained_parameters'] / 1e6:.1f}M" if row.get("trained_parameters") else "all"
        print(f"{LABELS[path]:<28} {row['precision']:<13} {row['optimizer']:<11} {row['grouping']:<7} {trained:>8} "
              f"{row['examples_per_s']:>6.1f} {row['tokens_per_s']:>6.0f} {row['examples_per_s'] / base:>6.2f}x "
              f"{row['examples_per_cpu_s']:>8.2f} {row['examples_per_cpu_s'] / cpu_base:>6.2f}x "
              f"{row['peak_mb']:>8.0f} {row['loss']:>7.4f} {accuracy:>5}")


def write_rows(results: dict[str, dict], mlm: dict[str, dict], args, env: dict) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    common = {"time": stamp, "benchmark": "train_throughput", "mode": mode, "model": args.model, **env}
    base = results["trainer"]["examples_per_s"] if "trainer" in results else math.nan
    rows = [{**common, "case": LABELS[path], **row, "speedup": row["examples_per_s"] / base}
            for path, row in results.items()]
    rows += [{**common, **row, "seconds": row.get("seconds_per_step")} for row in mlm.values()]
    fields = ["time", "benchmark", "mode", "case", "model", "steps", "train_pairs", "held_out_pairs", "seconds",
              "examples_per_s", "tokens_per_s", "speedup", "examples_per_cpu_s", "peak_mb", "loss", "accuracy",
              "precision", "optimizer", "grouping", "embedding_grads", "dropout", "fused_adamw_max_diff",
              "bf16_product_speedup", "trained_parameters", "vocab", "tokens", "labelled", "mlm_steps", "memory", "skipped"] + list(env)
    append_rows(RESULTS, fields, rows)


def train_result(results: dict[str, dict]) -> dict[str, Any]:
    """The RESULT keys of the paths that ran (``--paths``): each ratio needs both of its paths."""
    keys: dict[str, Any] = {}

    def ratio(key: str, top: str, bottom: str, field: str) -> None:
        if top in results and bottom in results:
            keys[key] = f"{results[top][field] / results[bottom][field]:.2f}"

    def accuracy_delta(key: str, path: str) -> None:
        if path in results and "trainer" in results:
            keys[key] = f"{results[path]['accuracy'] - results['trainer']['accuracy']:+.2f}"

    ratio("engine_vs_torch", "engine", "torch", "examples_per_s")
    ratio("fast_speedup", "fast", "trainer", "examples_per_s")
    accuracy_delta("accuracy_delta", "fast")
    ratio("fast_cpu_speedup", "fast", "trainer", "examples_per_cpu_s")
    ratio("engine_vs_torch_cpu", "engine", "torch", "examples_per_cpu_s")
    ratio("frozen_speedup", "frozen", "trainer", "examples_per_s")
    accuracy_delta("frozen_accuracy_delta", "frozen")
    if "trainer" in results:
        keys["trainer_examples_per_s"] = f"{results['trainer']['examples_per_s']:.1f}"
    if "fast" in results:
        d = results["fast"]
        speedup = d["bf16_product_speedup"]
        keys |= {"fast_precision": d["precision"].replace(" ", "_"),
                 "bf16_product_speedup": "n/a" if speedup is None else f"{speedup:.2f}",
                 "fast_optimizer": d["optimizer"].replace(" ", "_"), "fused_adamw_max_diff": d["fused_adamw_max_diff"]}
    return keys


def selected_paths(text: str) -> tuple[str, ...]:
    """``--paths a,d`` -> ("trainer", "fast"): letters or names, in the table's order."""
    letters = dict(zip("abcde", PATHS))
    wanted = {letters.get(part.strip(), part.strip()) for part in text.split(",") if part.strip()}
    unknown = wanted - set(PATHS)
    if unknown:
        raise SystemExit(f"--paths: unknown path(s) {', '.join(sorted(unknown))}; choose from a-e or {', '.join(PATHS)}")
    return tuple(path for path in PATHS if path in wanted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / ".cache" / "me5-small"), help="the encoder directory")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "xnli"), help="XNLI directory")
    parser.add_argument("--quick", action="store_true", help="20 optimizer steps, 1 timed MLM step")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (synthetic data, 3 steps, one process)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: 3 smoke, 20 quick, 2 epochs full)")
    parser.add_argument("--part", choices=("all", "train", "mlm"), default="all",
                        help="train: paths (a)-(d) only; mlm: the masked-LM head pair only")
    parser.add_argument("--paths", default="a,b,c,d,e",
                        help="training paths to run, e.g. a,d (the accuracy goal's pair in a long full run)")
    parser.add_argument("--worker", choices=PATHS + MLM_PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        if args.smoke:
            return skip(f"no encoder at {args.model}")
        raise SystemExit(f"no encoder at {args.model}; build it: bash ../shared/tools/me5-small/build.sh .cache/me5-small")
    if (not args.smoke and args.part != "mlm" and not (Path(args.data) / "xnli.dev.tsv").is_file()
            and not any(Path(args.data).glob("**/*dev*"))):
        raise SystemExit(f"no XNLI English dev file under {args.data}; pass --data DIR")
    args.steps = args.steps or (3 if args.smoke else 20 if args.quick else math.ceil(2 * 2000 / BATCH))
    # A one-rank group of our own: a RANK/MASTER_PORT inherited from a parent fastxlt process (a test run) would
    # make the Trainer's accelerate listen on the parent's port (EADDRINUSE).
    from fastxlt.training.distributed import prepare_environment

    prepare_environment()
    if args.worker:
        row = run_mlm_worker(args.worker, args) if args.worker in MLM_PATHS else run_worker(args.worker, args)
        print(WORKER_TAG + json.dumps(row))
        return 0
    results, mlm = {}, {}
    for path in selected_paths(args.paths) if args.part != "mlm" else ():
        print(f"{LABELS[path]}: {args.steps} steps ...", flush=True)
        results[path] = run_worker(path, args) if args.smoke else spawn_worker(path, args)
    for path in MLM_PATHS if args.part != "train" else ():
        print(f"{MLM_LABELS[path]}: 1 + {mlm_steps(args)} steps ...", flush=True)
        mlm[path] = run_mlm_worker(path, args) if args.smoke else spawn_worker(path, args)
    env = environment()
    if results:
        print_table(results)
    if mlm:
        print_mlm_table(mlm)
    write_rows(results, mlm, args, env)
    keys = {**(train_result(results) if results else {}), **(mlm_ratios(mlm) if mlm else {}),
            "steps": args.steps, "load_1min": env["load_1min"]}
    print("RESULT " + " ".join(f"{key}={value}" for key, value in keys.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
