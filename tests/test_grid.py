"""Experiment grids: expansion into cells, shards, the content-addressed phase store, nested target-size
subsets, language-balanced multilingual subsets, and a synthetic grid run end to end (shared phases
counted, a kill resumed, two concurrent shards equal to one process, the report written)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastxlt.config import PhaseConfig
from fastxlt.experiments.preflight import experiment_from_dict
from fastxlt.errors import ConfigError
from fastxlt.experiments.grid import load_grid, select_shard
from fastxlt.experiments.store import key_of, phase_identity
from fastxlt.training.loop import subset_examples
from fastxlt.utils.io import read_json

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "toy-grid",
    "seed": 5,
    "kernels": "none",
    "optimization": {"lr": 5.0e-4, "batch_size": 16, "grad_accum": 1, "max_length": 32, "max_steps": 4,
                     "eval_batch_tokens": 4096, "checkpoint_every": 1},
    "phases": {
        "intermediate": {"tasks": ["synth-nli"], "train_examples": 64, "snapshots": [2]},
        "target": {"tasks": ["synth-para"]},
        "evaluate": {"languages": ["en", "xa", "xb"], "split": "validation"},
    },
}
AXES = {"intermediate": ["none", "synth-nli"], "target_size": [24, 48], "seed": [1, 2]}


def write_grid(path: Path, model: Path, run_dir: Path, store: Path, axes=AXES) -> Path:
    data = copy.deepcopy(BASE)
    data.update(run_dir=str(run_dir), model={"name_or_path": str(model)}, grid={"axes": axes, "store": str(store)})
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------------------------------- expansion


def test_cells_are_the_product_with_the_none_arm_collapsed(tmp_path):
    axes = {"intermediate": ["none", "synth-nli", "synth-nli+synth-para"], "snapshot": ["best", 2], "seed": [1, 2]}
    spec = load_grid(write_grid(tmp_path / "g.yaml", Path("m"), tmp_path / "run", tmp_path / "store", axes))
    ids = [cell.cell_id for cell in spec.cells]
    # none x {best, 2} collapses to one cell per seed: 2 + 2 * 2 * 2 = 10
    assert len(ids) == len(set(ids)) == 10
    none_cells = [c for c in spec.cells if not c.has_intermediate]
    assert [c.labels["snapshot"] for c in none_cells] == ["-", "-"]
    assert {c.config.seed for c in spec.cells} == {1, 2}
    two = next(c for c in spec.cells if c.labels["intermediate"] == "synth-nli+synth-para")
    assert two.config.phases.intermediate.tasks == ["synth-nli", "synth-para"]
    assert two.config.phases.intermediate.train_examples == 64  # the base file's settings stay
    # expansion is deterministic
    again = load_grid(tmp_path / "g.yaml")
    assert [c.cell_id for c in again.cells] == ids


def test_target_size_axis_counts_fractions_and_all(tmp_path):
    axes = {"target_size": [100, 0.5, "all"]}
    spec = load_grid(write_grid(tmp_path / "g.yaml", Path("m"), tmp_path / "run", tmp_path / "store", axes))
    targets = [c.config.phases.target for c in spec.cells]
    assert [(t.train_examples, t.train_fraction) for t in targets] == [(100, None), (None, 0.5), (None, None)]


def test_dotted_axes_and_errors(tmp_path):
    axes = {"phases.target.optimization.lr": [1.0e-4, 3.0e-4]}
    spec = load_grid(write_grid(tmp_path / "g.yaml", Path("m"), tmp_path / "run", tmp_path / "store", axes))
    assert [c.config.phase_optimization("target").lr for c in spec.cells] == [1.0e-4, 3.0e-4]
    axes = {"intermediate": ["none", "synth-nli"], "phases.intermediate.adversarial": [None, {"method": "freelb"}]}
    spec = load_grid(write_grid(tmp_path / "a.yaml", Path("m"), tmp_path / "run", tmp_path / "store", axes))
    assert [c.cell_id for c in spec.cells] == [
        "intermediate=none,adversarial=-", "intermediate=synth-nli,adversarial=null", "intermediate=synth-nli,adversarial=freelb"
    ]
    assert spec.cells[2].config.phases.intermediate.adversarial.method == "freelb"
    assert spec.cells[1].config.phases.intermediate.adversarial is None
    with pytest.raises(ConfigError, match="snapshot"):
        load_grid(write_grid(tmp_path / "g.yaml", Path("m"), tmp_path / "r", tmp_path / "s", {"snapshot": ["later"]}))
    with pytest.raises(ConfigError, match="unknown task"):
        load_grid(write_grid(tmp_path / "g.yaml", Path("m"), tmp_path / "r", tmp_path / "s", {"intermediate": ["nope"]}))
    with pytest.raises(ConfigError, match="non-empty list"):
        load_grid(write_grid(tmp_path / "g.yaml", Path("m"), tmp_path / "r", tmp_path / "s", {"seed": 3}))


def test_a_target_value_can_train_one_task_and_evaluate_another(tmp_path):
    """XTREME-R's XCOPA recipe: train an English choice task, evaluate XCOPA zero-shot, beside an XNLI target."""
    axes = {"target": ["xnli", {"tasks": "commonsense_qa", "train_examples": 40, "evaluate": "xcopa",
                                "languages": ["it", "sw"], "split": "test"}]}
    spec = load_grid(write_grid(tmp_path / "g.yaml", Path("m"), tmp_path / "run", tmp_path / "store", axes))
    xnli, choice = spec.cells
    assert [c.cell_id for c in spec.cells] == ["target=xnli", "target=commonsense_qa-to-xcopa"]
    assert xnli.config.evaluation_tasks() == ["xnli"] and xnli.config.phases.evaluate.languages == ["en", "xa", "xb"]
    assert choice.config.phases.target.tasks == ["commonsense_qa"] and choice.config.phases.target.train_examples == 40
    assert xnli.config.phases.target.train_examples is None  # a target value's fields are its own
    assert choice.config.evaluation_tasks() == ["xcopa"] and choice.config.phases.evaluate.languages == ["it", "sw"]
    assert choice.config.phases.evaluate.split == "test" and xnli.config.phases.evaluate.split == "validation"
    with pytest.raises(ConfigError, match="needs 'tasks'"):
        load_grid(write_grid(tmp_path / "b.yaml", Path("m"), tmp_path / "r", tmp_path / "s",
                             {"target": [{"evaluate": "xcopa"}]}))
    with pytest.raises(ConfigError, match="unknown field"):
        load_grid(write_grid(tmp_path / "c.yaml", Path("m"), tmp_path / "r", tmp_path / "s",
                             {"target": [{"tasks": "xnli", "epochz": 3}]}))


