"""The training loop on DeepSpeed: resumption after a hard kill, 2-rank ZeRO-2 through the launcher,
early stopping, the encoder-only hand-off and the errors for bad checkpoints.

Everything runs the tiny synthetic XLM-R on a few dozen examples, so each run takes seconds; each
training run is a subprocess, as users run it (``fastxlt train`` / the ``deepspeed`` launcher).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel

from fastxlt.errors import CheckpointError
from fastxlt.utils.run_layout import arm_phase_dir
from fastxlt.models.transfer import load_transfer_model
from fastxlt.tasks.base import get_task
from fastxlt.training.distributed import _free_port
from fastxlt.training.loop import KILL_ENV
from fastxlt.utils.io import read_json

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, model: Path, run_dir: Path, **changes) -> Path:
    config = {
        "name": "toy",
        "seed": 7,
        "run_dir": str(run_dir),
        "model": {"name_or_path": str(model)},
        "kernels": "none",
        "optimization": {"lr": 5.0e-4, "batch_size": 8, "grad_accum": 2, "max_length": 32, "max_steps": 6,
                         "eval_every": 2, "eval_batch_tokens": 2048},
        "phases": {"target": {"tasks": ["synth-para"], "train_examples": 96}},
    }
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def final_weights(run_dir: Path, arm: str = "none") -> dict[str, torch.Tensor]:
    model_dir = arm_phase_dir(run_dir, "target", arm) / "model"
    weights = load_file(model_dir / "encoder" / "model.safetensors")
    heads = torch.load(model_dir / "heads.pt", weights_only=True)["heads"]
    return {**weights, **{f"head.{k}": v for k, v in heads.items()}}


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if atol == 0.0:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def test_killed_run_resumes_to_the_same_weights(tmp_path, synthetic_model):
    straight = tmp_path / "straight"
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(write_config(tmp_path, synthetic_model, straight)),
            "--set", "optimization.checkpoint_every=2")
    killed = tmp_path / "killed"
    config = write_config(tmp_path, synthetic_model, killed)
    first = run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), "--set",
                    "optimization.checkpoint_every=2", env={KILL_ENV: "4"}, check=False)
    assert first.returncode == -9, first.stderr[-2000:]  # SIGKILL right after the step-4 checkpoint
    phase_dir = arm_phase_dir(killed, "target")
    assert not (phase_dir / "phase.json").exists()
    assert (phase_dir / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    second = run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), "--set", "optimization.checkpoint_every=2")
    assert "resuming at micro-step 8" in second.stderr + second.stdout
    assert_same_weights(final_weights(straight), final_weights(killed))
    summary = read_json(phase_dir / "phase.json")
    assert summary["optimizer_steps"] == 6 and [h["step"] for h in summary["history"]] == [2, 4, 6]
    assert not (phase_dir / "checkpoints").exists()  # removed once the phase is complete


@pytest.mark.distributed
def test_zero2_on_two_ranks_matches_one_rank(tmp_path, synthetic_model):
    """2 ranks x grad-accum 1 take the same global batches as 1 rank x grad-accum 2: same weights up to reduction order."""
    if shutil.which("deepspeed", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the deepspeed launcher is not installed next to this Python")
    one = tmp_path / "one"
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config",
            str(write_config(tmp_path, synthetic_model, one, optimization__max_steps=4)))
    two = tmp_path / "two"
    config = write_config(tmp_path, synthetic_model, two, optimization__max_steps=4, optimization__grad_accum=1,
                          deepspeed={"zero_stage": 2})
    launcher = str(Path(sys.executable).parent / "deepspeed")
    result = subprocess.run(
        [launcher, "--num_gpus", "2", "--master_port", str(_free_port()), "fastxlt/train.py", "--config", str(config), "--no-eval"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = read_json(arm_phase_dir(two, "target") / "phase.json")
    assert summary["world_size"] == 2 and summary["deepspeed"]["zero_stage"] == 2
    assert_same_weights(final_weights(one), final_weights(two), atol=2e-5)


def test_early_stopping_keeps_the_best_model(tmp_path, synthetic_model):
    run_dir = tmp_path / "early"
    # lr 0: the dev score never improves after the first evaluation, so patience 1 stops at the second
    config = write_config(tmp_path, synthetic_model, run_dir, optimization__lr=1e-12, optimization__patience=1,
                          optimization__max_steps=20, optimization__eval_every=1)
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config))
    summary = read_json(arm_phase_dir(run_dir, "target") / "phase.json")
    assert summary["optimizer_steps"] == 2 and summary["planned_steps"] == 20
    assert summary["best_step"] == 1


def test_encoder_hand_off_and_checkpoint_errors(tmp_path, synthetic_model):
    run_dir = tmp_path / "handoff"
    config = write_config(
        tmp_path, synthetic_model, run_dir, optimization__max_steps=2,
        phases={"intermediate": {"tasks": ["synth-nli"], "train_examples": 48}, "target": {"tasks": ["synth-para"], "train_examples": 48}},
    )
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config))
    intermediate = arm_phase_dir(run_dir, "intermediate", "synth-nli") / "model"
    # the hand-off is a plain Hugging Face encoder that transformers loads directly
    encoder = AutoModel.from_pretrained(intermediate / "encoder")
    assert encoder.config.model_type == "xlm-roberta"
    target_summary = read_json(arm_phase_dir(run_dir, "target", "synth-nli") / "phase.json")
    assert target_summary["init_encoder"] == str(intermediate / "encoder")
    # the intermediate phase changed the encoder, the target phase started from it and changed it again
    initial = load_file(synthetic_model / "model.safetensors")
    after_intermediate = load_file(intermediate / "encoder" / "model.safetensors")
    after_target = load_file(arm_phase_dir(run_dir, "target", "synth-nli") / "model" / "encoder" / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(initial[key], after_intermediate[key])
    assert not torch.equal(after_intermediate[key], after_target[key])

    model = load_transfer_model(arm_phase_dir(run_dir, "target", "synth-nli") / "model", [get_task("synth-para")])
    assert set(model.heads) == {"synth-para"}
    with pytest.raises(CheckpointError, match="has no trained head 'synth-para'"):
        load_transfer_model(intermediate, [get_task("synth-para")])  # heads of another task
    wrong = tmp_path / "wrong"
    shutil.copytree(intermediate, wrong)
    saved = torch.load(wrong / "heads.pt", weights_only=True)
    saved["encoder"]["hidden_size"] = 1024
    torch.save(saved, wrong / "heads.pt")
    with pytest.raises(CheckpointError, match="trained on encoder"):
        load_transfer_model(wrong, [get_task("synth-nli")])
    (wrong / "heads.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_transfer_model(wrong, [get_task("synth-nli")])


def test_damaged_checkpoint_gives_a_one_line_error(tmp_path, synthetic_model):
    run_dir = tmp_path / "damaged"
    config = write_config(tmp_path, synthetic_model, run_dir)
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), "--set", "optimization.checkpoint_every=2",
            env={KILL_ENV: "2"}, check=False)
    checkpoint = arm_phase_dir(run_dir, "target") / "checkpoints" / "step-00000002"
    for state in checkpoint.glob("*model_states.pt"):
        state.write_bytes(b"garbage")
    result = run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), "--set",
                     "optimization.checkpoint_every=2", check=False)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("fastxlt: error: cannot resume from") and "delete that folder" in last_line


def _bitext_loss(encoder_dir: Path, pairs: list) -> float:
    """Mean in-batch ranking loss of (English, translation) pairs under an encoder, mean pooling (batches of 25)."""
    from fastxlt.models.encoder import load_tokenizer
    from fastxlt.retrieval.dual_encoder import in_batch_softmax_loss

    tokenizer, encoder = load_tokenizer(encoder_dir), AutoModel.from_pretrained(encoder_dir).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    losses = [in_batch_softmax_loss(embed([e.query for e in chunk]), embed([e.candidate for e in chunk])).item()
              for chunk in (pairs[i:i + 25] for i in range(0, len(pairs), 25))]
    return sum(losses) / len(losses)


def test_pretraining_mixes_masked_lm_and_translation_ranking(tmp_path, synthetic_model):
    """The embedded default's pretraining phase: one phase, two families (masked LM and the synth-bitext dual
    encoder), both in the schedule; held-out translation pairs rank better (lower in-batch loss) after it than
    after the same steps of masked LM alone (the objective reaches the encoder)."""
    held_out = get_task("synth-bitext").load("validation", "en")[::5]
    losses = {}
    for name, tasks in (("mlm-only", ["synth-mlm"]), ("mlm+bitext", ["synth-mlm", "synth-bitext"])):
        run_dir = tmp_path / name
        config = write_config(tmp_path, synthetic_model, run_dir, optimization__lr=1e-3, optimization__max_steps=100,
                              optimization__eval_every=None, optimization__grad_accum=1, optimization__batch_size=16,
                              phases={"mlm": {"tasks": tasks, "train_examples": 960},
                                      "target": {"tasks": ["synth-para"], "train_examples": 16,
                                                 "optimization": {"max_steps": 1}}})
        run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config))
        summary = read_json(arm_phase_dir(run_dir, "mlm") / "phase.json")
        assert len(summary["mixing_rates"]) == len(tasks) and min(summary["mixing_rates"]) > 0.1
        losses[name] = _bitext_loss(arm_phase_dir(run_dir, "mlm") / "model" / "encoder", held_out)
    assert losses["mlm+bitext"] < losses["mlm-only"] - 0.5, losses


def test_one_rank_fp32_skips_the_identity_allreduce_with_the_same_weights(tmp_path, synthetic_model):
    """One rank, ZeRO-0, fp32: DeepSpeed's gradient all-reduce is the identity, so the loop turns it off (a
    speed-up measured in benchmarks/train_throughput.py); the trained weights are bit-identical to a run that
    keeps it, and ZeRO stages keep it (their optimizers reduce through it)."""
    from types import SimpleNamespace

    from fastxlt.config import DeepSpeedConfig
    from fastxlt.training.loop import KEEP_ALLREDUCE_ENV, skip_one_rank_allreduce

    weights = {}
    for name, env in (("skipped", {}), ("kept", {KEEP_ALLREDUCE_ENV: "1"})):
        run_dir = tmp_path / name
        config = write_config(tmp_path, synthetic_model, run_dir, optimization__max_steps=4)
        run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), env=env)
        weights[name] = final_weights(run_dir)
    assert_same_weights(weights["skipped"], weights["kept"])

    def decision(stage: int, precision: str, ranks: int = 1) -> bool:
        engine = SimpleNamespace(dp_world_size=ranks, enable_backward_allreduce=True)
        skipped = skip_one_rank_allreduce(engine, DeepSpeedConfig(zero_stage=stage, precision=precision))
        assert engine.enable_backward_allreduce is not skipped
        return skipped

    assert decision(0, "fp32") and not decision(0, "fp32", ranks=2)
    assert not any(decision(stage, "fp32") for stage in (1, 2, 3)) and not decision(0, "bf16")


def test_fused_adamw_makes_the_same_update_as_torch_adamw():
    """optimization.fused_adamw: torch's fused kernel against the reference (for-loop) AdamW, same parameter groups,
    same gradients, 5 steps: equal to fp32 rounding."""
    from fastxlt.config import OptimizationConfig
    from fastxlt.training.optim import make_optimizer

    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Embedding(300, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
    fused = copy.deepcopy(reference)
    optimizers = [make_optimizer(model, OptimizationConfig(lr=1e-2, fused_adamw=flag))
                  for model, flag in ((reference, False), (fused, True))]
    assert [group["fused"] for group in optimizers[1].param_groups] == [True, True]
    assert not any(group["fused"] for group in optimizers[0].param_groups)
    for step in range(5):
        grads = [torch.randn_like(p) for p in reference.parameters()]
        for model, optimizer in zip((reference, fused), optimizers):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(reference.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_fast_path_options_resume_to_the_same_weights_and_track_fp32(tmp_path, synthetic_model):
    """deepspeed.precision bf16_autocast + fused AdamW + length-grouped batches + row-sparse embedding gradients +
    fast dropout (the fastest CPU path of benchmarks/train_throughput.py, issue 13) through `fastxlt train`: a run
    killed after step 4 (the gradient buffer and the dropout generator then start afresh) resumes to
    bit-identical weights and the weights stay fp32. On the same batches, bf16 autocast with fused AdamW moves
    the weights as fp32 does up to rounding: the distance between the two runs' weights is a small fraction of
    how far training moved them."""
    fast = {"deepspeed__precision": "bf16_autocast", "optimization__fused_adamw": True,
            "optimization__group_by_length": 4, "optimization__sparse_embedding_grads": True,
            "optimization__fast_dropout": True}
    straight = tmp_path / "straight"
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config",
            str(write_config(tmp_path, synthetic_model, straight, **fast)), "--set", "optimization.checkpoint_every=2")
    killed = tmp_path / "killed"
    config = write_config(tmp_path, synthetic_model, killed, **fast)
    first = run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), "--set",
                    "optimization.checkpoint_every=2", env={KILL_ENV: "4"}, check=False)
    assert first.returncode == -9, first.stderr[-2000:]
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config), "--set", "optimization.checkpoint_every=2")
    fast_weights = final_weights(straight)
    assert_same_weights(fast_weights, final_weights(killed))
    assert all(w.dtype == torch.float32 for w in fast_weights.values())

    weights = {}
    for name, changes in (("fp32", {}), ("autocast", {"deepspeed__precision": "bf16_autocast",
                                                      "optimization__fused_adamw": True})):
        run_dir = tmp_path / name
        run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config",
                str(write_config(tmp_path, synthetic_model, run_dir, **changes)))
        weights[name] = final_weights(run_dir)
    initial = load_file(synthetic_model / "model.safetensors")
    shared = [k for k in weights["fp32"] if k in initial and initial[k].dtype.is_floating_point]
    assert len(shared) > 10, "encoder weights should keep their names"
    moved = torch.cat([(weights["fp32"][k] - initial[k]).flatten() for k in shared]).norm()
    gap = torch.cat([(weights["fp32"][k] - weights["autocast"][k]).flatten() for k in shared]).norm()
    assert 0 < gap < 0.25 * moved, (float(gap), float(moved))
