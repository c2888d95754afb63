"""Training speed: the Hugging Face Trainer users run against a plain PyTorch loop and fastxlt's DeepSpeed engine.

    python benchmarks/train_throughput.py --model .cache/me5-small [--data ../shared/data/xnli] [--quick]

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
    ``engine.step``), without its dev evaluations and checkpoints;
(d) fastxlt's fastest path here: the engine of (c) in bf16 where ``fastxlt.utils.hardware.fast_bf16`` says so (AMX
    CPUs, bf16 GPUs; fp32 otherwise), length-grouped batches (the same 32-example batches' examples, sorted by
    length within groups of 16 batches, the batch order then shuffled), and ``torch.optim.AdamW(fused=True)`` when
    a check here shows that it matches the unfused update to fp32 rounding (``fused_adamw_max_diff``).

Every path runs in its own process (``--worker``), so peak memory is that process's peak resident set (``getrusage``;
on a GPU ``torch.cuda.max_memory_allocated``). Speed counts optimizer steps 2..N (step 1 warms up): examples/s and
real (non-pad) tokens/s. The loss is the mean training loss of the last 5 steps; accuracy is on the held-out pairs,
for (a) and (d). ``--quick``: 20 steps; the full run: 2 epochs over the 2,000 pairs (126 steps). ``--smoke``: the
synthetic tiny model and synthetic NLI, 3 steps, every path in one process. The machine may be shared: rows carry the
load average.

A table, one CSV row per path in ``benchmarks/results/train_throughput.csv``, and a last line
``RESULT engine_vs_torch= fast_speedup= accuracy_delta= ...``: (c)/(b) examples/s, (d)/(a) examples/s, and (d)'s
held-out accuracy minus (a)'s in points.
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
sys.path.insert(0, str(ROOT))

from _results import SMOKE_HELP, append_rows, machine, results_path, skip  # noqa: E402  (this folder is on sys.path)

from fastxlt.config import DeepSpeedConfig, OptimizationConfig  # noqa: E402
from fastxlt.utils.hardware import cpu_has_amx, default_device, fast_bf16  # noqa: E402

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
PATHS = ("trainer", "torch", "engine", "fast")
LABELS = {"trainer": "(a) HF Trainer fp32", "torch": "(b) torch loop fp32", "engine": "(c) fastxlt engine fp32",
          "fast": "(d) fastxlt fastest"}
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
    """The same examples in the same number of 32-example batches, sorted by length within groups of batches."""
    grouped: list[list[int]] = []
    for start in range(0, len(batches), GROUP_BATCHES):
        pool = sorted((i for batch in batches[start:start + GROUP_BATCHES] for i in batch), key=lambda i: lengths[i])
        grouped += [pool[j:j + BATCH] for j in range(0, len(pool), BATCH)]
    order = np.random.default_rng(SEED + 2).permutation(len(grouped))
    return [grouped[i] for i in order]


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


# ------------------------------------------------------------------------------------------ the paths


class StepClock:
    """Wall time of optimizer steps 2..N, and the loss of every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.started: float | None = None
        self.ended: float | None = None

    def step_done(self, loss: float) -> None:
        self.losses.append(loss)
        now = time.perf_counter()
        if len(self.losses) == 1:
            self.started = now
        self.ended = now


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


def run_engine(model_dir: Path, task: str, train_features, batches, steps: int, tokenizer, *, precision: str,
               fused: bool) -> tuple[Any, StepClock]:
    """(c)/(d) fastxlt's DeepSpeed engine, built from the pieces ``run_phase`` uses."""
    import deepspeed

    from fastxlt.tasks.base import get_task
    from fastxlt.tasks.features import ops_for
    from fastxlt.training import distributed
    from fastxlt.training.deepspeed_config import build_deepspeed_config
    from fastxlt.training.optim import lr_schedule, make_optimizer, parameter_groups

    distributed.init_distributed()
    spec, plan = get_task(task), settings(steps)
    ops, model = ops_for(spec), build_transfer_model(model_dir, task)
    optimizer = (torch.optim.AdamW(parameter_groups(model, plan.weight_decay), lr=plan.lr, betas=(0.9, 0.999),
                                   eps=1e-8, fused=True) if fused else make_optimizer(model, plan))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=lr_schedule(steps, plan),
                                           config=build_deepspeed_config(DeepSpeedConfig(precision=precision), plan))
    clock, head = StepClock(), model.head_for(task)
    engine.train()
    for rows in batches:
        batch = {k: v.to(engine.device) for k, v in ops.collate([train_features[i] for i in rows], tokenizer).items()}
        loss, _ = engine(head=head, **batch)
        engine.backward(loss)
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
    precision, fused_diff, fused = "fp32", None, False
    if path == "fast":
        batches = length_grouped(batches, lengths)
        precision = "bf16" if fast_bf16(default_device()) else "fp32"
        fused_diff = fused_adamw_max_diff()
        fused = fused_diff is not None and fused_diff <= 4.0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if path == "trainer":
        model, clock = run_trainer(model_dir, train_features, batches, steps)
    elif path == "torch":
        model, clock = run_torch(model_dir, task, train_features, batches, steps, tokenizer)
    else:
        model, clock = run_engine(model_dir, task, train_features, batches, steps, tokenizer, precision=precision,
                                  fused=fused)
    seconds = (clock.ended - clock.started) if steps > 1 else math.nan
    timed = batches[1:]
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    accuracy = held_out_accuracy(model, path, task, held_features, tokenizer) if path in ("trainer", "fast") else None
    return {
        "path": path, "steps": steps, "seconds": seconds,
        "examples_per_s": sum(len(b) for b in timed) / seconds,
        "tokens_per_s": sum(lengths[i] for b in timed for i in b) / seconds,
        "peak_mb": peak / 2**20, "loss": float(np.nanmean(clock.losses[-LOSS_WINDOW:])),
        "accuracy": accuracy, "precision": precision,
        "optimizer": "AdamW fused" if fused else "AdamW", "grouping": "length" if path == "fast" else "random",
        "fused_adamw_max_diff": fused_diff, "train_pairs": len(train), "held_out_pairs": len(held),
    }


