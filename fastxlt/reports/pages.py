"""Research-answer pages (``docs/results/qN/index.md``) built from committed result tables, never typed by hand.

A question's folder holds what ``fastxlt report`` wrote for its CPU-twin grid -- ``results.csv`` (one row per
cell x task x language), ``summary.csv`` (seed means, paired deltas and their 95% paired-bootstrap intervals),
for question 3 ``robustness.csv`` / ``robustness_drops.csv`` / ``robustness_differences.csv``, and the figures --
plus two files of its own:

- ``run.json``: the command, the machine (CPU model and flags), torch's version and the wall time, written by
  ``python -m fastxlt.reports.pages collect`` when the grid's files are copied in;
- ``answer.md``: the answer in one paragraph, with placeholders for numbers (``{delta:KEY}``, ``{score:KEY}``,
  ``{drop:KEY}``, ``{diff:KEY}``: the table cells, keyed by their row and column labels; ``{share:KEY}``: how
  often the cell's models give their most frequent answer; a wrong key fails the render and lists the known
  ones), so that the prose cannot drift from the tables.

``python -m fastxlt.reports.pages render docs/results`` rewrites every ``index.md``; ``--check`` fails when a
committed page differs from what its files give (the default suite runs it, and re-derives the headline numbers
from ``results.csv`` independently).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastxlt.reports.robustness import DIFFERENCES_CSV, DROPS_CSV
from fastxlt.utils.hardware import cpu_flags
from fastxlt.utils.io import write_text_atomic
from fastxlt.utils.run_layout import RESULTS_CSV, SUMMARY_CSV

RUN_FILE = "run.json"
ANSWER_FILE = "answer.md"
PAGE_FILE = "index.md"
# report.md stays in the run directory: its links to tables/ and per-cell samples do not travel
COPIED = (RESULTS_CSV, SUMMARY_CSV, "robustness.csv", DROPS_CSV, DIFFERENCES_CSV)
FLAG_PATTERN = re.compile(r"^(avx2|avx512\w*|amx\w*|avx_vnni|fma)$")


# ------------------------------------------------------------------------------------------ numbers as text


def signed(value: float) -> str:
    return f"{value:+.2f}"


def interval(low: float, high: float) -> str:
    return "" if np.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"


def delta_text(row: pd.Series) -> str:
    """``+1.23* [+0.40, +2.10]``: the mean paired delta over seeds, its interval, ``*`` when it excludes 0."""
    if pd.isna(row.get("delta")):
        return ""
    star = "*" if not np.isnan(row["low"]) and (row["low"] > 0 or row["high"] < 0) else ""
    return f"{signed(row['delta'])}{star}{interval(row['low'], row['high'])}"


def score_text(row: pd.Series) -> str:
    if pd.isna(row.get("score")):
        return ""
    spread = "" if pd.isna(row.get("std")) else f" ± {row['std']:.2f}"
    return f"{row['score']:.2f}{spread}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def key_of(*parts: Any) -> str:
    """A placeholder name from labels: ``snli [frac-0.2]`` -> ``snli_frac_0_2``."""
    return "_".join(re.sub(r"[^0-9a-zA-Z]+", "_", str(part)).strip("_") for part in parts if str(part) != "")


# ------------------------------------------------------------------------------------------ summary tables


def summary_table(summary: pd.DataFrame, columns: list[tuple[str, str, str]], row_axes: list[str]) -> tuple[str, dict]:
    """Rows: the combinations of ``row_axes`` in file order; per column (title, task, language) the score and
    the delta with its interval. Returns the Markdown table and the headline values by placeholder name."""
    values: dict[str, str] = {}
    rows = []
    for key, part in summary.groupby(row_axes, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        cells = []
        for title, task, language in columns:
            match = part[(part["task"] == task) & (part["language"] == language)]
            if match.empty:
                cells.append("")
                continue
            row = match.iloc[0]
            name = key_of(*key, task, language)
            text, delta = score_text(row), delta_text(row)
            values[f"score:{name}"], values[f"delta:{name}"] = text, delta
            if not pd.isna(row.get("majority_share")):
                values[f"share:{name}"] = f"{row['majority_share']:.1f}%"
            cells.append(f"{text} ({delta})" if text and delta else text or delta)
        rows.append([" / ".join(str(k) for k in key)] + cells)
    return markdown_table([" / ".join(row_axes)] + [title for title, _, _ in columns], rows), values


def drop_text(row: pd.Series) -> str:
    spread = "" if pd.isna(row["std"]) else f" ± {row['std']:.2f}"
    return f"{row['drop']:.2f}{spread}{interval(row['low'], row['high'])}"


def difference_text(row: pd.Series) -> str:
    return delta_text(row.rename({"value": "delta"}))


def task_pivot(frame: pd.DataFrame, column: str, text_of: Callable[[pd.Series], str], prefix: str,
               values: dict[str, str]) -> str:
    """Rows: task and perturbation; columns: the values of ``column`` in file order; cells: ``text_of(row)``,
    also stored in ``values`` as ``prefix:<task>_<perturbation>_<column value>``."""
    headers = list(dict.fromkeys(frame[column]))
    rows = []
    for (task, perturbation), part in frame.groupby(["task", "perturbation"], sort=False):
        cells = []
        for header in headers:
            match = part[part[column] == header]
            text = "" if match.empty else text_of(match.iloc[0])
            if text:
                values[f"{prefix}:{key_of(task, perturbation, header)}"] = text
            cells.append(text)
        rows.append([f"{task}, `{perturbation}`"] + cells)
    return markdown_table(["task, perturbation"] + headers, rows)


def robustness_tables(folder: Path) -> tuple[str, dict]:
    """Drops per setting (language average, mean ± sd over seeds, interval) and adversarial-minus-standard
    differences of drops, per task and perturbation."""
    drops = pd.read_csv(folder / DROPS_CSV)
    differences = pd.read_csv(folder / DIFFERENCES_CSV)
    values: dict[str, str] = {}
    drop_table = task_pivot(drops[drops["language"] == "average"], "setting", drop_text, "drop", values)
    difference_table = task_pivot(differences[differences["language"] == "average"], "comparison", difference_text,
                                  "diff", values)
    text = ("Drop = clean - perturbed score, points, average over the languages a perturbation covers (mean ± "
            "standard deviation over seeds, 95% paired-bootstrap interval over examples):\n\n" + drop_table +
            "\n\nDrop with an adversarial method minus drop with standard intermediate training (same seed and "
            "target; negative = the adversarial model loses less; `*` = the interval excludes 0):\n\n" + difference_table)
    return text, values


# ------------------------------------------------------------------------------------------ the page


def machine_lines(run: dict) -> list[str]:
    machine = run.get("machine", {})
    return [
        f"- Command: `{run['command']}`",
        f"- Machine: {machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores; "
        f"flags {', '.join(machine.get('flags', [])) or 'none of AVX2 / AVX-512 / AMX'}; torch {machine.get('torch', '?')}",
        f"- Wall time: {run['wall_minutes']:.0f} minutes ({run.get('wall_note', 'the grid command alone')})",
        f"- Measured: {run['date']}",
    ]


def render(folder: Path) -> str:
    """The page of one question folder, from its run.json, answer.md and tables."""
    run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    builder = BUILDERS[run["kind"]]
    tables, values = builder(folder, run)
    answer = (folder / ANSWER_FILE).read_text(encoding="utf-8").strip()
    try:
        answer = fill(answer, values)
    except KeyError as error:
        raise SystemExit(f"{folder / ANSWER_FILE}: no number named {error}; known: {', '.join(sorted(values))}") from None
    figures = sorted(p.relative_to(folder) for p in (folder / "figures").glob("*.png")) if (folder / "figures").is_dir() else []
    lines = [f"# {run['title']}", "", "_Generated by `python -m fastxlt.reports.pages render docs/results` from the "
             "files in this folder; do not edit by hand._", "", *machine_lines(run), "", "## Answer", "", answer, "",
             "## Tables", "", run.get("setup", "").strip(), "", tables, ""]  # fmt: skip
    lines += [f"![{figure.stem}]({figure.as_posix()})" for figure in figures]
    lines += ["", "`results.csv` has one row per cell, task and language; `summary.csv` every language's and "
              "average's seed mean, paired delta and interval (what `fastxlt report` tabulates in `report.md`)."]
    return "\n".join(lines).rstrip() + "\n"


PLACEHOLDER = re.compile(r"\{([a-z]+:[0-9A-Za-z_]+)\}")


def fill(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def _summary_builder(folder: Path, run: dict) -> tuple[str, dict]:
    """One table per block of run.json (default: one). A block may name another summary file of the folder
    (``"file": "summary_vs_en.csv"``: the same grid reported against another baseline, ``fastxlt report
    --baseline``); its numbers' keys then start with its ``prefix``, so they cannot collide with the first table's."""
    columns = [tuple(column) for column in run["columns"]]
    tables, values = [], {}
    for block in run.get("blocks", [{}]):
        part = pd.read_csv(folder / block.get("file", SUMMARY_CSV), keep_default_na=False, na_values=[""])
        for axis, value in block.get("where", {}).items():
            part = part[part[axis].astype(str) == str(value)]
        table, found = summary_table(part, [tuple(c) for c in block.get("columns", columns)], run["rows"])
        tables.append((f"**{block['title']}**\n\n" if "title" in block else "") + table)
        prefix = block.get("prefix", "")
        values.update({_prefixed(name, prefix): text for name, text in found.items()})
    return "\n\n".join(tables), values


def _prefixed(name: str, prefix: str) -> str:
    """``delta:de_xnli_average`` with prefix ``vs_en`` -> ``delta:vs_en_de_xnli_average``."""
    if not prefix:
        return name
    kind, key = name.split(":", 1)
    return f"{kind}:{prefix}_{key}"


def _robustness_builder(folder: Path, run: dict) -> tuple[str, dict]:
    """The clean scores (summary.csv, when run.json names columns), then the drops and their differences."""
    text, values = robustness_tables(folder)
    if "columns" not in run:
        return text, values
    clean, clean_values = _summary_builder(folder, run)
    return f"Clean zero-shot scores (delta vs no intermediate training):\n\n{clean}\n\n{text}", {**clean_values, **values}


BUILDERS: dict[str, Callable[[Path, dict], tuple[str, dict]]] = {
    "summary": _summary_builder,
    "robustness": _robustness_builder,
}


# ------------------------------------------------------------------------------------------ collecting a run


def machine() -> dict[str, Any]:
    """The CPU model, core count and the vector flags that decide the training precision, and torch's version."""
    import os

    import torch

    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    flags = sorted(flag for flag in cpu_flags() if FLAG_PATTERN.match(flag))
    return {"cpu": cpu, "cores": os.cpu_count(), "flags": flags, "torch": torch.__version__}


