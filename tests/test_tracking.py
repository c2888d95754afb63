"""Training curves for TensorBoard (``logging.report_to``): a tiny run's event files, read back with TensorBoard's
own EventAccumulator; the same weights as a run without them; the phase store key untouched; one-line errors."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fastxlt.config import config_from_dict
from fastxlt.utils.run_layout import arm_phase_dir
from fastxlt.errors import ConfigError
from fastxlt.utils.io import read_json

REPO = Path(__file__).resolve().parents[1]
STEPS = 6
CONFIG = {
    "name": "toy", "seed": 7, "kernels": "none",
    "optimization": {"lr": 5.0e-4, "batch_size": 8, "grad_accum": 2, "max_length": 32, "max_steps": STEPS,
                     "eval_every": 2, "eval_batch_tokens": 2048},
    "phases": {"target": {"tasks": ["synth-para"], "train_examples": 96}},
}  # fmt: skip


def train(tmp_path: Path, model: Path, name: str, *, env_extra: dict | None = None, **logging) -> Path:
    """``fastxlt train --no-eval`` in a subprocess, as users run it; returns the run directory."""
    config = copy.deepcopy(CONFIG) | {"run_dir": str(tmp_path / name), "model": {"name_or_path": str(model)}}
    config["optimization"]["checkpoint_every"] = 1
    if logging:
        config["logging"] = logging
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **(env_extra or {})}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "fastxlt.cli", "train", "--config", str(path), "--no-eval"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == (-9 if env_extra else 0), result.stderr[-3000:]
    return tmp_path / name


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(arm_phase_dir(run_dir, "target") / "model" / "encoder" / "model.safetensors")


def test_tensorboard_curves_are_readable_and_change_no_weight(tmp_path, synthetic_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tmp_path, synthetic_model, "tb", report_to=["tensorboard"])
    phase_dir = arm_phase_dir(run, "target")
    (log_dir,) = (phase_dir / "tensorboard").iterdir()
    assert log_dir.name == f"target_{phase_dir.name}_intermediate=none"  # kind, phase key, the cell that trained it
    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/examples_per_second", "dev/mean",
            "dev/synth-para"} <= tags  # fmt: skip
    loss = events.Scalars("train/loss")
    rates = [event.value for event in events.Scalars("train/learning_rate")]
    assert [event.step for event in loss] == list(range(1, STEPS + 1))
    assert all(value > 0 and value == value for value in (e.value for e in loss))
    # the rate each step used: linear schedule, 10% warm-up of 6 steps (one step), lr 5e-4 (event files hold fp32)
    assert rates == pytest.approx([0.0, 5.0e-4, 4.0e-4, 3.0e-4, 2.0e-4, 1.0e-4], rel=1e-6, abs=1e-12)
    assert all(event.value > 0 for event in events.Scalars("train/grad_norm"))
    history = read_json(phase_dir / "phase.json")["history"]
    dev = events.Scalars("dev/mean")
    assert [(e.step, pytest.approx(e.value, abs=1e-4)) for e in dev] == [(h["step"], h["dev_mean"]) for h in history]
    # tracking reads the gradients, never changes them
    plain = train(tmp_path, synthetic_model, "plain")
    assert not (arm_phase_dir(plain, "target") / "tensorboard").exists()
    reference = weights(plain)
    assert all(torch.equal(tensor, reference[name]) for name, tensor in weights(run).items())
    # the report's learning curves: the event files, else phase.json's dev history
    from fastxlt.reports.curves import PHASE_DONE, phase_directories, read_curves
    from fastxlt.reports.figures import learning_curve
    from fastxlt.training.loop import PHASE_DONE as LOOP_PHASE_DONE

    assert PHASE_DONE == LOOP_PHASE_DONE
    curves = read_curves(*next(iter(phase_directories(run).items())))
    assert curves.source == "tensorboard" and [step for step, _ in curves.scalars["train/loss"]] == list(range(1, STEPS + 1))
    fallback = read_curves("target", arm_phase_dir(plain, "target"))
    assert fallback.source == "phase.json" and [s for s, _ in fallback.scalars["dev/mean"]] == [h["step"] for h in history]
    for name, phase in (("tb", curves), ("plain", fallback)):
        assert learning_curve(phase, tmp_path / f"{name}.png").stat().st_size > 0


def test_report_to_is_validated_and_operational(tmp_path):
    def build(**logging):
        return config_from_dict({**copy.deepcopy(CONFIG), "model": {"name_or_path": "synthetic"}, "logging": logging})

    assert build(report_to=["tensorboard"]).logging.integrations() == ["tensorboard"]
    assert build(report_to="none").logging.integrations() == []
    assert build().logging.integrations() == []
    with pytest.raises(ConfigError, match=r"logging.report_to: unknown integration 'tensorbord'; known: none, all"):
        build(report_to=["tensorbord"])
    with pytest.raises(ConfigError, match="'none' cannot be listed with others"):
        build(report_to=["none", "tensorboard"])
    # a single run's directory accepts a changed report_to on resume: it is not part of what was trained
    from fastxlt.experiments.grid_runner import training_identity

    with_tb, without = build(report_to=["tensorboard"]).to_dict(), build().to_dict()
    assert training_identity(with_tb) == training_identity(without)


def test_missing_integration_package_is_one_line(monkeypatch):
    import importlib.util

    from fastxlt.training import tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"report_to: wandb needs the 'wandb' package.*pip install wandb"):
        tracking.check_integrations(["tensorboard", "wandb"])
    assert tracking.resolve_integrations(["all"]) == ["tensorboard"]


def test_report_to_leaves_the_phase_store_keys_alone(tmp_path):
    from fastxlt.experiments.grid import load_grid
    from fastxlt.experiments.phases import intermediate_identity, phase_of
    from fastxlt.experiments.store import key_of

    def keys(**logging) -> list[str]:
        data = copy.deepcopy(CONFIG) | {"run_dir": str(tmp_path / "run"), "model": {"name_or_path": "synthetic"},
                                        "grid": {"axes": {"seed": [1, 2]}}}  # fmt: skip
        data["phases"]["intermediate"] = {"tasks": ["synth-nli"]}
        if logging:
            data["logging"] = logging
        path = tmp_path / "grid.yaml"
        path.write_text(yaml.safe_dump(data))
        spec = load_grid(path)
        parent = {"pretrained": "synthetic"}
        return [key_of(intermediate_identity(cell.config, spec.base_seed)) for cell in spec.cells] + [
            key_of(phase_of(cell.config, "target").identity(parent)) for cell in spec.cells]

    assert keys(report_to=["tensorboard"]) == keys() == keys(report_to="none")


def test_a_killed_phase_resumes_its_curve_without_gaps_or_repeats(tmp_path, synthetic_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fastxlt.training.loop import KILL_ENV

    train(tmp_path, synthetic_model, "killed", env_extra={KILL_ENV: "3"}, report_to=["tensorboard"])  # SIGKILL
    train(tmp_path, synthetic_model, "killed", report_to=["tensorboard"])  # resumes from step 3's checkpoint
    (log_dir,) = (arm_phase_dir(tmp_path / "killed", "target") / "tensorboard").iterdir()
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, STEPS + 1))
    assert [event.step for event in events.Scalars("dev/mean")] == [2, 4, 6]


def test_gradient_norm_is_the_norm_that_clipping_sees():
    from fastxlt.training.tracking import gradient_norm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8, sparse=True), torch.nn.Linear(8, 3))
    model(torch.tensor([[1, 4, 4, 9]])).square().sum().backward()  # a sparse (uncoalesced) embedding gradient
    dense = [p.grad.to_dense() if p.grad.is_sparse else p.grad for p in model.parameters()]
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in dense]))
    assert gradient_norm(model) == pytest.approx(float(expected), rel=1e-6)
    assert gradient_norm(torch.nn.Linear(2, 2)) == 0.0  # no gradients yet
