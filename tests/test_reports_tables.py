"""Results that read well: CSV scores rounded to their metric's precision, the model column filled for a grid
that fixes its model in the base config (the synthetic one too), paper-style tables as Markdown and LaTeX files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
from test_reports_build import make_grid, write_cell

from fastxlt.reports.build import build_report
from fastxlt.reports.latex import escape, to_latex
from fastxlt.reports.rounding import round_scores

SCORE_FIELDS = ("score", "std", "delta", "low", "high", "dev_score")


def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def test_csv_scores_are_rounded_to_the_metric_precision(tmp_path):
    make_grid(tmp_path, pending=0)
    build_report(tmp_path, replicates=100)
    for name in ("results.csv", "summary.csv"):
        with open(tmp_path / name, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows
        for row in rows:
            for field in SCORE_FIELDS:
                if row.get(field) not in (None, "", "nan"):
                    assert decimals(row[field]) <= 2, (name, field, row[field])
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert (summary["score"].round(2) == summary["score"]).all()
    frame = pd.DataFrame({"metric": ["accuracy", "mean of task scores"], "score": [57.599999999999994, 1 / 3],
                          "std": [np.nan, 0.123456], "seeds": [3, 3]})  # fmt: skip
    rounded = round_scores(frame)
    assert rounded["score"].tolist() == [57.6, 0.33] and np.isnan(rounded["std"][0]) and rounded["std"][1] == 0.12
    assert "57.6," in rounded.to_csv(index=False) and frame["score"][0] == 57.599999999999994  # the input is kept


def test_model_column_of_a_grid_with_a_fixed_model(tmp_path):
    for model, expected in (("synthetic", "synthetic"), ("/models/multilingual-e5-small/", "multilingual-e5-small")):
        root = tmp_path / expected
        cell = root / "cells" / "i=none"
        write_cell(cell, {"intermediate": "none", "seed": 1}, {"en": 0.7, "fr": 0.6}, np.random.default_rng(0))
        (cell / "config.yaml").write_text(f"model: {{name_or_path: {model}}}\nseed: 1\nphases: {{target: {{tasks: [xnli]}}}}\n")
        (root / "grid.json").write_text(json.dumps({"name": "fixed", "axes": {}, "cells": ["i=none"]}))
        build_report(root, replicates=50)
        assert set(pd.read_csv(root / "results.csv")["model"]) == {expected}


def test_paper_tables_as_markdown_and_latex(tmp_path, capsys, monkeypatch):
    make_grid(tmp_path, pending=0)
    build_report(tmp_path, replicates=100)
    tables = tmp_path / "tables"
    assert sorted(p.suffix for p in tables.iterdir()) == [".md"] * len(list(tables.iterdir()))
    paper = sorted(tables.glob("table_1_*.md"))[0]
    assert "| snli | 67.17 (+7.33*) |" in paper.read_text()
    from fastxlt.cli import main

    monkeypatch.setenv("COLUMNS", "400")
    assert main(["report", str(tmp_path), "--latex"]) == 0
    out = capsys.readouterr().out
    tex = sorted(tables.glob("table_1_*.tex"))[0]
    assert f"table: {tex}" in out
    text = tex.read_text()
    assert r"\begin{tabular}{l" in text and r"\toprule" in text and r"\bottomrule" in text
    assert r"snli & 67.17 (+7.33*) \\" in text and r"\caption{model=me5-small, target\_size=250}" in text
    languages = sorted(tables.glob("languages_*.tex"))[0].read_text()
    assert r"$\pm$" in languages and r"$\Delta$" in languages and "±" not in languages
    assert f"[`tables/{paper.name}`]" in (tmp_path / "report.md").read_text()


def test_latex_escaping():
    assert escape("snli_en & 50% {x} #1 $ ~ ^ \\") == r"snli\_en \& 50\% \{x\} \#1 \$ \textasciitilde{} \textasciicircum{} \textbackslash{}"
    frame = pd.DataFrame({"a b": ["1.00"]}, index=pd.Index(["r_1"], name="setting"))
    assert to_latex(frame).splitlines()[5:8] == [r"setting & a b \\", r"\midrule", r"r\_1 & 1.00 \\"]


def test_headline_rows_are_chosen_per_task():
    """A task evaluated with English reports its non-English average; a task without one keeps its plain
    average, even when another task in the same summary has a non-English average."""
    from fastxlt.reports.compare import AVERAGE, NON_ENGLISH, headline_language, headline_rows

    summary = pd.DataFrame({
        "task": ["xnli", "xnli", "xnli", "xcopa", "xcopa"],
        "language": ["en", AVERAGE, NON_ENGLISH, "et", AVERAGE],
        "score": [80.0, 70.0, 65.0, 55.0, 55.0],
    })
    chosen = headline_rows(summary)
    assert list(zip(chosen["task"], chosen["language"])) == [("xnli", NON_ENGLISH), ("xcopa", AVERAGE)]
    assert headline_language(summary[summary["task"] == "xcopa"]["language"]) == AVERAGE