def test_shards_partition_the_cells(tmp_path):
    spec = load_grid(write_grid(tmp_path / "g.yaml", Path("m"), tmp_path / "run", tmp_path / "store"))
    shards = [select_shard(spec.cells, f"{i}/3") for i in (1, 2, 3)]
    ids = [c.cell_id for shard in shards for c in shard]
    assert sorted(ids) == sorted(c.cell_id for c in spec.cells) and len(ids) == len(set(ids))
    for bad in ("0/2", "3/2", "x", "1-2"):
        with pytest.raises(ConfigError, match="--shard"):
            select_shard(spec.cells, bad)


# ------------------------------------------------------------------------------------------- store keys


def _identity(**changes):
    config = experiment_from_dict({**copy.deepcopy(BASE), "model": {"name_or_path": "m"}})
    phase = config.phases.intermediate
    for name, value in changes.items():
        setattr(phase, name, value)
    return phase_identity("intermediate", {"pretrained": "m"}, phase, config.phase_optimization("intermediate"),
                          seed=1, deepspeed=config.deepspeed, kernels="none", pooling="cls", data_dirs={})


def test_phase_key_follows_what_determines_the_weights():
    base = key_of(_identity())
    # computed by the code before fused_adamw / group_by_length existed: phases stored then keep their keys
    assert base == "7f4407e3f8709380"
    assert key_of(_identity()) == base
    assert key_of(_identity(snapshots=[1, 3])) == base  # snapshots only add files
    assert key_of(_identity(train_examples=32)) != base
    assert key_of(_identity(train_languages=["en", "xa"])) != base
    assert key_of(_identity(tasks=["synth-para"])) != base


def test_phase_key_changes_with_the_fast_training_options():
    from fastxlt.experiments.store import phase_identity

    def key(**optimization) -> str:
        config = experiment_from_dict({**BASE, "optimization": {**BASE["optimization"], **optimization}})
        return key_of(phase_identity("intermediate", {"pretrained": "m"}, config.phases.intermediate,
                                     config.phase_optimization("intermediate"), seed=1, deepspeed=config.deepspeed,
                                     kernels="none", pooling="cls", data_dirs={}))

    base = key()
    assert key(fused_adamw=False, group_by_length=0, fast_dropout=False) == base  # at their defaults: the same phase
    assert len({base, key(fused_adamw=True), key(group_by_length=16), key(fast_dropout=True)}) == 4
    # row-sparse embedding gradients give the same weights bit for bit (tests/test_embedding_grads.py)
    assert key(sparse_embedding_grads=True) == base


