"""Every benchmark still runs: each ``benchmarks/*.py`` (not ``_*.py``), as ``python -m benchmarks.NAME``, in its ``--smoke`` mode, in
seconds, ending with its ``RESULT key=value ...`` line (or ``SKIP reason`` when this machine lacks its data).

Parametrised over the folder's glob, so a new benchmark is covered without touching this file. Rows go
to a temporary folder (``FASTXLT_BENCH_OUT``), never into the repository's ``benchmarks/results/``.
Scripts that need a model get the session's tiny synthetic encoder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def module_command(script: Path) -> list[str]:
    """How the README runs a benchmark: as a module of the ``benchmarks`` package, from the repository root."""
    return [sys.executable, "-m", f"benchmarks.{script.stem}"]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_runs_in_smoke_mode(script, tmp_path, tiny_encoder):
    results = REPO / "benchmarks" / "results"
    before = {p: p.stat().st_mtime_ns for p in results.glob("*")} if results.is_dir() else {}
    env = {**os.environ, "FASTXLT_BENCH_OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([*module_command(script), "--smoke", "--model", str(tiny_encoder)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    if last.startswith("SKIP "):
        pytest.skip(f"{script.name}: {last[5:]}")
    assert last.startswith("RESULT "), result.stdout[-2000:]
    assert all("=" in field for field in last.split()[1:]), last
    assert list(tmp_path.glob("*.csv")), "the smoke run wrote no CSV row into FASTXLT_BENCH_OUT"
    after = {p: p.stat().st_mtime_ns for p in results.glob("*")} if results.is_dir() else {}
    assert after == before, "a smoke run wrote into benchmarks/results/"


def test_train_throughput_runs_a_subset_of_paths(tmp_path, tiny_encoder):
    """``--paths a,d`` (the accuracy goal's pair, for a long full run): only those rows, and the RESULT keys that
    need only them; an unknown path is refused in one line."""
    env = {**os.environ, "FASTXLT_BENCH_OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    script = [*module_command(REPO / "benchmarks" / "train_throughput.py"), "--smoke", "--part", "train",
              "--model", str(tiny_encoder)]
    result = subprocess.run([*script, "--paths", "a,d"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("(")]
    assert [line[:3] for line in table if " steps ..." not in line] == ["(a)", "(d)"]
    fields = dict(field.split("=", 1) for field in result.stdout.strip().splitlines()[-1].split()[1:])
    assert {"fast_speedup", "accuracy_delta", "fast_cpu_speedup"} <= fields.keys()
    assert not {"engine_vs_torch", "frozen_speedup"} & fields.keys()
    refused = subprocess.run([*script, "--paths", "a,z"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "unknown path(s) z" in refused.stderr



def test_every_benchmark_also_runs_as_a_file_and_its_folder_shadows_nothing(tmp_path):
    """``python benchmarks/NAME.py --help`` (DESIGN.md's shape) works: run as a file, a benchmark puts the
    repository root in place of its own folder at the head of ``sys.path``. A copy of the folder with a decoy
    ``tqdm.py`` beside the scripts (what ``benchmarks/kernels.py`` once was to transformers) stays unimported."""
    copy = tmp_path / "benchmarks"
    shutil.copytree(REPO / "benchmarks", copy, ignore=shutil.ignore_patterns("results", "__pycache__"))
    (copy / "tqdm.py").write_text('raise ImportError("the benchmarks folder shadowed the tqdm package")\n')
    env = {**os.environ, "PYTHONPATH": ""}
    for script in SCRIPTS:
        result = subprocess.run([sys.executable, str(copy / script.name), "--help"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "usage:" in result.stdout, (script.name, result.stderr[-2000:])
