"""The robustness section of ``fastxlt report``: hand-written grid directories with known per-example rows of
the clean and perturbed passes (drops equal hand-computed values, the drop-difference bootstrap equals a
brute-force loop on the same draws, figures written, no section without perturbations), and a toy grid run
end to end (adversarial axis -> cells -> perturbed evaluation -> report)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fastxlt.reports.build import build_report
from fastxlt.reports.collect import collect
from fastxlt.reports.robustness import robustness_frame, summarise

REPO = Path(__file__).resolve().parents[1]
N = 100
LANGUAGES = ("en", "de", "sw")
CHAR, SWITCH, PGD = "char:0.1", "code_switch_to_en:0.3", "pgd:1"
# (intermediate, adversarial) -> language -> (clean correct, char-perturbed correct) out of N, plus a per-seed shift
CLEAN = {"en": 80, "de": 70, "sw": 60}
CHAR_DROP = {("none", "-"): {"en": 10, "de": 12, "sw": 20},
             ("snli", "null"): {"en": 8, "de": 10, "sw": 16},
             ("snli", "freelb"): {"en": 4, "de": 6, "sw": 10}}  # fmt: skip
SEED_EXTRA = {1: 0, 2: 2}  # seed 2 drops 2 more points everywhere


def hits(rng: np.random.Generator, correct: int) -> np.ndarray:
    """N 0/1 rows with exactly ``correct`` ones, in random order."""
    row = np.zeros(N)
    row[:correct] = 1.0
    rng.shuffle(row)
    return row


def perturbed_from(rng: np.random.Generator, clean: np.ndarray, drop: int) -> np.ndarray:
    """The clean rows with ``drop`` correct examples turned wrong (a perturbation only hurts here)."""
    out = clean.copy()
    out[rng.choice(np.flatnonzero(clean), size=drop, replace=False)] = 0.0
    return out


def write_cell(root: Path, intermediate: str, adversarial: str, seed: int, rng, *, perturb: bool = True) -> str:
    cell_id = f"i={intermediate},adv={adversarial},seed={seed}"
    directory = root / "cells" / cell_id
    arm = "baseline" if intermediate == "none" else intermediate
    languages, perturbations = {}, {CHAR: {}, SWITCH: {}, PGD: {}}
    for language in LANGUAGES:
        clean = hits(rng, CLEAN[language])
        languages[language] = {"accuracy": 100.0 * clean.mean()}
        _write(directory / "eval" / arm / "xnli" / f"{language}.json",
               {"examples": N, "scores": languages[language], "example_scores": clean[:, None].tolist()})  # fmt: skip
        drop = CHAR_DROP[(intermediate, adversarial)][language] + SEED_EXTRA[seed]
        char = perturbed_from(rng, clean, drop)
        perturbations[CHAR][language] = _perturbed(directory / "eval" / arm / "xnli" / "char-0.1-seed0", language, clean, char)
        attacked = perturbed_from(rng, clean, 2 * drop)
        perturbations[PGD][language] = _perturbed(directory / "eval" / arm / "xnli" / "pgd-1-seed0", language, clean, attacked)
        perturbations[PGD][language]["success_rate"] = 2 * drop / clean.sum()
        if language == "sw":
            perturbations[SWITCH][language] = {"clean": 100.0 * clean.mean(), "perturbed": None, "drop": None,
                                               "unavailable": "no MUSE en-sw dictionary in muse"}  # fmt: skip
        else:
            switched = perturbed_from(rng, clean, 5)
            perturbations[SWITCH][language] = _perturbed(directory / "eval" / arm / "xnli" / "code_switch_to_en-0.3-seed0",
                                                         language, clean, switched)  # fmt: skip
    task = {"task": "xnli", "metric": "accuracy", "split": "test", "languages": languages}
    if perturb:
        task["perturbations"] = {key: {"name": key.split(":")[0], "strength": float(key.split(":")[1]), "seed": 0,
                                       "languages": per_language} for key, per_language in perturbations.items()}  # fmt: skip
    _write(directory / "results.json", {"name": cell_id, "arms": {arm: {"model": "m", "tasks": {"xnli": task}}}})
    axes = {"model": "me5-small", "intermediate": intermediate, "phases.intermediate.adversarial": adversarial,
            "target": "xnli", "seed": seed}  # as a grid writes cell.json
    _write(directory / "cell.json", {"cell_id": cell_id, "axes": axes})
    return cell_id


def _perturbed(folder: Path, language: str, clean: np.ndarray, perturbed: np.ndarray) -> dict:
    result = {"clean": 100.0 * clean.mean(), "perturbed": 100.0 * perturbed.mean(),
              "drop": 100.0 * (clean.mean() - perturbed.mean()), "examples": N}  # fmt: skip
    _write(folder / f"{language}.json", {"result": result, "clean_example_scores": clean[:, None].tolist(),
                                         "example_scores": perturbed[:, None].tolist()})  # fmt: skip
    return result


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def make_grid(root: Path, *, perturb: bool = True) -> list[str]:
    rng = np.random.default_rng(0)
    cells = [write_cell(root, i, a, seed, rng, perturb=perturb) for seed in (1, 2) for i, a in CHAR_DROP]
    _write(root / "grid.json", {"name": "toy-robustness", "axes": {}, "cells": cells})
    return cells


def load_rows(root: Path, cell_id: str, arm: str, folder: str, language: str) -> tuple[np.ndarray, np.ndarray]:
    saved = json.loads((root / "cells" / cell_id / "eval" / arm / "xnli" / folder / f"{language}.json").read_text())
    return np.asarray(saved["clean_example_scores"])[:, 0], np.asarray(saved["example_scores"])[:, 0]


# ------------------------------------------------------------------------------------------ hand-written grid


def test_drop_table_equals_hand_computed_drops(tmp_path):
    make_grid(tmp_path)
    text = build_report(tmp_path, replicates=200).read_text()
    assert "## Robustness: drop under perturbation" in text and "### Drop: xnli, char:0.1" in text
    # seed 1 drops the table value, seed 2 two points more: mean = value + 1, std = sqrt(2)
    summary = summarise(collect(tmp_path), robustness_frame(collect(tmp_path)), replicates=200)
    drops = summary.drops.set_index(["perturbation", "setting", "language"])
    for (intermediate, adversarial), per_language in CHAR_DROP.items():
        setting = "none" if intermediate == "none" else f"snli [{adversarial}]"
        for language, drop in per_language.items():
            row = drops.loc[(CHAR, setting, language)]
            assert row["drop"] == pytest.approx(drop + 1.0)  # mean of drop + 0 and drop + 2
            assert row["std"] == pytest.approx(np.std([drop, drop + 2], ddof=1))
            assert row["low"] <= row["drop"] <= row["high"]
        average = drops.loc[(CHAR, setting, "average")]
        assert average["drop"] == pytest.approx(np.mean(list(per_language.values())) + 1.0)
    row = summary.drops.query("perturbation == @CHAR and setting == 'none' and language == 'de'").iloc[0]
    assert f"| de | {row['drop']:.2f} ± {row['std']:.2f} [{row['low']:+.2f}, {row['high']:+.2f}]" in text
    # the difference freelb - null: de 6 - 10 = -4 (every seed), sw 10 - 16 = -6
    diffs = summary.differences.set_index(["perturbation", "language"])
    assert diffs.loc[(CHAR, "de"), "value"] == pytest.approx(-4.0)
    assert diffs.loc[(CHAR, "sw"), "value"] == pytest.approx(-6.0)
    assert diffs.loc[(CHAR, "average"), "value"] == pytest.approx(np.mean([-4, -4, -6]))
    assert summary.differences["comparison"].unique().tolist() == ["snli: freelb - null"]
    # PGD success rate per language: 2 * drop / clean correct, mean over seeds, in percent
    pgd = drops.loc[(PGD, "snli [freelb]", "de")]
    assert 100 * pgd["success_rate"] == pytest.approx(100 * np.mean([2 * 6 / 70, 2 * 8 / 70]))
    assert "Attack success rate" in text and f"{100 * pgd['success_rate']:.1f}" in text
    # languages without a MUSE dictionary are listed as unavailable
    assert "code_switch_to_en:0.3 unavailable in sw: no MUSE en-sw dictionary" in text
    assert "sw" not in set(summary.drops.query("perturbation == @SWITCH")["language"])
    # tidy rows: 6 cells x 3 perturbations x 3 languages, with the hand-computed drops
    frame = pd.read_csv(tmp_path / "robustness.csv")
    assert len(frame) == 6 * 3 * 3
    assert list(frame.columns[:8]) == ["model", "intermediate", "adversarial", "target", "seed", "task", "perturbation", "language"]
    one = frame.query("intermediate == 'snli' and adversarial == 'freelb' and seed == 2 and perturbation == @CHAR and language == 'sw'")
    assert one["drop"].iloc[0] == pytest.approx(12.0)
    # the tables' numbers as files, for pages built from committed results
    written = pd.read_csv(tmp_path / "robustness_differences.csv").set_index(["perturbation", "language"])
    assert written.loc[(CHAR, "average"), "value"] == pytest.approx(np.mean([-4, -4, -6]), abs=1e-4)
    assert len(pd.read_csv(tmp_path / "robustness_drops.csv")) == len(drops)


def test_drop_difference_bootstrap_equals_brute_force(tmp_path):
    make_grid(tmp_path)
    replicates, seed = 150, 7
    summary = summarise(collect(tmp_path), robustness_frame(collect(tmp_path)), replicates=replicates, seed=seed)
    # brute force: one rng, per language in table order draws (replicates x N); per replicate and seed the
    # accuracies of the four passes on the drawn examples, difference of drops averaged over seeds
    rng = np.random.default_rng(seed)
    for language in ("en", "de", "sw"):
        draws = rng.integers(0, N, size=(replicates, N))
        passes = {s: [load_rows(tmp_path, f"i=snli,adv={a},seed={s}", "snli", "char-0.1-seed0", language)
                      for a in ("freelb", "null")] for s in (1, 2)}  # fmt: skip
        values = []
        for r in range(replicates):
            per_seed = []
            for s in (1, 2):
                (adv_clean, adv_pert), (std_clean, std_pert) = passes[s]
                acc = [100.0 * sum(rows[i] for i in draws[r]) / N for rows in (adv_clean, adv_pert, std_clean, std_pert)]
                per_seed.append((acc[0] - acc[1]) - (acc[2] - acc[3]))
            values.append(np.mean(per_seed))
        low, high = np.percentile(values, [2.5, 97.5])
        row = summary.differences.query("perturbation == @CHAR and language == @language").iloc[0]
        assert (row["low"], row["high"]) == pytest.approx((low, high))
        assert low < row["value"] < high


def test_drop_interval_equals_brute_force(tmp_path):
    """The drop's own interval: clean and perturbed pass rescored on the same draws (paired), seeds averaged."""
    make_grid(tmp_path)
    replicates, seed = 120, 3
    summary = summarise(collect(tmp_path), robustness_frame(collect(tmp_path)), replicates=replicates, seed=seed)
    rng = np.random.default_rng(seed)  # the none setting's char drops are bootstrapped first: en, de, sw
    for language in ("en", "de", "sw"):
        draws = rng.integers(0, N, size=(replicates, N))
        passes = [load_rows(tmp_path, f"i=none,adv=-,seed={s}", "baseline", "char-0.1-seed0", language) for s in (1, 2)]
        values = [np.mean([100.0 * (clean[d].sum() - pert[d].sum()) / N for clean, pert in passes]) for d in draws]
        row = summary.drops.query("perturbation == @CHAR and setting == 'none' and language == @language").iloc[0]
        assert (row["low"], row["high"]) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))


