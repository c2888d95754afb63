"""Research pages (docs/results/qN/index.md) are generated from their committed tables, and their headline
numbers are re-derived here from ``results.csv`` / ``robustness.csv`` alone (an independent computation: per-seed
paired differences of language averages, not the report's summary code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fastxlt.reports.pages import fill, key_of, main, render, summary_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
FOLDERS = sorted(p.parent for p in RESULTS.glob("*/results.csv"))


def test_summary_table_formats_scores_deltas_and_intervals():
    summary = pd.DataFrame.from_records([
        {"setting": "none", "task": "xnli", "language": "average", "score": 50.0, "std": 1.0, "delta": np.nan,
         "low": np.nan, "high": np.nan},
        {"setting": "snli", "task": "xnli", "language": "average", "score": 52.5, "std": np.nan, "delta": 2.5,
         "low": 0.5, "high": 4.25},
        {"setting": "snli", "task": "xnli", "language": "group low - rest", "score": np.nan, "std": np.nan,
         "delta": -1.0, "low": -3.0, "high": 1.0},
    ])  # fmt: skip
    table, values = summary_table(summary, [("avg", "xnli", "average"), ("low - rest", "xnli", "group low - rest")],
                                  ["setting"])
    assert table.splitlines() == [
        "| setting | avg | low - rest |",
        "|---|---:|---:|",
        "| none | 50.00 ± 1.00 |  |",
        "| snli | 52.50 (+2.50* [+0.50, +4.25]) | -1.00 [-3.00, +1.00] |",
    ]
    assert values["delta:snli_xnli_group_low_rest"] == "-1.00 [-3.00, +1.00]"
    assert fill("gain {delta:snli_xnli_average}", values) == "gain +2.50* [+0.50, +4.25]"
    with pytest.raises(KeyError):
        fill("{delta:nothing}", values)


def test_a_block_can_read_another_baselines_summary(tmp_path):
    """Question 5 compares arms with English intermediate data (``fastxlt report --baseline``) besides no
    intermediate training: a block with ``file`` reads that summary, and ``prefix`` keeps its keys apart."""
    def summary(delta: float) -> pd.DataFrame:
        return pd.DataFrame.from_records([
            {"setting": "xnli_de", "task": "xnli", "language": "average", "score": 40.0, "std": 0.5, "delta": delta,
             "low": delta - 1, "high": delta + 1}])  # fmt: skip

    summary(2.0).to_csv(tmp_path / "summary.csv", index=False)
    summary(-0.5).to_csv(tmp_path / "summary_vs_en.csv", index=False)
    (tmp_path / "run.json").write_text(json.dumps({
        "title": "t", "kind": "summary", "rows": ["setting"], "columns": [["avg", "xnli", "average"]], "command": "c",
        "wall_minutes": 1, "date": "d", "setup": "s",
        "blocks": [{"title": "vs none"}, {"title": "vs English", "file": "summary_vs_en.csv", "prefix": "vs_en"}]}))
    (tmp_path / "answer.md").write_text("none: {delta:xnli_de_xnli_average}; en: {delta:vs_en_xnli_de_xnli_average}")
    page = render(tmp_path)
    assert "none: +2.00* [+1.00, +3.00]; en: -0.50 [-1.50, +0.50]" in page
    assert "**vs English**" in page and page.count("| xnli_de |") == 2


@pytest.mark.skipif(not FOLDERS, reason="no committed research pages")
def test_committed_pages_are_what_their_files_give():
    assert main(["render", str(RESULTS), "--check"]) == 0


def _paired_delta(frame: pd.DataFrame, arm: dict, base: dict, task: str, languages, seeds: int = 3) -> float:
    """Mean over seeds of (arm's mean score over ``languages`` - the baseline's), cells matched by seed."""
    def per_seed(selector: dict) -> pd.Series:
        part = frame[(frame["task"] == task) & frame["language"].isin(languages)]
        for column, value in selector.items():
            part = part[part[column].astype(str) == str(value)]
        return part.groupby("seed")["score"].mean()

    arm_scores, base_scores = per_seed(arm), per_seed(base)
    assert list(arm_scores.index) == list(base_scores.index) and len(arm_scores) >= seeds, f"{seeds} seeds, paired"
    return float((arm_scores - base_scores).mean())


def _page(folder: Path) -> str:
    return (folder / "index.md").read_text(encoding="utf-8")


@pytest.mark.skipif(not (RESULTS / "q2" / "results.csv").is_file(), reason="question 2 not committed")
def test_question_2_headlines_from_results_csv():
    folder = RESULTS / "q2"
    frame = pd.read_csv(folder / "results.csv", keep_default_na=False)
    run = json.loads((folder / "run.json").read_text())
    low = run["groups"]["low"]
    languages = sorted(set(frame["language"]))
    non_english = [lang for lang in languages if lang != "en"]
    rest = [lang for lang in non_english if lang not in low]
    page = _page(folder)
    for snapshot in sorted(set(frame["snapshot"]) - {"-"}):
        arm = {"intermediate": "snli", "snapshot": snapshot}
        base = {"intermediate": "none"}
        for chosen in (non_english, low):
            assert f"{_paired_delta(frame, arm, base, 'xnli', chosen):+.2f}" in page
        difference = _paired_delta(frame, arm, base, "xnli", low) - _paired_delta(frame, arm, base, "xnli", rest)
        assert f"{difference:+.2f}" in page


@pytest.mark.skipif(not (RESULTS / "q3" / "results.csv").is_file(), reason="question 3 not committed")
def test_question_3_headlines_from_robustness_csv():
    """Every method's average drop difference against standard training, per task and perturbation, and every
    setting's average drop, re-derived from the per-cell rows of robustness.csv."""
    folder = RESULTS / "q3"
    frame = pd.read_csv(folder / "robustness.csv", keep_default_na=False, na_values=[""])
    frame = frame[frame["drop"].notna()]
    page = _page(folder)
    snli = frame[frame["intermediate"] == "snli"]
    standard = snli[snli["adversarial"] == "null"].set_index(["task", "perturbation", "seed", "language"])["drop"]
    checked = 0
    for (task, perturbation, method), part in snli[snli["adversarial"] != "null"].groupby(["task", "perturbation", "adversarial"]):
        part = part.set_index(["task", "perturbation", "seed", "language"])["drop"]
        difference = (part - standard.reindex(part.index)).groupby(level="seed").mean()
        assert len(difference) >= 1 and not difference.isna().any()
        assert f"{difference.mean():+.2f}" in page, (task, perturbation, method)
        checked += 1
    assert checked >= 4 * 2 * 3  # four methods x two tasks x at least three perturbations
    for (task, perturbation, setting), part in frame.groupby(["task", "perturbation", "intermediate"]):
        if setting == "none":
            average = part.groupby("seed")["drop"].mean().mean()
            assert f"{average:.2f}" in page, (task, perturbation)


