"""Resuming never runs code from a run directory, and a damaged newest checkpoint falls back to the newest
intact one (fastxlt.training.checkpoint).

The planted checkpoint is a real torch pickle whose ``__reduce__`` would create a directory: DeepSpeed's own
loader (``torch.load(weights_only=False)``) runs it; fastxlt's must refuse it without running it. Every
training run is a ``fastxlt train`` subprocess on the tiny synthetic model, as in tests/test_training.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastxlt.errors import CheckpointError, UnsafeCheckpointError
from fastxlt.utils.run_layout import arm_phase_dir
from fastxlt.training.checkpoint import STATE_FILENAME, safe_torch_load
from fastxlt.training.loop import KILL_ENV
from test_training import REPO, assert_same_weights, final_weights, run_cli, write_config

CHECKPOINT_EVERY = ["--set", "optimization.checkpoint_every=2"]


class Payload:
    """Unpickling this calls os.makedirs(path): the stand-in for an attacker's code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def plant(path: Path, evidence: Path) -> None:
    torch.save({"module": {"weight": torch.zeros(2)}, "extra": Payload(evidence)}, path)


def test_safe_load_refuses_a_planted_pickle_without_running_it(tmp_path):
    evidence = tmp_path / "payload-ran"
    plant(tmp_path / "evil.pt", evidence)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.pt.*GLOBAL os\.makedirs") as refused:
        safe_torch_load(tmp_path / "evil.pt")
    assert "\n" not in str(refused.value)
    assert not evidence.exists()
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as damaged:
        safe_torch_load(tmp_path / "garbage.pt")
    assert not isinstance(damaged.value, UnsafeCheckpointError)
    torch.save({"w": torch.arange(3.0)}, tmp_path / "plain.pt")
    assert torch.equal(safe_torch_load(tmp_path / "plain.pt")["w"], torch.arange(3.0))


ROUND_TRIP = textwrap.dedent(
    """
    import sys, tempfile, torch
    from pathlib import Path
    from fastxlt.config import DeepSpeedConfig, OptimizationConfig
    from fastxlt.training import distributed
    from fastxlt.training.checkpoint import CheckpointManager
    from fastxlt.training.deepspeed_config import build_deepspeed_config
    from fastxlt.training.optim import make_optimizer
    distributed.init_distributed()
    import deepspeed

    def engine(stage, precision, offload):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
        settings = OptimizationConfig(lr=1e-2)
        optimizer = make_optimizer(model, settings, offload=offload)
        schedule = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
        config = build_deepspeed_config(DeepSpeedConfig(zero_stage=stage, precision=precision, offload_optimizer=offload), settings)
        return deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=config)[0]

    def step(eng, seed):
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(seed))
        loss = eng(x.to(next(eng.module.parameters()).dtype)).float().pow(2).mean()
        eng.backward(loss)
        eng.step()
        return float(loss)

    import json
    for stage, precision, offload in json.loads(sys.argv[1]):
        folder = Path(tempfile.mkdtemp()) / "checkpoints"
        straight = engine(stage, precision, offload)
        for seed in range(2):
            step(straight, seed)
        CheckpointManager(folder).save(straight, 2, {"micro_step": 2, "history": [{"step": 1, "dev": 0.5}]})
        expected = [step(straight, seed) for seed in range(2, 4)]
        resumed = engine(stage, precision, offload)
        state = CheckpointManager(folder).resume(resumed)
        assert state == {"micro_step": 2, "history": [{"step": 1, "dev": 0.5}]}, state
        got = [step(resumed, seed) for seed in range(2, 4)]
        assert got == expected, (stage, precision, offload, got, expected)
        print("OK", stage, precision, offload, flush=True)
    """
)


def round_trip(tmp_path: Path, cases: list[tuple[int, str, bool]]) -> None:
    """Run ROUND_TRIP in a fresh process over (zero stage, precision, optimizer offload) cases."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", ROUND_TRIP, json.dumps(cases)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("OK ") == len(cases), result.stdout


def test_deepspeed_states_of_every_zero_stage_load_under_the_allow_list(tmp_path):
    """ZeRO 0-3, fp32/bf16: the sealed checkpoint loads through the safe loader and the resumed engine continues
    with exactly the losses of the uninterrupted one."""
    round_trip(tmp_path, [(0, "fp32", False), (0, "bf16", False), (1, "fp32", False), (2, "fp32", False),
                          (2, "bf16", False), (3, "fp32", False), (3, "bf16", False)])


@pytest.mark.slow
def test_offloaded_optimizer_states_load_under_the_allow_list(tmp_path):
    """The same round trip with the optimizer offloaded (ZeRO-2): DeepSpeed's CPU Adam, which DeepSpeed compiles
    on its first use on a machine (minutes on 2 cores), hence slow; the states it saves are the ones above plus
    the offload flag, which the loader's allow-list also covers."""
    round_trip(tmp_path, [(2, "fp32", True)])


