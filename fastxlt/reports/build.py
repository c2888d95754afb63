"""``build_report(run_dir)``: results.csv, report.md and figures/*.png from a grid or run directory alone.

Nothing is trained or evaluated: every number comes from the files the runs wrote (results.json per
cell, per-example scores per language for the bootstrap). Pending cells are counted, not waited for; a
figure whose axis has a single value is skipped with a line in report.md saying why.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

import fastxlt.reports.contrast as contrast
import fastxlt.reports.figures as figures
import fastxlt.reports.robustness as robustness
import fastxlt.reports.tables as tables
from fastxlt.reports.collect import Collection, collect, results_frame
from fastxlt.reports.compare import AVERAGE, NON_ENGLISH, XTREME, DeltaCache, summarise
from fastxlt.reports.curves import phase_directories, read_curves
from fastxlt.reports.latex import to_latex
from fastxlt.reports.resources import SOURCE
from fastxlt.reports.rounding import round_scores
from fastxlt.reports.stats import CONFIDENCE, DEFAULT_REPLICATES, DEFAULT_SEED
from fastxlt.utils.io import write_text_atomic
from fastxlt.utils.run_layout import REPORT_FILENAME, RESULTS_CSV, SUMMARY_CSV

TABLES_DIRNAME = "tables"
CONCLUSION_HEADING = "\n## What it shows"
CSV_COLUMNS = ("model", "intermediate", "intermediate_languages", "target", "target_size", "snapshot", "seed",
               "task", "language", "score", "metric", "examples", "majority_share", "steps", "dev_score", "cell_id",
               "arm")  # fmt: skip


def build_report(run_dir: str | Path, *, replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED,
                 latex: bool = False, groups: dict[str, list[str]] | None = None,
                 baseline: tuple[str, str] | None = None, contrasts: list[tuple[str, str, str]] | None = None) -> Path:
    """Write ``results.csv``, ``report.md``, ``tables/`` (Markdown; LaTeX too with ``latex``) and ``figures/``
    into ``run_dir``; returns report.md's path. ``groups`` (name -> languages) adds each group's average and its
    difference from the other non-English languages to the summary, ``baseline`` (axis, value) sets the cells
    that deltas are taken against (``fastxlt.reports.compare``), and each of ``contrasts`` (axis, first, second)
    adds the first value's gain minus the second's to ``summary_contrast.csv`` (``fastxlt.reports.contrast``)."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    collection = collect(run_dir)
    frame = results_frame(collection)
    write_csv(frame, run_dir / RESULTS_CSV)
    lines = _header(collection, frame, replicates, seed)
    if frame.empty:
        lines.append("No cell is done yet: nothing to tabulate.")
    else:
        contrast.check_contrasts(collection, frame, contrasts or [])  # a wrong --contrast fails before any work
        bootstraps = DeltaCache()  # the contrasts below reuse the summary's bootstraps
        summary, lay = summarise(collection, frame, replicates=replicates, seed=seed, groups=groups, baseline=baseline,
                                 cache=bootstraps)  # fmt: skip
        write_text_atomic(run_dir / SUMMARY_CSV, round_scores(summary).to_csv(index=False))
        lines += [CONCLUSION_HEADING, "", *(f"- {sentence}" for sentence in tables.conclusions(summary, lay))]
        if contrasts:
            found = contrast.contrasts(collection, frame, contrasts, groups=groups, baseline=baseline,
                                       replicates=replicates, seed=seed, cache=bootstraps)
            write_text_atomic(run_dir / contrast.CONTRAST_CSV, round_scores(found).to_csv(index=False))
            lines += _contrast_lines(found, contrasts)
        lines += _body(summary, lay, run_dir, latex=latex)
        lines += robustness.section(collection, run_dir, replicates=replicates, seed=seed)
    lines.append(f"\n_Built from the run directory alone in {time.perf_counter() - started:.1f} s._")
    return write_text_atomic(run_dir / REPORT_FILENAME, "\n".join(lines) + "\n")


