"""The embedded default (``fastxlt run`` with no config) gives the same weights and scores as it did: pinned.

Refactorings of the runners, the loop, the data path or evaluation must not change a single number (the
research answers in docs/results/ were computed by this code). The full embedded default takes minutes, so the
default suite runs it shortened -- every phase of every cell, with few steps and 40 test examples per language
(about 20 s) -- and pins each stored phase's encoder (a SHA-256 of its tensors, keyed by its phase-store key) and every
cell's per-language accuracy; the full run is pinned the same way under ``-m slow``. The values were recorded
with the code before ``fastxlt.experiments.phases`` (commit 6ec3cc3) and reproduced after it.

Exact fp32 values depend on the CPU's vector instructions (AVX-512, AVX2 and AMX round sums differently) and on
the number of threads: the runs here use one thread, and the pins apply on the CPU class they were recorded on
(``torch.backends.cpu.get_cpu_capability()``); elsewhere the tests skip and say so. To re-pin deliberately (a
change that is meant to change training), run this file's ``record`` helper and say so in the commit message.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fastxlt.experiments.grid import load_grid
from fastxlt.experiments.grid_runner import run_grid
from fastxlt.experiments.pipeline import run_experiment
from fastxlt.utils.run_layout import arm_phase_dir
from fastxlt.experiments.preflight import load_experiment
from fastxlt.utils.io import read_json

# The default as it was when these pins were recorded (commit 6ec3cc3): the pins hold the code's behaviour fixed,
# while the embedded default's own shape changed on purpose (2 seeds at 1,000 target pairs).
DEFAULT = Path(__file__).resolve().parent / "fixtures" / "pins" / "default.yaml"
PINNED_CAPABILITY = "AVX512"  # Intel Xeon with AVX-512 BF16 (no AMX), where the pins were recorded
SHORT = [
    "phases.mlm.optimization.max_steps=12", "phases.intermediate.optimization.max_steps=6",
    "phases.intermediate.optimization.eval_every=3", "phases.target.optimization.lr=0.002",
    "phases.target.optimization.max_steps=10", "phases.target.optimization.eval_every=5",
    "phases.evaluate.max_examples=40",
]
LANGUAGES = ["en", "xa", "xb", "xc", "xd", "xe"]

# phase-store directory -> digest of its encoder's tensors
SHORT_WEIGHTS = {
    "intermediate/aba873a56326b49a": "9014ec60e29fa5d0",
    "mlm/74d50e2c28084622": "da3f6a9dad547a78",
    "target/9e68426d132de63d": "caeceb3310560b7d",
    "target/a90053a476fd10c6": "508f9ecb5a89bf8c",
    "target/b707f3cf736dfd15": "1c4a85a491e0825f",
    "target/f86c970603d454aa": "29f2617cc21b2417",
}
# cell -> (arm, correct answers of 40 per language, in LANGUAGES order) on synth-para
SHORT_CORRECT = {
    "target_size=1000,intermediate=none": ("none", [25, 25, 23, 24, 25, 23]),
    "target_size=1000,intermediate=synth-nli": ("synth-nli", [23, 23, 22, 20, 21, 23]),
    "target_size=all,intermediate=none": ("none", [25, 24, 22, 25, 24, 23]),
    "target_size=all,intermediate=synth-nli": ("synth-nli", [24, 23, 22, 24, 20, 20]),
}

FULL_WEIGHTS = {
    "intermediate/4a19fa49abeec6c7": "8ccf9f27599e4dbd",
    "mlm/9a24fd52e170ad68": "a8d2940d58271a45",
    "target/41a897ccc0911262": "a66ee47d51c7ca76",
    "target/6a44647f549ad3da": "abecde5436d98014",
    "target/8020ad3558df902a": "ac0b826916b19282",
    "target/98800d23747537f0": "bcdf78d97786a4e1",
}
FULL_CORRECT = {  # of 500 test pairs per language
    "target_size=1000,intermediate=none": ("none", [354, 301, 288, 306, 284, 283]),
    "target_size=1000,intermediate=synth-nli": ("synth-nli", [336, 317, 292, 320, 296, 277]),
    "target_size=all,intermediate=none": ("none", [358, 307, 281, 321, 311, 281]),
    "target_size=all,intermediate=synth-nli": ("synth-nli", [363, 322, 267, 305, 301, 275]),
}


def on_the_pinned_cpu() -> bool:
    return torch.backends.cpu.get_cpu_capability() == PINNED_CAPABILITY and not torch.cuda.is_available()


@pytest.fixture
def one_thread():
    """Pinned fp32 sums need one summation order: one intra-op thread (restored afterwards)."""
    if not on_the_pinned_cpu():
        pytest.skip(f"pins recorded on a {PINNED_CAPABILITY} CPU; this machine is "
                    f"{torch.backends.cpu.get_cpu_capability()} (fp32 rounds differently)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_default(run_dir: Path, overrides: list[str]) -> tuple[dict[str, str], dict[str, tuple[str, dict[str, float]]]]:
    """Run the embedded default grid into ``run_dir``; return its phases' encoder digests and its cells' scores."""
    spec = load_grid(DEFAULT, [f"run_dir={run_dir}", *overrides])
    run_grid(spec)
    weights = {f"{p.parent.name}/{p.name}": encoder_digest(p / "model" / "encoder")
               for p in sorted(spec.store.glob("*/*")) if (p / "phase.json").is_file()}
    scores = {}
    for cell in sorted((spec.run_dir / "cells").iterdir()):
        ((arm, result),) = read_json(cell / "results.json")["arms"].items()
        scores[cell.name] = (arm, {lang: r["accuracy"] for lang, r in result["tasks"]["synth-para"]["languages"].items()})
    return weights, scores


def encoder_digest(directory: Path) -> str:
    """The SHA-256 of a saved encoder's tensors (names and raw bytes, sorted by name): equal iff every weight is."""
    state = load_file(str(directory / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def expected_scores(correct: dict[str, tuple[str, list[int]]], examples: int) -> dict:
    return {cell: (arm, {lang: pytest.approx(100 * k / examples, abs=1e-9) for lang, k in zip(LANGUAGES, counts)})
            for cell, (arm, counts) in correct.items()}


def test_a_shortened_embedded_default_gives_the_pinned_weights_and_scores(tmp_path, one_thread):
    weights, scores = run_default(tmp_path / "run", SHORT)
    assert weights == SHORT_WEIGHTS
    assert scores == expected_scores(SHORT_CORRECT, 40)


def test_a_single_run_trains_the_phases_a_grid_cell_trains(tmp_path):
    """A single experiment (``fastxlt.experiments.pipeline``) is run by the grid runner as a grid of its arms: the
    shortened default without its grid section, both arms in one run, files the grid's phases under the same
    store keys and trains their encoders bit for bit."""
    data = yaml.safe_load(DEFAULT.read_text())
    del data["grid"]  # target size: all 4000 pairs, as the grid's target_size=all cells
    data.update(run_dir=str(tmp_path / "run"), compare_without_intermediate=True)
    config = tmp_path / "single.yaml"
    config.write_text(yaml.safe_dump(data))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pinned digests need one summation order
    try:
        run_experiment(load_experiment(config, SHORT))
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "run"
    phases = {(kind, arm): arm_phase_dir(run, kind, arm)
              for kind, arm in (("mlm", "none"), ("intermediate", "synth-nli"), ("target", "none"), ("target", "synth-nli"))}
    trained = {f"{kind}/{directory.name}": encoder_digest(directory / "model" / "encoder")
               for (kind, _), directory in phases.items()}
    # the store keys hold on every machine; the weights' digests on the CPU the pins were recorded on
    assert list(trained) == ["mlm/74d50e2c28084622", "intermediate/aba873a56326b49a", "target/a90053a476fd10c6",
                             "target/b707f3cf736dfd15"]
    if not on_the_pinned_cpu():
        return
    assert trained == {
        "mlm/74d50e2c28084622": SHORT_WEIGHTS["mlm/74d50e2c28084622"],
        "intermediate/aba873a56326b49a": SHORT_WEIGHTS["intermediate/aba873a56326b49a"],
        "target/a90053a476fd10c6": SHORT_WEIGHTS["target/a90053a476fd10c6"],  # the cell target_size=all,intermediate=none
        "target/b707f3cf736dfd15": SHORT_WEIGHTS["target/b707f3cf736dfd15"],  # the cell target_size=all,intermediate=synth-nli
    }


@pytest.mark.slow  # about 5 minutes on one thread of a shared 2-core machine
def test_the_embedded_default_gives_the_pinned_weights_and_scores(tmp_path, one_thread):
    """The full ``fastxlt run`` with no config; its phase keys are the ones tests/test_phase_keys.py pins."""
    weights, scores = run_default(tmp_path / "run", [])
    assert weights == FULL_WEIGHTS
    assert scores == expected_scores(FULL_CORRECT, 500)


def record(run_dir: str, full: bool = False) -> None:
    """Print the pins of a run (``python -c 'from tests.test_embedded_default_pins import record; record("DIR")'``)."""
    torch.set_num_threads(1)
    weights, scores = run_default(Path(run_dir), [] if full else SHORT)
    print(weights)
    for cell, (arm, by_language) in scores.items():
        print(cell, arm, [by_language[lang] for lang in LANGUAGES])
