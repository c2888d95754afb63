"""Training curves where the ecosystem looks for them: Hugging Face Trainer's ``report_to`` names.

``phase.json`` keeps the dev history that fastxlt itself reads; this module mirrors every optimizer step
to the viewers people already use (``logging.report_to: [tensorboard]``, optionally ``wandb``), so a grid of
40 cells can be watched while it trains. Scalars (HF Trainer's tags)::

    train/loss  train/learning_rate  train/grad_norm  train/examples_per_second   every optimizer step
    dev/<task>  dev/mean                                                           every dev evaluation

TensorBoard events go under the phase's own directory, ``<phase_dir>/tensorboard/<run name>/``; the run
name holds the phase kind, the phase key and the cell, so ``tensorboard --logdir <store>`` lists every
phase of every grid that shares the store. Only rank 0 writes. Nothing here touches the weights: the
gradient norm is read, never changed, and ``report_to`` is left out of the phase store's key.
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from typing import Any, Protocol

from fastxlt.errors import ConfigError

TENSORBOARD_DIRNAME = "tensorboard"
# integration -> the module it needs and the pip command that provides it
INTEGRATIONS = {"tensorboard": ("tensorboard", "pip install tensorboard (or 'fastxlt[tracking]')"),
                "wandb": ("wandb", "pip install wandb")}


def check_integrations(names: list[str]) -> None:
    """Refuse, before any training, an integration whose package is missing (one line, with the fix)."""
    for name in names:
        if name == "all":
            continue
        module, fix = INTEGRATIONS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logging.report_to: {name} needs the '{module}' package, which is not installed; "
                              f"{fix}, or drop {name} from report_to")


def resolve_integrations(names: list[str]) -> list[str]:
    """``all`` becomes every integration whose package is installed (as in the HF Trainer)."""
    if "all" not in names:
        return list(names)
    return [name for name, (module, _) in INTEGRATIONS.items() if importlib.util.find_spec(module) is not None]


def run_name(kind: str, key: str, cell: str | None = None) -> str:
    """``<kind>_<phase key>[_<cell>]``, safe as one directory name."""
    name = "_".join(part for part in (kind, key, cell) if part)
    return re.sub(r"[^\w.,=+@\[\]-]", "-", name)


class Writer(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class TensorBoardWriter:
    """Event files under ``<phase_dir>/tensorboard/<run name>``; a resumed phase purges steps after its checkpoint."""

    def __init__(self, phase_dir: Path, name: str, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(phase_dir) / TENSORBOARD_DIRNAME / name
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=start_step + 1 if start_step else None)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbWriter:
    """One Weights & Biases run per phase (project from ``WANDB_PROJECT``, default fastxlt); resumed by name."""

    def __init__(self, phase_dir: Path, name: str, config: dict[str, Any]) -> None:
        import os

        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fastxlt"), name=name, id=re.sub(r"\W", "-", name)[:128],
                              dir=str(phase_dir), config=config, resume="allow", reinit=True)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def flush(self) -> None:
        """wandb streams on its own."""

    def close(self) -> None:
        self.run.finish()


class Tracker:
    """Every writer a phase asked for (none: every call is a no-op), opened on rank 0 only."""

    def __init__(self, writers: list[Writer]) -> None:
        self.writers = writers

    @property
    def active(self) -> bool:
        return bool(self.writers)

    def log(self, scalars: dict[str, float], step: int) -> None:
        clean = {tag: float(value) for tag, value in scalars.items() if value is not None and value == value}
        for writer in self.writers:
            writer.log(clean, step)

    def log_dev(self, entry: dict[str, Any], step: int) -> None:
        """The dev scores of one ``phase.json`` history entry (``dev_<task>``, ``dev_mean``)."""
        self.log({f"dev/{key[4:]}": value for key, value in entry.items() if key.startswith("dev_")}, step)

    def flush(self) -> None:
        """With every checkpoint: a killed phase then resumes a curve that holds every step up to it."""
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def open_tracker(names: list[str], phase_dir: Path, name: str, *, start_step: int = 0,
                 config: dict[str, Any] | None = None, main: bool = True) -> Tracker:
    """The writers for ``names`` (HF ``report_to``); an empty tracker off rank 0 or when nothing is asked for."""
    if not main:
        return Tracker([])
    writers: list[Writer] = []
    for integration in resolve_integrations(names):
        if integration == "tensorboard":
            writers.append(TensorBoardWriter(phase_dir, name, start_step))
        elif integration == "wandb":
            writers.append(WandbWriter(phase_dir, name, config or {}))
    return Tracker(writers)


class StepMeter:
    """What one optimizer step reports: mean micro-batch loss, learning rate, gradient norm, examples/s."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.losses: list[float] = []
        self.examples = 0
        self.started = time.perf_counter()
        self.learning_rate: float | None = None
        self.grad_norm: float | None = None

    def begin(self) -> None:
        """At the top of every micro-step: a new step's clock starts here, so the time a dev evaluation or a
        checkpoint took after the previous step is not counted against the training examples/s."""
        if not self.losses:
            self.started = time.perf_counter()

    def add(self, loss: float, examples: int) -> None:
        self.losses.append(loss)
        self.examples += examples

    def before_step(self, engine) -> None:
        """At an accumulation boundary, before ``engine.step()``: the rate this step uses and, where the
        gradients are whole on this rank (no ZeRO, fp32 weights), their norm before clipping."""
        self.learning_rate = float(engine.get_lr()[0])
        if not (engine.zero_optimization() or engine.fp16_enabled() or engine.bfloat16_enabled()):
            self.grad_norm = gradient_norm(engine.module)

    def scalars(self, engine, world: int) -> dict[str, float | None]:
        """The step's scalars (after ``engine.step()``; DeepSpeed's own norm where it computes one), then reset."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        norm = self.grad_norm if self.grad_norm is not None else engine.get_global_grad_norm()
        scalars = {
            "train/loss": sum(self.losses) / max(len(self.losses), 1),
            "train/learning_rate": self.learning_rate,
            "train/grad_norm": None if norm is None else float(norm),
            "train/examples_per_second": self.examples * world / elapsed,
        }
        self._reset()
        return scalars


def gradient_norm(model) -> float:
    """The global L2 norm of the gradients (sparse ones by their stored values), as clipping computes it."""
    import torch  # here, so that reports can read this module's names without loading torch

    norms = []
    for param in model.parameters():
        grad = param.grad
        if grad is None:
            continue
        values = grad.coalesce().values() if grad.is_sparse else grad
        norms.append(torch.linalg.vector_norm(values.detach().float()))
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