# ------------------------------------------------------------------------------------------- subsets


def test_target_sizes_are_nested_prefixes_of_one_permutation():
    data = [list(range(1000))]
    small = subset_examples(data, PhaseConfig(tasks=["x"], train_examples=100))
    large = subset_examples(data, PhaseConfig(tasks=["x"], train_examples=400))
    half = subset_examples(data, PhaseConfig(tasks=["x"], train_fraction=0.5))
    assert len(small) == 100 and len(large) == 400 and len(half) == 500
    assert set(small) < set(large) < set(half)
    assert small != list(range(100))  # a random subset, not the head of the file
    other_seed = subset_examples(data, PhaseConfig(tasks=["x"], train_examples=100, subset_seed=1))
    assert set(other_seed) != set(small)


def test_multilingual_subsets_split_the_budget_equally_over_different_items():
    languages = ["en", "de", "fr"]
    parallel = [[(lang, i) for i in range(300)] for lang in languages]  # same items in three languages
    chosen = subset_examples(parallel, PhaseConfig(tasks=["x"], train_examples=90))
    assert len(chosen) == 90
    assert {lang: sum(1 for l, _ in chosen if l == lang) for lang in languages} == {"en": 30, "de": 30, "fr": 30}
    assert len({i for _, i in chosen}) == 90  # no item is seen in two languages
    everything = subset_examples(parallel, PhaseConfig(tasks=["x"], train_examples=900))
    assert sorted(everything) == sorted(pair for rows in parallel for pair in rows)  # each (language, item) once
    uneven = [[("en", i) for i in range(100)], [("de", i) for i in range(7)]]
    chosen = subset_examples(uneven, PhaseConfig(tasks=["x"], train_examples=40))
    assert sum(1 for l, _ in chosen if l == "de") == 7 and len(chosen) == 40


# ------------------------------------------------------------------------------------------- end to end


def cli(*args: str, env_extra: dict | None = None, check: bool = True, background: bool = False):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "COLUMNS": "160",
           **(env_extra or {})}
    command = [sys.executable, "-m", "fastxlt.cli", *args]
    if background:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def cell_scores(run_dir: Path) -> dict[str, dict]:
    """Per cell: arm -> task -> per-language scores (the model's path differs between stores)."""
    return {
        cell.name: {arm: {task: r["languages"] for task, r in result["tasks"].items()}
                    for arm, result in read_json(cell / "results.json")["arms"].items()}
        for cell in sorted((run_dir / "cells").iterdir())
    }


def trained_phases(store: Path, kind: str) -> list[Path]:
    return sorted(p.parent for p in (store / kind).glob("*/phase.json"))


@pytest.fixture(scope="module")
def reference_grid(tmp_path_factory, synthetic_model):
    root = tmp_path_factory.mktemp("grid")
    path = write_grid(root / "grid.yaml", synthetic_model, root / "run", root / "store")
    result = cli("run", "--config", str(path))
    return root, path, result


def test_grid_trains_each_phase_once_and_reports(reference_grid, synthetic_model):
    root, path, result = reference_grid
    store, run_dir = root / "store", root / "run"
    # 2 seeds -> 2 intermediate phases shared by both target sizes; 2 arms x 2 sizes x 2 seeds targets
    assert len(trained_phases(store, "intermediate")) == 2
    assert len(trained_phases(store, "target")) == 8
    cells = sorted((run_dir / "cells").iterdir())
    assert len(cells) == 8 and all((c / "results.json").is_file() for c in cells)
    for cell in cells:
        record = read_json(cell / "cell.json")
        summary = read_json(store / "target" / record["phase_keys"]["target"] / "phase.json")
        assert summary["train_sizes"] == [int(record["axes"]["target_size"])]
    # both sizes of one seed start from the same intermediate phase
    keys = {read_json(c / "cell.json")["phase_keys"].get("intermediate") for c in cells if "synth-nli" in c.name}
    assert len(keys) == 2
    assert "synth-para zero-shot" in result.stdout and "delta" in result.stdout
    assert "non-English average" in result.stdout
    # the report: tidy rows for every cell and language, figures, and the paper-style table
    import pandas as pd

    rows = pd.read_csv(run_dir / "results.csv")
    assert len(rows) == 8 * 3 and set(rows["seed"]) == {1, 2}
    assert (run_dir / "report.md").is_file() and list((run_dir / "figures").glob("*.png"))
    # a second grid on the same store (another run directory) trains nothing and gives the same scores
    before = {p: (p / "phase.json").stat().st_mtime_ns for p in trained_phases(store, "target")}
    other = write_grid(root / "other.yaml", synthetic_model, root / "run2", store)
    cli("run", "--config", str(other))
    assert {p: (p / "phase.json").stat().st_mtime_ns for p in trained_phases(store, "target")} == before
    assert cell_scores(root / "run2") == cell_scores(run_dir)
    status = cli("status", str(run_dir))
    assert "done        8 / 8" in status.stdout


