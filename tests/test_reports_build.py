"""Reports from run directories written by hand (the grid contract: grid.json, cells/<id>/{cell.json,
results.json, eval/<arm>/<task>/<lang>.json}) and from a single run: results.csv, report.md, figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fastxlt.errors import ConfigError
from fastxlt.reports.build import build_report
from fastxlt.reports.collect import collect, results_frame
from fastxlt.reports.compare import summarise

LANGUAGES = ("en", "fr", "sw")
N = 200


def correct_rows(rng: np.random.Generator, accuracy: float) -> list[list[float]]:
    """N rows with exactly round(accuracy * N) correct examples, in random order."""
    hits = np.zeros(N)
    hits[: int(round(accuracy * N))] = 1.0
    rng.shuffle(hits)
    return [[float(x)] for x in hits]


def write_cell(directory: Path, axes: dict, accuracies: dict[str, float], rng, *, steps=None, dev=None) -> dict:
    arm = "baseline" if axes["intermediate"] == "none" else axes["intermediate"]
    languages, stored = {}, {}
    for language, accuracy in accuracies.items():
        rows = correct_rows(rng, accuracy)
        score = 100.0 * float(np.mean([r[0] for r in rows]))
        languages[language] = {"accuracy": score}
        stored[language] = score
        (directory / "eval" / arm / "xnli").mkdir(parents=True, exist_ok=True)
        (directory / "eval" / arm / "xnli" / f"{language}.json").write_text(json.dumps(
            {"task": "xnli", "language": language, "split": "test", "model": "m", "examples": N,
             "scores": {"accuracy": score}, "predictions": [0] * N, "example_scores": rows}))  # fmt: skip
    average = float(np.mean(list(stored.values())))
    results = {"name": directory.name, "arms": {arm: {"model": "m", "benchmark_score": average, "tasks": {"xnli": {
        "task": "xnli", "metric": "accuracy", "split": "test", "languages": languages,
        "average": {"accuracy": average}, "score": average}}}}}  # fmt: skip
    (directory / "results.json").write_text(json.dumps(results))
    (directory / "cell.json").write_text(json.dumps({"cell_id": directory.name, "axes": axes,
                                                     "intermediate_steps": steps, "intermediate_dev_score": dev}))  # fmt: skip
    return stored


def make_grid(root: Path, *, snapshots=("best",), pending: int = 1, extra: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """none / snli x target sizes 250, all x seeds 1, 2. snli adds 2 points in en; elsewhere 10 points at size 250
    and 6 at size all (+2 more per later snapshot)."""
    rng = np.random.default_rng(0)
    cells, scores = [], {}
    base_accuracy = {"en": 0.70, "fr": 0.60, "sw": 0.45}
    for size in (250, "all"):
        for seed in (1, 2):
            for intermediate in ("none", "snli"):
                for s, snapshot in enumerate(snapshots if intermediate != "none" else ("-",)):
                    axes = {"model": "me5-small", "intermediate": intermediate,
                            "intermediate_languages": "en" if intermediate != "none" else "-",
                            "snapshot": snapshot, "target": "xnli", "target_size": size, "seed": seed}  # fmt: skip
                    cell_id = f"i={intermediate},snap={snapshot},size={size},seed={seed}"
                    gain = 0.0 if intermediate == "none" else 0.02 * (s + 1) + (0.08 if size == 250 else 0.04)
                    accuracies = {lang: acc + (gain if lang != "en" else 0.02) * (intermediate != "none") + 0.01 * seed
                                  + (extra or {}).get(lang, 0.0) * (intermediate != "none")
                                  for lang, acc in base_accuracy.items()}  # fmt: skip
                    steps = None if intermediate == "none" else 100 * (s + 1)
                    scores[cell_id] = write_cell(root / "cells" / cell_id, axes, accuracies, rng, steps=steps, dev=70.0)
                    cells.append(cell_id)
    cells += [f"pending-{i}" for i in range(pending)]
    (root / "grid.json").write_text(json.dumps({"name": "toy", "axes": {}, "cells": cells}))
    return scores


def test_grid_report_tables_csv_and_figures(tmp_path):
    scores = make_grid(tmp_path)
    report = build_report(tmp_path, replicates=300)
    text = report.read_text()
    assert "8 done, 1 pending" in text
    frame = pd.read_csv(tmp_path / "results.csv")
    assert len(frame) == 8 * len(LANGUAGES)
    assert {"model", "intermediate", "intermediate_languages", "target", "target_size", "snapshot", "seed", "language",
            "score", "metric", "examples"} <= set(frame.columns)  # fmt: skip
    row = frame[(frame["cell_id"] == "i=snli,snap=best,size=250,seed=2") & (frame["language"] == "sw")].iloc[0]
    assert row["score"] == pytest.approx(scores["i=snli,snap=best,size=250,seed=2"]["sw"])
    assert row["examples"] == N
    # the paper table: size 250, snli vs none: fr +10, sw +10, en +2 -> average delta +7.33, significant
    assert "## Paper-style table: model=me5-small, target_size=250" in text
    assert "| snli | 67.17 (+7.33*) |" in text
    assert "(+4.67*)" in text  # size all: +6, +6, +2
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert "heatmap_xnli.png" in figures and "gain_vs_target_size.png" in figures
    assert "skipped model-size curves: the model axis has a single value" in text
    assert "skipped mono vs multilingual intermediate data" in text
    assert "skipped score vs intermediate steps" in text


def test_summary_means_std_and_intervals(tmp_path):
    scores = make_grid(tmp_path, pending=0)
    collection = collect(tmp_path)
    summary, _ = summarise(collection, results_frame(collection), replicates=300)
    row = summary[(summary["setting"] == "snli") & (summary["target_size"] == "250") & (summary["language"] == "fr")].iloc[0]
    seeds = [scores[f"i=snli,snap=best,size=250,seed={s}"]["fr"] for s in (1, 2)]
    assert row["score"] == pytest.approx(np.mean(seeds))
    assert row["std"] == pytest.approx(np.std(seeds, ddof=1))
    assert row["delta"] == pytest.approx(10.0)
    assert row["low"] < 10.0 < row["high"] and row["significant"]
    en = summary[(summary["setting"] == "snli") & (summary["target_size"] == "250") & (summary["language"] == "en")].iloc[0]
    assert en["delta"] == pytest.approx(2.0) and en["low"] < en["delta"] < en["high"]


def test_a_language_group_has_its_average_and_its_difference_from_the_rest(tmp_path):
    """--group low=sw: sw gains 10 + 5 points at size 250, fr 10 (by construction), so the group's delta is +15 and
    its difference from the other non-English languages +5, with an interval around it; English stays out."""
    scores = make_grid(tmp_path, pending=0, extra={"sw": 0.05})
    collection = collect(tmp_path)
    summary, _ = summarise(collection, results_frame(collection), replicates=300, groups={"low": ["sw", "ur"]})
    part = summary[(summary["setting"] == "snli") & (summary["target_size"] == "250")].set_index("language")
    assert part.loc["group low", "delta"] == pytest.approx(15.0)
    assert part.loc["group low", "score"] == pytest.approx(np.mean([scores[f"i=snli,snap=best,size=250,seed={s}"]["sw"]
                                                                    for s in (1, 2)]))
    difference = part.loc["group low - rest"]
    assert difference["delta"] == pytest.approx(part.loc["sw", "delta"] - part.loc["fr", "delta"]) == pytest.approx(5.0)
    assert difference["low"] < 5.0 < difference["high"] and np.isnan(difference["score"])
    baseline = summary[(summary["setting"] == "none") & (summary["target_size"] == "250")].set_index("language")
    assert "group low" in baseline.index and np.isnan(baseline.loc["group low", "delta"])
    text = build_report(tmp_path, replicates=100, groups={"low": ["sw"]}).read_text()
    assert "group low - rest" in text


def test_a_chosen_baseline_pairs_cells_that_differ_on_its_axis_only(tmp_path):
    """--baseline target_size=all: each 250-pair cell is compared with the same arm and seed at size all; by
    construction snli gains 8 points at 250 and 4 at all outside English (+4), none gains nothing (0)."""
    make_grid(tmp_path, pending=0)
    collection = collect(tmp_path)
    summary, _ = summarise(collection, results_frame(collection), replicates=200, baseline=("target_size", "all"))
    small = summary[summary["target_size"] == "250"].set_index(["setting", "language"])
    assert small.loc[("snli", "fr"), "delta"] == pytest.approx(4.0)
    assert small.loc[("snli", "en"), "delta"] == pytest.approx(0.0)
    assert small.loc[("none", "sw"), "delta"] == pytest.approx(0.0)
    assert small.loc[("snli", "fr"), "paired_seeds"] == 2
    assert summary[summary["target_size"] == "all"]["delta"].isna().all()  # the baseline cells themselves
    with pytest.raises(ConfigError, match="no axis 'size'"):
        summarise(collection, results_frame(collection), replicates=10, baseline=("size", "all"))


def test_the_conclusion_carries_each_delta_with_its_interval_and_reading(tmp_path):
    """The printed conclusion of a grid: per context and setting, the non-English delta (+10 at size 250 by
    construction), its interval, the paired seeds and what the interval allows one to say."""
    from fastxlt.reports.build import conclusion_lines

    make_grid(tmp_path, pending=0)
    report = build_report(tmp_path, replicates=200)
    summary = pd.read_csv(tmp_path / "summary.csv")
    lines = [line for line in conclusion_lines(report) if "warning" not in line]  # the toy files predict class 0
    assert len(lines) == 2  # snli vs none at sizes 250 and all
    row = summary[(summary["setting"] == "snli") & (summary["target_size"].astype(str) == "250")
                  & (summary["language"] == "average (non-English)")].iloc[0]
    small = next(line for line in lines if "target_size=250" in line)
    assert f"by {row['delta']:+.2f} points [95% interval {row['low']:+.2f}, {row['high']:+.2f}]" in small
    assert row["delta"] == pytest.approx(10.0) and "over 2 paired seed(s)" in small
    assert ("excludes 0: a gain" in small) == (row["low"] > 0)


def test_snapshots_dev_selected_and_oracle_and_step_curve(tmp_path):
    make_grid(tmp_path, snapshots=("best", "step-200"), pending=0)
    text = build_report(tmp_path, replicates=200).read_text()
    # step-200 is the second snapshot (+2 points more than best): the oracle
    assert "snli (dev-selected snapshot)" in text
    assert "snli (oracle snapshot: step-200)" in text
    assert (tmp_path / "figures" / "score_vs_intermediate_steps.png").is_file()


def test_single_run_directory_report(tmp_path):
    rng = np.random.default_rng(1)
    run = tmp_path / "run"
    base = write_cell(run, {"intermediate": "none"}, {"en": 0.7, "xa": 0.5}, rng)
    (run / "cell.json").unlink()
    arm = write_cell(tmp_path / "other", {"intermediate": "synth-nli"}, {"en": 0.75, "xa": 0.6}, rng)
    merged = json.loads((run / "results.json").read_text())
    merged["arms"].update(json.loads((tmp_path / "other" / "results.json").read_text())["arms"])
    (run / "results.json").write_text(json.dumps(merged))
    (tmp_path / "other" / "eval" / "synth-nli").rename(run / "eval" / "synth-nli")
    (run / "config.yaml").write_text("model: {name_or_path: synthetic}\nseed: 13\nphases: {target: {tasks: [synth-para]}}\n")
    text = build_report(run, replicates=200).read_text()
    assert "A single run with 2 arms" in text
    delta = np.mean([arm["en"] - base["en"], arm["xa"] - base["xa"]])
    assert f"({delta:+.2f}" in text
    frame = pd.read_csv(run / "results.csv")
    assert set(frame["intermediate"]) == {"none", "synth-nli"} and set(frame["model"]) == {"synthetic"}
    assert (run / "figures" / "heatmap_xnli.png").is_file()


def test_all_pending_grid_and_missing_directory(tmp_path):
    (tmp_path / "grid.json").write_text(json.dumps({"name": "empty", "axes": {}, "cells": ["a", "b"]}))
    text = build_report(tmp_path).read_text()
    assert "0 done, 2 pending" in text and "No cell is done yet" in text
    from fastxlt.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="neither grid.json nor results.json"):
        build_report(tmp_path / "nowhere")


def test_cli_report_prints_table_and_writes_files(tmp_path, capsys, monkeypatch):
    from fastxlt.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # rich would wrap the long paths
    make_grid(tmp_path, pending=0)
    single = tmp_path / "cells" / "i=snli,snap=best,size=250,seed=1"
    assert main(["report", str(single)]) == 0
    out = capsys.readouterr().out
    assert "xnli" in out and f"report: {single / 'report.md'}" in out
    assert (single / "results.csv").is_file() and "figure:" in out


def test_evaluate_task_stores_example_scores_that_reproduce_the_scores(tmp_path, tiny_run):
    from fastxlt.evaluation.model_eval import evaluate_models
    from fastxlt.tasks.metrics import metric_from_statistics

    evaluate_models({"baseline": tiny_run / "target" / "baseline" / "model"}, ["synth-para"], languages=["en", "xa"],
                    split="test", out_root=tmp_path, data_dirs={}, max_length=64)  # fmt: skip
    for language in ("en", "xa"):
        saved = json.loads((tmp_path / "eval" / "baseline" / "synth-para" / f"{language}.json").read_text())
        assert len(saved["example_scores"]) == saved["examples"]
        assert metric_from_statistics("accuracy", saved["example_scores"]) == saved["scores"]


def test_target_size_fixed_in_the_base_config_is_reported(tmp_path):
    """A grid without a target_size axis whose base config trains on 500 pairs reports size 500, not "all"."""
    cell = tmp_path / "cells" / "i=none"
    write_cell(cell, {"intermediate": "none", "seed": 1}, {"en": 0.7, "fr": 0.6}, np.random.default_rng(0))
    (cell / "config.yaml").write_text("seed: 1\nphases:\n  target: {tasks: [xnli], train_examples: 500}\n")
    (tmp_path / "grid.json").write_text(json.dumps({"name": "fixed", "axes": {}, "cells": ["i=none"]}))
    build_report(tmp_path, replicates=50)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert set(frame["target_size"]) == {500}
    assert set(frame["target"]) == {"xnli"}


def test_panel_titles_leave_out_axes_a_grid_does_not_set():
    from fastxlt.reports.figures import _panel_title

    assert _panel_title(("", "xnli", "snli")) == "xnli | snli"
    assert _panel_title("xnli") == "xnli"
    assert _panel_title((float("nan"), "pawsx", "snli [freelb]")) == "pawsx | snli [freelb]"


def _headline(task, size, setting, language, delta, low, high):
    intermediate = "none" if setting == "none" else setting
    return {"intermediate": intermediate, "setting": setting, "task": task, "target_size": size, "language": language,
            "delta": delta, "low": low, "high": high}  # fmt: skip


def test_no_gain_vs_size_figure_when_each_task_has_its_own_single_size(tmp_path):
    """Question 5 trains XNLI on 1,000 pairs and CommonsenseQA on 500: two target sizes in the run, one per
    task, so no line could join two sizes; the figure is skipped with the reason instead of drawn as dots."""
    from types import SimpleNamespace

    from fastxlt.reports.figures import Skipped, gain_vs_size

    rows = [_headline(task, size, "xnli", "average", 1.0, 0.0, 2.0) for task, size in (("xnli", "1000"), ("xcopa", "500"))]
    lay = SimpleNamespace(context_axes=["target_size"])
    skipped = gain_vs_size(pd.DataFrame.from_records(rows), lay, tmp_path / "g.png")
    assert isinstance(skipped, Skipped) and "no task was trained at two target sizes" in skipped.reason
    assert not (tmp_path / "g.png").exists()
    rows += [{**row, "target_size": "250"} for row in rows if row["task"] == "xnli"]
    drawn = gain_vs_size(pd.DataFrame.from_records(rows), lay, tmp_path / "g.png")
    assert drawn == tmp_path / "g.png" and drawn.is_file()


def test_gain_vs_size_plots_each_tasks_headline_average_with_its_interval(tmp_path):
    """Question 1's figure: per task and setting, the delta of the non-English average (the average where a task
    has no English row to leave out) at each target size, with that average's own bootstrap interval -- not a
    mean of per-language deltas, whose intervals say nothing about the mean's."""
    from types import SimpleNamespace

    from fastxlt.reports.figures import gain_vs_size, gain_vs_size_points

    rows = []
    for size, gain in (("250", 3.0), ("1000", 0.5)):
        for setting, shift in (("snli", 0.0), ("anli", -1.0)):
            rows += [_headline("xnli", size, setting, "de", 9.0, 8.0, 10.0),  # per-language rows: not plotted
                     _headline("xnli", size, setting, "average", gain + shift + 0.2, 0.0, 9.0),
                     _headline("xnli", size, setting, "average (non-English)", gain + shift, gain + shift - 1, gain + shift + 1),
                     _headline("xcopa", size, setting, "average", -gain, -gain - 2, -gain + 2)]  # fmt: skip
        rows.append(_headline("xnli", size, "none", "average (non-English)", float("nan"), float("nan"), float("nan")))
    summary = pd.DataFrame.from_records(rows)
    points = gain_vs_size_points(summary, SimpleNamespace(context_axes=["target_size"]))
    got = {(r.panel, r.setting, r.target_size): (r.language, r.delta, r.low, r.high) for r in points.itertuples()}
    assert got == {
        ("xnli", "snli", "250"): ("average (non-English)", 3.0, 2.0, 4.0),
        ("xnli", "anli", "250"): ("average (non-English)", 2.0, 1.0, 3.0),
        ("xnli", "snli", "1000"): ("average (non-English)", 0.5, -0.5, 1.5),
        ("xnli", "anli", "1000"): ("average (non-English)", -0.5, -1.5, 0.5),
        ("xcopa", "snli", "250"): ("average", -3.0, -5.0, -1.0),
        ("xcopa", "anli", "250"): ("average", -3.0, -5.0, -1.0),
        ("xcopa", "snli", "1000"): ("average", -0.5, -2.5, 1.5),
        ("xcopa", "anli", "1000"): ("average", -0.5, -2.5, 1.5),
    }
    assert gain_vs_size(summary, SimpleNamespace(context_axes=["target_size"]), tmp_path / "g.png").is_file()