def collect(run_dir: Path, folder: Path, *, command: str, wall_minutes: float, date: str, wall_note: str | None = None) -> Path:
    """Copy a grid's report files into a question folder and record run.json's machine part (the rest --
    title, kind, rows, columns, setup -- is the question's own and kept when run.json exists)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*COPIED, *(p.name for p in sorted(run_dir.glob("summary_*.csv")))]:  # + other baselines' summaries
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, folder / name)
    if (run_dir / "figures").is_dir():  # the answers' figures; per-phase learning curves stay in the run directory
        shutil.rmtree(folder / "figures", ignore_errors=True)
        shutil.copytree(run_dir / "figures", folder / "figures", ignore=shutil.ignore_patterns("curve_*"))
    path = folder / RUN_FILE
    run = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    run.update(command=command, wall_minutes=wall_minutes, date=date, machine=machine())
    if wall_note:
        run["wall_note"] = wall_note
    write_text_atomic(path, json.dumps(run, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastxlt.reports.pages", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render_parser = commands.add_parser("render", help="rewrite docs/results/q*/index.md from their files")
    render_parser.add_argument("root", type=Path)
    render_parser.add_argument("--check", action="store_true", help="fail when a committed page is not current")
    collect_parser = commands.add_parser("collect", help="copy a grid's report files into a question folder")
    collect_parser.add_argument("run_dir", type=Path)
    collect_parser.add_argument("folder", type=Path)
    collect_parser.add_argument("--command", required=True, dest="grid_command")
    collect_parser.add_argument("--wall-minutes", type=float, required=True)
    collect_parser.add_argument("--date", required=True)
    collect_parser.add_argument("--wall-note", help="what the wall time includes, when not the grid command alone")
    args = parser.parse_args(argv)
    if args.command == "collect":
        print(collect(args.run_dir, args.folder, command=args.grid_command, wall_minutes=args.wall_minutes, date=args.date,
                      wall_note=args.wall_note))
        return 0
    stale = []
    for folder in sorted(p.parent for p in args.root.glob(f"*/{RUN_FILE}")):
        if not (folder / RESULTS_CSV).is_file():
            print(f"{folder}: no results.csv yet (collect the grid's report first); skipped", file=sys.stderr)
            continue
        page = render(folder)
        if args.check:
            if not (folder / PAGE_FILE).is_file() or (folder / PAGE_FILE).read_text(encoding="utf-8") != page:
                stale.append(str(folder / PAGE_FILE))
            continue
        write_text_atomic(folder / PAGE_FILE, page)
        print(folder / PAGE_FILE)
    if stale:
        print(f"not current (run: python -m fastxlt.reports.pages render {args.root}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


__all__ = ["collect", "fill", "render", "summary_table"]

if __name__ == "__main__":
    sys.exit(main())