def test_killed_grid_resumes_to_the_same_results(reference_grid, tmp_path, synthetic_model):
    root, _, _ = reference_grid
    path = write_grid(tmp_path / "grid.yaml", synthetic_model, tmp_path / "run", tmp_path / "store")
    killed = cli("run", "--config", str(path), env_extra={"FASTXLT_DEBUG_KILL_AT_STEP": "3"}, check=False)
    assert killed.returncode == -9  # SIGKILLed at step 3 of the first cell's target phase
    states = cli("status", str(tmp_path / "run")).stdout
    assert "done        0 / 8" in states
    cli("run", "--config", str(path))
    assert cell_scores(tmp_path / "run") == cell_scores(root / "run")


def test_two_concurrent_shards_equal_one_process(reference_grid, tmp_path, synthetic_model):
    root, _, _ = reference_grid
    path = write_grid(tmp_path / "grid.yaml", synthetic_model, tmp_path / "run", tmp_path / "store")
    shards = [cli("run", "--config", str(path), "--shard", f"{i}/2", background=True) for i in (1, 2)]
    for process in shards:
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]
    assert len(trained_phases(tmp_path / "store", "intermediate")) == 2  # each trained by one shard only
    assert cell_scores(tmp_path / "run") == cell_scores(root / "run")


def test_max_examples_evaluates_the_first_n_of_each_language_and_keys_the_cache(tiny_run, tmp_path):
    from fastxlt.evaluation.model_eval import evaluate_models, find_models
    from fastxlt.tasks.base import get_task

    models = find_models(tiny_run)
    settings = dict(languages=["en", "xa"], split="test", data_dirs={}, max_length=64)
    full = evaluate_models(models, ["synth-para"], out_root=tmp_path, **settings)
    first = evaluate_models(models, ["synth-para"], out_root=tmp_path, max_examples=40, **settings)
    (arm,) = models
    saved = read_json(tmp_path / "eval" / arm / "synth-para" / "xa.json")
    assert saved["examples"] == 40
    gold = [example.label for example in get_task("synth-para").load("test", "xa")][:40]
    import numpy as np

    expected = 100 * float(np.mean(np.array(saved["predictions"]) == np.array(gold)))
    assert first["arms"][arm]["tasks"]["synth-para"]["languages"]["xa"]["accuracy"] == pytest.approx(expected)
    # the full evaluation is not served from the 40-example cache entry, and vice versa
    again = evaluate_models(models, ["synth-para"], out_root=tmp_path, **settings)
    assert again["arms"][arm]["tasks"] == full["arms"][arm]["tasks"]
    assert read_json(tmp_path / "eval" / arm / "synth-para" / "xa.json")["examples"] > 40


def test_grid_table_deltas_pair_equal_seeds(tmp_path):
    """A cut-short grid: the intermediate arm has seed 1 only, the baseline seeds 1 and 2; the delta is
    against seed 1's baseline (hand-computed), not the two-seed mean."""
    from fastxlt.reports.grid_table import grid_tables
    from fastxlt.utils.io import write_json_atomic

    cells = {("none", 1): {"en": 50.0, "de": 40.0}, ("none", 2): {"en": 60.0, "de": 50.0}, ("x", 1): {"en": 55.0, "de": 46.0}}
    ids = []
    for (arm, seed), scores in cells.items():
        cell_id = f"intermediate={arm},seed={seed}"
        ids.append(cell_id)
        write_json_atomic(tmp_path / "cells" / cell_id / "cell.json", {"axes": {"intermediate": arm, "seed": str(seed)}})
        languages = {lang: {"accuracy": value} for lang, value in scores.items()}
        write_json_atomic(tmp_path / "cells" / cell_id / "results.json",
                          {"arms": {arm: {"tasks": {"t": {"metric": "accuracy", "languages": languages}}}}})
    write_json_atomic(tmp_path / "grid.json", {"cells": ids})
    from rich.console import Console

    console = Console(width=200, record=True)
    for table in grid_tables(tmp_path):
        console.print(table)
    text = console.export_text()
    de_row = next(line for line in text.splitlines() if line.strip("│ ").startswith("de"))
    assert "+6.00" in de_row  # de: 46 - 40 (seed 1), not 46 - 45 (mean of seeds 1 and 2)