def conclusion_lines(report: Path) -> list[str]:
    """The sentences of report.md's conclusion section (what ``fastxlt run`` prints after a grid)."""
    text = Path(report).read_text(encoding="utf-8")
    if CONCLUSION_HEADING not in text:
        return []
    section = text.split(CONCLUSION_HEADING, 1)[1].split("\n## ", 1)[0]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The tidy table, known columns first, then any further axes."""
    if frame.empty:
        write_text_atomic(path, ",".join(CSV_COLUMNS) + "\n")
        return path
    ordered = [c for c in CSV_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in CSV_COLUMNS]
    return write_text_atomic(path, round_scores(frame[ordered]).to_csv(index=False))


def _header(collection: Collection, frame: pd.DataFrame, replicates: int, seed: int) -> list[str]:
    done = len({cell.cell_id for cell in collection.cells})
    lines = [f"# Report: {collection.name}", ""]
    if collection.kind == "grid":
        lines.append(f"Cells: {done} done, {len(collection.pending)} pending (of {done + len(collection.pending)}).")
        if collection.pending:
            lines.append(f"Pending cells are left out of every table: {', '.join(collection.pending[:20])}"
                         + (" ..." if len(collection.pending) > 20 else ""))  # fmt: skip
    else:
        lines.append(f"A single run with {done} arms ({', '.join(cell.arm for cell in collection.cells)}).")
    lines += [
        "",
        f"Scores: XTREME task scores in percent (span QA: (F1 + EM) / 2); a task's score is the mean over its "
        f"languages. Deltas are against the no-intermediate cell with the same other axes and seed, averaged "
        f"over seeds; `*` marks a delta whose {CONFIDENCE:.0%} paired-bootstrap interval (test examples resampled "
        f"per language, {replicates} replicates, seed {seed}) excludes 0; `?` marks a delta without an interval "
        "(evaluation files without per-example scores). `±` is the standard deviation over seeds.",
        "",
        "Files: `results.csv` (one row per cell x task x language), `summary.csv` (means, deltas, intervals), "
        "`figures/`.",
    ]
    return lines


def _contrast_lines(found: pd.DataFrame, specs: list[tuple[str, str, str]]) -> list[str]:
    """Report.md's contrast section: each task's headline average per contrast, context and setting."""
    lines = ["", "## Contrasts", "", f"Each gain (delta vs the baseline) at one value minus the gain at another, with "
             f"the {CONFIDENCE:.0%} paired-bootstrap interval of that difference; every language in "
             f"`{contrast.CONTRAST_CSV}`.", ""]  # fmt: skip
    if found.empty:
        return lines + ["No setting has cells at both values of " + ", ".join(f"{a}={b},{c}" for a, b, c in specs) + "."]
    headline = found[found["language"].isin([AVERAGE, NON_ENGLISH])]
    headline = headline.assign(difference=[f"{row.delta:+.2f}{'*' if row.significant else ''} [{row.low:+.2f}, {row.high:+.2f}]"
                                           for row in headline.itertuples()])  # fmt: skip
    columns = [c for c in headline.columns if c not in ("metric", "score", "std", "delta", "low", "high", "significant", "difference")]
    return lines + [tables.to_markdown(headline.set_index(columns[0])[columns[1:] + ["difference"]])]


def _figure_lines(results: list, run_dir: Path) -> list[str]:
    lines = []
    for result in results:
        if isinstance(result, figures.Skipped):
            lines.append(f"- skipped {result.figure}: {result.reason}.")
        else:
            lines.append(f"- ![{result.stem}]({result.relative_to(run_dir)})")
    return lines


def _learning_curves(run_dir: Path, figure_dir: Path) -> list:
    """A learning-curve figure per finished phase (a grid's shared phases once each)."""
    return [figures.learning_curve(read_curves(name, directory), figure_dir / f"curve_{figures.slug(name)}.png")
            for name, directory in phase_directories(run_dir).items()]  # fmt: skip


def _table_files(frame: pd.DataFrame, title: str, stem: str, run_dir: Path, *, latex: bool) -> list[str]:
    """The table as ``tables/<stem>.md`` (and ``.tex``), for papers and pages; returns the report's link line."""
    directory = run_dir / TABLES_DIRNAME
    paths = [write_text_atomic(directory / f"{stem}.md", f"**{title}**\n\n{tables.to_markdown(frame)}\n")]
    if latex:
        paths.append(write_text_atomic(directory / f"{stem}.tex", to_latex(frame, caption=title)))
    return ["", "Files: " + ", ".join(f"[`{path.relative_to(run_dir)}`]({path.relative_to(run_dir)})" for path in paths)]


def _body(summary: pd.DataFrame, lay, run_dir: Path, *, latex: bool = False) -> list[str]:
    lines: list[str] = []
    figure_dir = run_dir / "figures"
    parts = tables.contexts(summary, lay)
    if len(parts) > 1:
        summary["context"] = figures.context_names(summary, lay)
    oracle = tables.oracle_snapshots(summary, lay)
    for index, (values, part) in enumerate(parts):
        title = tables.context_title(values)
        paper = tables.paper_table(part, lay, oracle)
        lines += ["", f"## Paper-style table: {title}", "", tables.to_markdown(paper)]
        lines += _table_files(paper, title, f"table_{index + 1}_{figures.slug(title)}", run_dir, latex=latex)
        path = figures.paper_table_figure(paper, title, figure_dir / f"table_{index + 1}_{figures.slug(title)}.png")
        lines += ["", f"![paper-style table]({path.relative_to(run_dir)})"]
    if oracle:
        lines += ["", "Snapshots: 'dev-selected' is the snapshot chosen on English dev (value `best`); 'oracle' is "
                  "the snapshot with the highest mean non-English score, which needs target-language labels and is "
                  "an upper bound, not a selection method."]  # fmt: skip
    for values, part in parts:
        for task in [t for t in dict.fromkeys(part["task"]) if t != XTREME]:
            title = f"{task} per language: {tables.context_title(values)}"
            table = tables.language_table(part, task)
            lines += ["", f"## {title}", "", tables.to_markdown(table)]
            lines += _table_files(table, title, f"languages_{figures.slug(title)}", run_dir, latex=latex)
    lines += ["", "## Figures", ""]
    tasks = [t for t in dict.fromkeys(summary["task"]) if t != XTREME]
    results = [figures.delta_heatmap(summary, task, figure_dir / f"heatmap_{figures.slug(task)}.png") for task in tasks]
    results += [
        figures.gain_vs_size(summary, lay, figure_dir / "gain_vs_target_size.png"),
        figures.score_vs_steps(summary, lay, figure_dir / "score_vs_intermediate_steps.png"),
        figures.model_curves(summary, lay, figure_dir / "model_curves.png"),
        figures.mono_vs_multi(summary, lay, figure_dir / "mono_vs_multilingual.png"),
    ]
    lines += _figure_lines(results, run_dir)
    lines += ["", "## Learning curves", "", "One figure per trained phase: TensorBoard scalars where "
              "`logging.report_to` wrote them, else the dev history in `phase.json`.", ""]  # fmt: skip
    lines += _figure_lines(_learning_curves(run_dir, figure_dir), run_dir)
    lines += ["", f"Resource groups of languages (low = class 0-2, mid = 3, high = 4-5): {SOURCE}."]
    return lines