def test_a_robustness_page_tabulates_drops_and_differences(tmp_path):
    """A page of kind robustness, from the toy robustness grid's report: the adversarial-minus-standard
    difference under character noise averages -4, -4 and -6 (by construction) and reaches the answer."""
    from fastxlt.reports.build import build_report
    from test_reports_robustness import CHAR, make_grid

    make_grid(tmp_path)
    build_report(tmp_path, replicates=50)
    folder = tmp_path / "page"
    folder.mkdir()
    for name in ("results.csv", "robustness_drops.csv", "robustness_differences.csv"):
        (folder / name).write_bytes((tmp_path / name).read_bytes())
    (folder / "run.json").write_text(json.dumps({"title": "t", "kind": "robustness", "command": "c", "wall_minutes": 1,
                                                 "date": "d", "setup": "s"}))
    differences = pd.read_csv(folder / "robustness_differences.csv")
    row = differences[(differences["perturbation"] == CHAR) & (differences["language"] == "average")].iloc[0]
    (folder / "answer.md").write_text(f"FreeLB: {{diff:{key_of(row['task'], CHAR, row['comparison'])}}}")
    page = render(folder)
    assert f"FreeLB: {np.mean([-4, -4, -6]):+.2f}" in page
    assert "| task, perturbation |" in page


@pytest.mark.skipif(not (RESULTS / "embedded-default" / "results.csv").is_file(), reason="not committed")
def test_the_embedded_defaults_headlines_from_results_csv():
    """The demo's page: synth-nli's paired delta on the non-English average and per language, from results.csv."""
    folder = RESULTS / "embedded-default"
    frame = pd.read_csv(folder / "results.csv", keep_default_na=False)
    page = _page(folder)
    non_english = sorted(set(frame["language"]) - {"en"})
    arm, base = {"intermediate": "synth-nli"}, {"intermediate": "none"}
    assert f"{_paired_delta(frame, arm, base, 'synth-para', non_english, seeds=2):+.2f}" in page
    for language in non_english:
        assert f"{_paired_delta(frame, arm, base, 'synth-para', [language], seeds=2):+.2f}" in page