def test_majority_share_flags_models_that_answer_one_class(tmp_path):
    """The toy grid's cells predict class 0 for every example: a 100% majority share in results.csv and summary.csv,
    and a warning in the conclusion. One language's file rewritten to 150 x class 2 and 50 x class 1 gives 75%;
    span answers (strings) have no share."""
    make_grid(tmp_path, pending=0)
    cell = tmp_path / "cells" / "i=snli,snap=best,size=250,seed=1"
    path = cell / "eval" / "snli" / "xnli" / "fr.json"
    data = json.loads(path.read_text())
    data["predictions"] = [2] * 150 + [1] * 50
    path.write_text(json.dumps(data))
    text = build_report(tmp_path, replicates=50).read_text()
    frame = pd.read_csv(tmp_path / "results.csv").set_index(["cell_id", "language"])
    assert frame.loc[(cell.name, "fr"), "majority_share"] == pytest.approx(75.0)
    assert frame.loc[(cell.name, "sw"), "majority_share"] == pytest.approx(100.0)
    summary = pd.read_csv(tmp_path / "summary.csv")
    fr = summary[(summary["setting"] == "snli") & (summary["target_size"] == "250") & (summary["language"] == "fr")]
    assert fr["majority_share"].iloc[0] == pytest.approx((75.0 + 100.0) / 2)  # seeds 1 and 2
    average = summary[(summary["setting"] == "snli") & (summary["target_size"] == "250") & (summary["language"] == "average")]
    assert average["majority_share"].iloc[0] == pytest.approx(np.mean([(75 + 100 + 100) / 3, 100.0]), abs=0.005)
    assert "warning: the models give their most frequent answer to" in text

    from fastxlt.reports.collect import _eval_file, majority_share

    data["predictions"] = ["Paris"] * 200
    path.write_text(json.dumps(data))
    _eval_file.cache_clear()  # one report reads each file once
    snli_cell = next(c for c in collect(tmp_path).cells if c.cell_id == cell.name)
    assert majority_share(snli_cell, "xnli", "fr") is None and majority_share(snli_cell, "xnli", "sw") == 100.0
