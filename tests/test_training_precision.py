"""``deepspeed.precision: auto``: bf16 autocast where this machine's bf16 products are measured faster, fp32
elsewhere, stated in one log line; the phase store keys a phase on the resolved precision (issue 20)."""

from __future__ import annotations

import json

import pytest
import torch

from fastxlt.config import DeepSpeedConfig, OptimizationConfig, PhaseConfig
from fastxlt.experiments.store import phase_identity
from fastxlt.training import precision as training_precision
from fastxlt.utils import hardware

from test_training import final_weights, run_cli, write_config

CPU = torch.device("cpu")


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    """A CPU whose flags and measured bf16 speed-up the test chooses; measurements counted, cache in tmp_path."""
    measured: list[float] = []

    def install(flags: set[str], speedup: float) -> list[float]:
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(hardware, "bf16_product_speedup", lambda: measured.append(speedup) or speedup)
        return measured

    monkeypatch.setenv(hardware.SPEED_CACHE_ENV, str(tmp_path / "cache"))
    hardware.cpu_bf16_speedup.cache_clear()
    training_precision._auto_precision.cache_clear()
    yield install
    hardware.cpu_bf16_speedup.cache_clear()
    training_precision._auto_precision.cache_clear()


def test_no_bf16_instructions_means_fp32_without_measuring(fake_cpu, capsys):
    measured = fake_cpu({"avx2", "fma"}, speedup=9.0)
    assert training_precision.resolve_training_precision("auto", CPU) == "fp32"
    assert measured == []  # emulated bf16 is never timed
    assert "auto -> fp32" in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "speedup", "expected"), [
    ({"avx512_bf16"}, 2.4, "bf16_autocast"),          # AMD Zen 4: bf16 products natively
    ({"avx512_bf16"}, 1.1, "fp32"),                   # instructions present, products not faster enough
    ({"amx_bf16", "avx512_bf16"}, 4.0, "bf16_autocast"),
])
def test_auto_follows_the_measured_speedup(fake_cpu, capsys, flags, speedup, expected):
    fake_cpu(flags, speedup)
    assert training_precision.resolve_training_precision("auto", CPU) == expected
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"[precision] deepspeed.precision auto -> {expected}") and f"{speedup:.2f}x" in line
    assert len(line.splitlines()) == 1


def test_explicit_precisions_are_kept(fake_cpu):
    measured = fake_cpu({"avx512_bf16"}, 3.0)
    for name in ("fp32", "bf16", "fp16", "bf16_autocast"):
        assert training_precision.resolve_training_precision(name, CPU) == name
    assert measured == []


def test_the_measurement_is_kept_per_machine(fake_cpu, tmp_path):
    """Measured once, then read back from the cache file: a re-measured near-tie cannot flip a phase's key."""
    measured = fake_cpu({"avx512_bf16"}, 2.0)
    assert hardware.cpu_bf16_speedup() == 2.0
    hardware.cpu_bf16_speedup.cache_clear()
    assert hardware.cpu_bf16_speedup() == 2.0 and measured == [2.0]
    cached = json.loads((tmp_path / "cache" / "bf16_speedup.json").read_text())
    assert list(cached.values()) == [2.0]


def test_phase_key_uses_the_resolved_precision(fake_cpu):
    fake_cpu({"avx512_bf16"}, 2.0)
    phase = PhaseConfig(tasks=["synth-para"])

    def identity(precision: str) -> dict:
        return phase_identity("target", {}, phase, OptimizationConfig(), seed=1, deepspeed=DeepSpeedConfig(precision=precision),
                              kernels="auto", pooling="mean", data_dirs={})

    assert identity("auto") == identity("bf16_autocast") != identity("fp32")


def test_a_tiny_run_with_auto_logs_its_choice_and_trains_as_that_precision(tmp_path, synthetic_model):
    """Through `fastxlt train`, on this machine: one log line names the choice, and the weights equal those of a
    run that names the chosen precision itself."""
    env = {hardware.SPEED_CACHE_ENV: str(tmp_path / "cache")}
    auto_dir = tmp_path / "auto"
    result = run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config",
                     str(write_config(tmp_path, synthetic_model, auto_dir, deepspeed__precision="auto")), env=env)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("[precision]")]
    assert len(lines) == 1, lines
    chosen = lines[0].split("-> ")[1].split()[0]
    assert chosen in ("fp32", "bf16_autocast")
    explicit_dir = tmp_path / "explicit"
    run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config",
            str(write_config(tmp_path, synthetic_model, explicit_dir, deepspeed__precision=chosen)), env=env)
    auto, explicit = final_weights(auto_dir), final_weights(explicit_dir)
    assert auto.keys() == explicit.keys() and all(torch.equal(auto[k], explicit[k]) for k in auto)