@pytest.mark.skipif(not (RESULTS / "q5" / "results.csv").is_file(), reason="question 5 not committed")
def test_question_5_headlines_from_results_csv():
    """Every intermediate arm against no intermediate training and against English intermediate data, on the
    non-English average of XNLI, PAWS-X and XCOPA, from results.csv's per-language rows; the Tatoeba columns
    from the suite's own xtreme-r.json (per-seed column scores, not the page's CSV)."""
    folder = RESULTS / "q5"
    frame = pd.read_csv(folder / "results.csv", keep_default_na=False)
    page = _page(folder)
    none, english = {"intermediate": "none"}, {"intermediate": "xnli", "intermediate_languages": "en"}
    checked = 0
    for task in ("xnli", "pawsx", "xcopa"):
        languages = sorted(set(frame[frame["task"] == task]["language"]) - {"en"})
        for arm_languages in ("en", "de", "en+de+es+fr+zh"):
            arm = {"intermediate": "xnli", "intermediate_languages": arm_languages}
            assert f"{_paired_delta(frame, arm, none, task, languages):+.2f}" in page, (task, arm_languages)
            if arm_languages != "en":
                assert f"{_paired_delta(frame, arm, english, task, languages):+.2f}" in page, (task, arm_languages)
            checked += 1
    assert checked == 9
    pawsx = frame[(frame["task"] == "pawsx") & (frame["language"] != "en")]
    for (intermediate, arm_languages), rows in pawsx.groupby(["intermediate", "intermediate_languages"]):
        share = rows["majority_share"].astype(float).mean()  # seeds x languages, each language equally often
        assert share > 99.0 and f"{share:.1f}%" in page, (intermediate, arm_languages)  # "answers the majority class"
    suite = json.loads((folder / "xtreme-r.json").read_text())
    tatoeba: dict[tuple[str, str], dict[str, float]] = {}
    for name, column in suite["columns"].items():
        axes = dict(part.split("=") for part in name.split(","))
        scores = column["tasks"]["tatoeba"]["languages"]
        tatoeba.setdefault((axes["intermediate"], axes["intermediate_languages"]), {})[axes["seed"]] = np.mean(list(scores.values()))
    base = tatoeba[("none", "-")]
    for setting, seeds in tatoeba.items():
        assert len(seeds) >= 3
        if setting != ("none", "-"):
            assert f"{np.mean([seeds[s] - base[s] for s in seeds]):+.2f}" in page, setting


@pytest.mark.skipif(not (RESULTS / "q1" / "results.csv").is_file(), reason="question 1 not committed")
def test_question_1_headlines_from_results_csv():
    """Each intermediate arm's non-English XNLI gain over no intermediate training at every target size, and the
    contrast (gain at a smaller size minus the gain at 1,000 pairs), from results.csv's per-language rows."""
    folder = RESULTS / "q1"
    frame = pd.read_csv(folder / "results.csv", keep_default_na=False)
    page = _page(folder)
    languages = sorted(set(frame[frame["task"] == "xnli"]["language"]) - {"en"})
    sizes = sorted({int(size) for size in frame["target_size"]})
    assert len(sizes) >= 3
    gains = {}
    for size in sizes:
        for arm in ("snli", "anli", "snli+anli"):
            gain = _paired_delta(frame, {"intermediate": arm, "target_size": size},
                                 {"intermediate": "none", "target_size": size}, "xnli", languages)  # fmt: skip
            assert f"{gain:+.2f}" in page, (size, arm)
            gains[size, arm] = gain
    largest = sizes[-1]
    for size in sizes[:-1]:
        for arm in ("snli", "anli", "snli+anli"):
            assert f"{gains[size, arm] - gains[largest, arm]:+.2f}" in page, ("contrast", size, arm)


@pytest.mark.skipif(not (RESULTS / "q4" / "results.csv").is_file(), reason="question 4 not committed")
@pytest.mark.parametrize("task", ["xnli", "xcopa"])
def test_question_4_headlines_from_results_csv(task):
    """At each depth, the multilingual arm's non-English delta against the English arm (XNLI's non-English
    average; XCOPA has no English), and the question's contrasts (the edge at 12 and at 8 layers minus the edge
    at 4), from results.csv's per-language rows over 3 seeds."""
    folder = RESULTS / "q4"
    frame = pd.read_csv(folder / "results.csv", keep_default_na=False)
    page = _page(folder)
    languages = sorted(set(frame[frame["task"] == task]["language"]) - {"en"})
    assert len(languages) == {"xnli": 14, "xcopa": 11}[task]
    edges = {}
    for model in ("me5-small-L4", "me5-small-L8", "me5-small"):
        edges[model] = _paired_delta(frame, {"model": model, "intermediate_languages": "en+de+es+fr+zh"},
                                     {"model": model, "intermediate_languages": "en"}, task, languages)  # fmt: skip
        assert f"{edges[model]:+.2f}" in page, model
    for deeper in ("me5-small", "me5-small-L8"):
        assert f"{edges[deeper] - edges['me5-small-L4']:+.2f}" in page, deeper
