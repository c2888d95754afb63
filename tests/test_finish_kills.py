"""No wrong final weights after a crash: a SIGKILL at every point of a phase's finish
(``FASTXLT_DEBUG_KILL_IN_FINISH``), then a resume, ends with the files of an uninterrupted run, bit for bit.

Points (fastxlt.training.loop._finish): 1 decided, nothing moved; 2 old model/ removed (best path) or
model.tmp/ written (last-step path), not moved yet; 3 model/ in place, no phase.json; 4 phase.json written,
checkpoints/ still there. Before the fix, a kill at 3 on the best path resumed into the last step's weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fastxlt.training.loop import FINISH_KILL_ENV
from fastxlt.utils.run_layout import arm_phase_dir
from fastxlt.utils.io import read_json
from test_training import assert_same_weights, final_weights, run_cli, write_config

POINTS = [1, 2, 3, 4]
# lr 0.05 overshoots: the dev score peaks early, so the best model (step < 6) differs from the last step's
BEST_PATH = {"optimization__lr": 0.05, "optimization__eval_every": 1}
# a masked-LM phase has no dev set: its final weights are the last step's
LAST_PATH = {"phases": {"target": {"tasks": ["synth-mlm"], "train_examples": 96}}}


def train(config: Path, **env) -> int:
    result = run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), env=env, check=False)
    assert result.returncode in (0, -9), result.stderr[-3000:]
    return result.returncode


def uninterrupted(tmp_path_factory, synthetic_model, name: str, changes: dict) -> Path:
    root = tmp_path_factory.mktemp(f"straight-{name}")
    run_dir = root / "run"
    assert train(write_config(root, synthetic_model, run_dir, **changes)) == 0
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted_best(tmp_path_factory, synthetic_model) -> Path:
    run_dir = uninterrupted(tmp_path_factory, synthetic_model, "best", BEST_PATH)
    summary = read_json(arm_phase_dir(run_dir, "target") / "phase.json")
    assert summary["best_step"] < summary["optimizer_steps"]  # else the best path would prove nothing
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted_last(tmp_path_factory, synthetic_model) -> Path:
    return uninterrupted(tmp_path_factory, synthetic_model, "last", LAST_PATH)


def check_resumed_like_uninterrupted(run_dir: Path, reference: Path) -> None:
    assert_same_weights(final_weights(reference), final_weights(run_dir))
    phase_dir = arm_phase_dir(run_dir, "target")
    expected = read_json(arm_phase_dir(reference, "target") / "phase.json")
    assert read_json(phase_dir / "phase.json")["best_step"] == expected["best_step"]
    assert read_json(phase_dir / "model" / "weights.json") == read_json(arm_phase_dir(reference, "target") / "model" / "weights.json")
    leftovers = {"checkpoints", "best", "best.tmp", "model.tmp"} & {p.name for p in phase_dir.iterdir()}
    assert not leftovers


# point 3 is the kill that used to leave the last step's weights; the others run with the slow suite
@pytest.mark.parametrize("point", [pytest.param(p, marks=[] if p == 3 else [pytest.mark.slow]) for p in POINTS])
def test_kill_in_the_finish_of_a_phase_with_a_best_model(tmp_path, synthetic_model, uninterrupted_best, point):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, synthetic_model, run_dir, **BEST_PATH)
    assert train(config, **{FINISH_KILL_ENV: str(point)}) == -9
    assert train(config) == 0
    check_resumed_like_uninterrupted(run_dir, uninterrupted_best)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_kill_in_the_finish_of_a_phase_without_dev_set(tmp_path, synthetic_model, uninterrupted_last, point):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, synthetic_model, run_dir, **LAST_PATH)
    assert train(config, **{FINISH_KILL_ENV: str(point)}) == -9
    assert train(config) == 0
    check_resumed_like_uninterrupted(run_dir, uninterrupted_last)
