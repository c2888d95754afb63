"""The whole recipe at toy size (MLM -> intermediate -> target -> zero-shot, with and without the
intermediate phase), its run directory, resumption of a finished run, ``fastxlt-eval``, and the
one-line errors users get for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fastxlt.tasks.aggregate import task_score, xtreme_score
from fastxlt.tasks import metrics
from fastxlt.tasks.base import get_task
from fastxlt.utils.io import read_json
from fastxlt.utils.run_layout import cell_phase_dirs

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "COLUMNS": "160"}
    result = subprocess.run([sys.executable, "-m", "fastxlt.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, synthetic_model) -> tuple[Path, Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("pipeline")
    languages = get_task("synth-para").languages
    config = {
        "name": "toy-pipeline",
        "seed": 5,
        "run_dir": str(root / "run"),
        "model": {"name_or_path": str(synthetic_model)},
        "kernels": "none",
        "compare_without_intermediate": True,
        "optimization": {"lr": 5.0e-4, "batch_size": 16, "grad_accum": 1, "max_length": 32, "max_steps": 3,
                         "eval_batch_tokens": 4096},
        "phases": {
            "mlm": {"tasks": ["synth-mlm"], "train_examples": 64},
            "intermediate": {"tasks": ["synth-nli"], "train_examples": 64},
            "target": {"tasks": ["synth-para"], "train_examples": 64},
            "evaluate": {"languages": "all", "split": "test"},
        },
    }
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cli("run", "--config", str(path))
    assert len(languages) >= 4
    return path, root / "run", result


def test_run_directory_holds_every_phase_and_result(toy_run):
    """A single experiment is a grid of two cells (with and without its intermediate phase) over one store."""
    _, run_dir, result = toy_run
    assert read_json(run_dir / "grid.json")["cells"] == ["intermediate=none", "intermediate=synth-nli"]
    phases = {arm: cell_phase_dirs(run_dir, f"intermediate={arm}") for arm in ("none", "synth-nli")}
    assert list(phases["none"]) == ["mlm", "target"] and list(phases["synth-nli"]) == ["mlm", "intermediate", "target"]
    assert phases["none"]["mlm"] == phases["synth-nli"]["mlm"]  # trained once, shared through the store
    assert phases["none"]["target"] != phases["synth-nli"]["target"]
    for phase_dir in {*phases["none"].values(), *phases["synth-nli"].values()}:
        assert phase_dir.is_relative_to(run_dir / "store"), phase_dir
        assert (phase_dir / "phase.json").is_file(), phase_dir
        assert (phase_dir / "model" / "encoder" / "config.json").is_file(), phase_dir
    results = read_json(run_dir / "results.json")
    assert list(results["arms"]) == ["none", "synth-nli"]
    spec = get_task("synth-para")
    for arm, arm_results in results["arms"].items():
        task = arm_results["tasks"]["synth-para"]
        assert list(task["languages"]) == list(spec.languages)
        # every per-language score is recomputed from the predictions on disk with the official metric
        gold = [example.label for example in spec.load("test", "en")]
        for language, scores in task["languages"].items():
            saved = read_json(run_dir / "cells" / f"intermediate={arm}" / "eval" / arm / "synth-para" / f"{language}.json")
            assert saved["scores"] == scores and saved["examples"] == len(gold)
            assert scores["accuracy"] == pytest.approx(100 * np.mean(np.array(saved["predictions"]) == np.array(gold)))
        assert task["score"] == pytest.approx(np.mean([s["accuracy"] for s in task["languages"].values()]))
        assert arm_results["benchmark_score"] == pytest.approx(task["score"])
    # the table is printed with every language, both arms and their difference
    for language in spec.languages:
        assert f"\n│ {language} " in result.stdout or f"┃ {language}" in result.stdout or f"│ {language}" in result.stdout
    assert "delta" in result.stdout and "average" in result.stdout


def test_finished_run_is_not_retrained_and_report_rebuilds_the_table(toy_run):
    path, run_dir, first = toy_run
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.glob("**/phase.json")}
    eval_stamps = {p: p.stat().st_mtime_ns for p in run_dir.glob("cells/*/eval/**/*.json")}
    again = cli("run", "--config", str(path))
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("**/phase.json")} == stamps
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("cells/*/eval/**/*.json")} == eval_stamps
    report = cli("report", str(run_dir))
    assert "synth-para" in report.stdout and "none" in report.stdout


def test_fastxlt_eval_on_a_run_directory(toy_run, tmp_path):
    _, run_dir, _ = toy_run
    result = cli("eval", "--model", str(run_dir), "--task", "synth-para", "--languages", "xa,en", "--output", str(tmp_path))
    results = read_json(tmp_path / "results.json")
    assert set(results["arms"]) == {"none", "synth-nli"}
    run_results = read_json(run_dir / "results.json")
    for arm in results["arms"]:
        for language in ("xa", "en"):
            assert results["arms"][arm]["tasks"]["synth-para"]["languages"][language] == \
                run_results["arms"][arm]["tasks"]["synth-para"]["languages"][language]
    assert "xa" in result.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["eval", "--model", "RUN", "--task", "nope"], "unknown task 'nope'"),
        (["eval", "--model", "RUN", "--task", "synth-para", "--languages", "xx"], "no language 'xx'"),
        (["eval", "--model", "/nonexistent/model", "--task", "synth-para"], "model path '/nonexistent/model' does not exist"),
        (["eval", "--model", "RUN", "--task", "xnli", "--languages", "de"], "has no trained head 'nli' for task 'xnli'"),
        (["run", "--config", "/nonexistent.yaml"], "config file '/nonexistent.yaml' not found"),
        (["report", "/nonexistent"], "results.json' not found"),
    ],
)
def test_bad_input_gives_one_clear_line(toy_run, args, expected):
    _, run_dir, _ = toy_run
    before = (run_dir / "results.json").read_bytes()
    result = cli(*[str(run_dir) if a == "RUN" else a for a in args], check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fastxlt: error: ") and expected in last, last
    assert "Traceback" not in result.stderr
    assert (run_dir / "results.json").read_bytes() == before  # results already written are kept


def test_missing_data_directory_names_the_path(tmp_path, synthetic_model):
    config = tmp_path / "xnli.yaml"
    config.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "model": {"name_or_path": str(synthetic_model)}, "kernels": "none",
        "data": {"xnli": str(tmp_path / "no-such-dir")}, "phases": {"target": {"tasks": ["xnli"]}},
    }))
    result = cli("train", "--config", str(config), check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fastxlt: error: ") and "no-such-dir" in last, last


def test_aggregates_follow_the_xtreme_definitions():
    assert task_score("squad", {"f1": 80.0, "exact_match": 60.0}) == 70.0
    assert task_score("accuracy", metrics.compute("accuracy", [1, 0, 1, 1], [1, 1, 1, 1])) == 75.0
    assert xtreme_score({"xnli": 79.2, "pawsx": 86.4, "xquad": (76.6 + 60.8) / 2}) == pytest.approx((79.2 + 86.4 + 68.7) / 3)
    with pytest.raises(ValueError):
        xtreme_score({})
    assert json.dumps(metrics.compute("accuracy", [0], [0]))  # plain floats, JSON-serialisable


def test_a_changed_config_is_refused_and_the_results_are_kept(toy_run, tmp_path):
    """Re-running a run directory with settings that would train other weights is refused in one line naming
    what differs; settings that only change how the run is carried out (logging, checkpoints) are not."""
    path, run_dir, _ = toy_run
    before = (run_dir / "results.json").read_bytes()
    changed = yaml.safe_load(path.read_text())
    changed["optimization"]["lr"] = 1.0e-3
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    result = cli("run", "--config", str(tmp_path / "changed.yaml"), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"fastxlt: error: run directory '{run_dir}' was trained with a different config (cell "
                    "intermediate=none differs in: optimization); set a new run_dir or delete the old one")
    assert (run_dir / "results.json").read_bytes() == before


def test_a_run_directory_of_the_former_single_runner_is_refused(tmp_path, synthetic_model):
    from fastxlt.errors import ConfigError
    from fastxlt.experiments.pipeline import run_experiment
    from fastxlt.experiments.preflight import experiment_from_dict

    old = tmp_path / "old"
    (old / "target" / "baseline").mkdir(parents=True)
    (old / "config.yaml").write_text("name: old\n")
    config = experiment_from_dict({"run_dir": str(old), "model": {"name_or_path": str(synthetic_model)}, "kernels": "none",
                                   "optimization": {"max_length": 32},
                                   "phases": {"target": {"tasks": ["synth-para"], "train_examples": 16}}})
    with pytest.raises(ConfigError, match=r"holds a run in the former single-run layout .* set a new run_dir"):
        run_experiment(config)
    assert sorted(p.name for p in old.iterdir()) == ["config.yaml", "target"]  # nothing written