# ------------------------------------------------------------------- resuming a real phase (subprocesses)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, synthetic_model) -> Path:
    root = tmp_path_factory.mktemp("straight")
    run_dir = root / "run"
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(write_config(root, synthetic_model, run_dir)), *CHECKPOINT_EVERY)
    return run_dir


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, synthetic_model) -> tuple[Path, Path]:
    """A run SIGKILLed right after its step-4 checkpoint: checkpoints step-00000002 and step-00000004 on disk."""
    root = tmp_path_factory.mktemp("killed")
    run_dir = root / "run"
    config = write_config(root, synthetic_model, run_dir)
    result = run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), *CHECKPOINT_EVERY,
                     env={KILL_ENV: "4"}, check=False)
    assert result.returncode == -9, result.stderr[-2000:]
    tags = sorted(p.name for p in (arm_phase_dir(run_dir, "target") / "checkpoints").glob("step-*"))
    assert tags == ["step-00000002", "step-00000004"]
    return run_dir, config


def copy_run(killed_run, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private copy of the killed run and a config pointing at it; also its checkpoints folder."""
    source, config = killed_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    text = config.read_text().replace(str(source), str(run_dir))
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return run_dir, config, arm_phase_dir(run_dir, "target") / "checkpoints"


def resume(config: Path) -> subprocess.CompletedProcess:
    return run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), *CHECKPOINT_EVERY, check=False)


def test_a_planted_checkpoint_is_refused_and_runs_nothing(killed_run, tmp_path):
    run_dir, config, checkpoints = copy_run(killed_run, tmp_path)
    tag = checkpoints / "step-00000004"
    evidence = tmp_path / "payload-ran"
    plant(tag / "mp_rank_00_model_states.pt", evidence)
    seal = json.loads((tag / STATE_FILENAME).read_text())  # an attacker can keep the seal consistent too
    seal["files"]["mp_rank_00_model_states.pt"] = (tag / "mp_rank_00_model_states.pt").stat().st_size
    (tag / STATE_FILENAME).write_text(json.dumps(seal))
    result = resume(config)
    assert result.returncode == 2, result.stderr[-3000:]
    assert not evidence.exists()
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fastxlt: error: refusing to load ") and "GLOBAL os.makedirs" in last
    assert not (arm_phase_dir(run_dir, "target") / "phase.json").exists()


def truncate(tag: Path) -> None:
    path = tag / "mp_rank_00_model_states.pt"
    path.write_bytes(path.read_bytes()[:1000])


def remove(tag: Path) -> None:
    (tag / "mp_rank_00_model_states.pt").unlink()


def break_seal(tag: Path) -> None:
    (tag / STATE_FILENAME).write_text('{"format": 1, "step": 4, "sta')


@pytest.mark.parametrize("damage", [
    truncate,
    pytest.param(remove, marks=pytest.mark.slow),
    pytest.param(break_seal, marks=pytest.mark.slow),
], ids=["truncated", "missing-file", "bad-json"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact(killed_run, straight_run, tmp_path, damage):
    run_dir, config, checkpoints = copy_run(killed_run, tmp_path)
    damage(checkpoints / "step-00000004")
    result = resume(config)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"checkpoint step-00000004 in '{checkpoints}' is damaged" in output
    assert "resuming from step-00000002 instead" in output and "resuming at micro-step 4" in output
    assert_same_weights(final_weights(straight_run), final_weights(run_dir))


def test_no_intact_checkpoint_is_one_line_naming_the_folder(killed_run, tmp_path):
    run_dir, config, checkpoints = copy_run(killed_run, tmp_path)
    truncate(checkpoints / "step-00000004")
    break_seal(checkpoints / "step-00000002")
    result = resume(config)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fastxlt: error: cannot resume from '{checkpoints}': no intact checkpoint (step-00000004 is damaged")
    assert "step-00000002 is damaged" in last and last.endswith("delete that folder to restart the phase")