def test_figures_are_written(tmp_path):
    make_grid(tmp_path)
    text = build_report(tmp_path, replicates=100).read_text()
    figure = tmp_path / "figures" / "robustness_xnli_all_cells.png"
    assert figure.is_file() and figure.stat().st_size > 10_000
    assert "![robustness xnli](figures/robustness_xnli_all_cells.png)" in text


def test_no_perturbations_no_section(tmp_path):
    make_grid(tmp_path, perturb=False)
    text = build_report(tmp_path, replicates=100).read_text()
    assert "Robustness" not in text and not (tmp_path / "robustness.csv").exists()
    assert not list((tmp_path / "figures").glob("robustness_*.png"))


# ------------------------------------------------------------------------------------------ toy grid end to end


def test_toy_grid_adversarial_perturbed_evaluation_and_report(tmp_path, synthetic_model, shared_data):
    """grid (none / synth-nli x {null, freelb}) -> cells -> perturbed evaluation -> report with drops."""
    config = {
        "name": "toy-robustness", "seed": 5, "kernels": "none", "run_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(synthetic_model)},
        "optimization": {"lr": 5.0e-4, "batch_size": 16, "grad_accum": 1, "max_length": 32, "max_steps": 3,
                         "eval_batch_tokens": 4096, "checkpoint_every": 1},
        "phases": {"intermediate": {"tasks": ["synth-nli"], "train_examples": 48},
                   "target": {"tasks": ["synth-para"], "train_examples": 24},
                   "evaluate": {"languages": ["en", "xa"], "split": "validation", "max_examples": 24,
                                "perturbations": ["word_order:0.5", "code_switch_to_en:0.3", "pgd:1.0"],
                                "muse_dir": str(shared_data / "muse")}},
        "grid": {"store": str(tmp_path / "store"),
                 "axes": {"intermediate": ["none", "synth-nli"], "phases.intermediate.adversarial": [None, {"method": "freelb"}],
                          "seed": [1]}},
    }  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(config)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "COLUMNS": "160"}
    result = subprocess.run([sys.executable, "-m", "fastxlt.cli", "run", "--config", str(path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "run"
    build_report(run, replicates=100)
    text = (run / "report.md").read_text()
    frame = pd.read_csv(run / "robustness.csv", keep_default_na=False)  # "null" is a label, not a missing value
    assert set(frame["adversarial"].astype(str)) == {"-", "null", "freelb"}
    assert set(frame["perturbation"]) == {"word_order:0.5", "code_switch_to_en:0.3", "pgd:1"}
    # the per-language files keep both passes' rows, which reproduce the stored clean and perturbed scores
    for folder in (run / "cells").glob("*/eval/*/synth-para/word_order-0.5-seed1"):
        saved = json.loads((folder / "xa.json").read_text())
        clean, perturbed = np.asarray(saved["clean_example_scores"]), np.asarray(saved["example_scores"])
        assert len(clean) == len(perturbed) == 24
        assert saved["result"]["clean"] == pytest.approx(100 * clean.mean())
        assert saved["result"]["perturbed"] == pytest.approx(100 * perturbed.mean())
    for path in (run / "cells").glob("*/eval/*/synth-para/pgd-1-seed1/en.json"):
        saved = json.loads(path.read_text())
        assert saved["result"]["perturbed"] == pytest.approx(100 * np.mean(saved["example_scores"]))
        assert saved["result"]["clean"] == pytest.approx(100 * np.mean(saved["clean_example_scores"]))
    assert "synth-nli: freelb - null" in text and "Attack success rate" in text
    assert "code_switch_to_en:0.3 unavailable in" in text
    assert list((run / "figures").glob("robustness_*.png"))


def test_report_links_the_perturbed_text_samples(tmp_path):
    """Each drop table is followed by links to what the model was scored on, one per language (issue 21)."""
    cells = make_grid(tmp_path)
    arm = "baseline"
    folder = tmp_path / "cells" / cells[0] / "eval" / arm / "xnli" / "char-0.1-seed0"
    (folder / "de.samples.jsonl").write_text(json.dumps({"original": "Hallo", "perturbed": "Halol"}) + "\n")
    text = build_report(tmp_path, replicates=20).read_text()
    assert f"[de](cells/{cells[0]}/eval/{arm}/xnli/char-0.1-seed0/de.samples.jsonl)" in text
    assert "[en](" not in text  # no samples file, no link