def spawn_worker(path: str, args) -> dict[str, Any]:
    """Run one path in a fresh process (its own peak memory, no state left by another path)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", path, "--model", str(args.model),
               "--data", str(args.data), "--steps", str(args.steps)] + (["--smoke"] if args.smoke else [])
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    tagged = [line for line in result.stdout.splitlines() if line.startswith(WORKER_TAG)]
    if result.returncode != 0 or not tagged:
        raise SystemExit(f"path {path} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return json.loads(tagged[-1][len(WORKER_TAG):])


# ------------------------------------------------------------------------------------------ report


def environment() -> dict[str, Any]:
    import deepspeed
    import transformers

    return {**machine(), "threads": torch.get_num_threads(), "amx": cpu_has_amx(), "torch": torch.__version__,
            "transformers": transformers.__version__, "deepspeed": deepspeed.__version__}


def print_table(results: dict[str, dict]) -> None:
    base = results["trainer"]["examples_per_s"]
    print(f"{'path':<26} {'precision':<9} {'optimizer':<12} {'batches':<8} {'ex/s':>7} {'tok/s':>8} {'vs (a)':>7} "
          f"{'peak MB':>8} {'loss':>7} {'acc':>6}")
    for path, row in results.items():
        accuracy = f"{row['accuracy']:.1f}" if row["accuracy"] is not None else "-"
        print(f"{LABELS[path]:<26} {row['precision']:<9} {row['optimizer']:<12} {row['grouping']:<8} "
              f"{row['examples_per_s']:>7.1f} {row['tokens_per_s']:>8.0f} {row['examples_per_s'] / base:>6.2f}x "
              f"{row['peak_mb']:>8.0f} {row['loss']:>7.4f} {accuracy:>6}")


def write_rows(results: dict[str, dict], args, env: dict) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    base = results["trainer"]["examples_per_s"]
    rows = [{"time": stamp, "benchmark": "train_throughput", "mode": mode, "case": LABELS[path], "model": args.model,
             **row, "speedup": row["examples_per_s"] / base, **env} for path, row in results.items()]
    fields = ["time", "benchmark", "mode", "case", "model", "steps", "train_pairs", "held_out_pairs", "seconds",
              "examples_per_s", "tokens_per_s", "speedup", "peak_mb", "loss", "accuracy", "precision", "optimizer",
              "grouping", "fused_adamw_max_diff"] + list(env)
    append_rows(RESULTS, fields, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / ".cache" / "me5-small"), help="the encoder directory")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "xnli"), help="XNLI directory")
    parser.add_argument("--quick", action="store_true", help="20 optimizer steps")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (synthetic data, 3 steps, one process)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: 3 smoke, 20 quick, 2 epochs full)")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        if args.smoke:
            return skip(f"no encoder at {args.model}")
        raise SystemExit(f"no encoder at {args.model}; build it: bash ../shared/tools/me5-small/build.sh .cache/me5-small")
    if not args.smoke and not (Path(args.data) / "xnli.dev.tsv").is_file() and not any(Path(args.data).glob("**/*dev*")):
        raise SystemExit(f"no XNLI English dev file under {args.data}; pass --data DIR")
    args.steps = args.steps or (3 if args.smoke else 20 if args.quick else math.ceil(2 * 2000 / BATCH))
    # A one-rank group of our own: a RANK/MASTER_PORT inherited from a parent fastxlt process (a test run) would
    # make the Trainer's accelerate listen on the parent's port (EADDRINUSE).
    from fastxlt.training.distributed import prepare_environment

    prepare_environment()
    if args.worker:
        print(WORKER_TAG + json.dumps(run_worker(args.worker, args)))
        return 0
    results = {}
    for path in PATHS:
        print(f"{LABELS[path]}: {args.steps} steps ...", flush=True)
        results[path] = run_worker(path, args) if args.smoke else spawn_worker(path, args)
    env = environment()
    print_table(results)
    write_rows(results, args, env)
    a, b, c, d = (results[p] for p in PATHS)
    print(f"RESULT engine_vs_torch={c['examples_per_s'] / b['examples_per_s']:.2f} "
          f"fast_speedup={d['examples_per_s'] / a['examples_per_s']:.2f} "
          f"accuracy_delta={d['accuracy'] - a['accuracy']:+.2f} "
          f"trainer_examples_per_s={a['examples_per_s']:.1f} fast_precision={d['precision']} "
          f"fast_optimizer={d['optimizer'].replace(' ', '_')} fused_adamw_max_diff={d['fused_adamw_max_diff']} "
          f"steps={args.steps} load_1min={env['load_1min']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
