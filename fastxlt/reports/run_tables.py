"""Readable tables of results: one row per language, one column per arm (model variant), built from
the results alone (``results.json`` of a run directory, or the dicts ``evaluate_task`` returns).
"""

from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

from fastxlt.tasks.aggregate import task_score


def language_table(task_results: Mapping[str, Mapping[str, Any]], title: str) -> Table:
    """``task_results``: arm name -> the dict ``evaluate_task`` returned for one task."""
    arms = list(task_results)
    first = next(iter(task_results.values()))
    metric = first["metric"]
    table = Table(title=title, title_justify="left")
    table.add_column("language")
    for arm in arms:
        table.add_column(arm, justify="right")
    if len(arms) == 2:
        table.add_column("delta", justify="right")
    languages = list(first["languages"])
    for language in languages:
        values = [task_score(metric, task_results[arm]["languages"][language]) for arm in arms]
        table.add_row(language, *_cells(values))
    table.add_section()
    averages = [task_results[arm]["score"] for arm in arms]
    table.add_row("average", *_cells(averages), style="bold")
    zero_shot = [language for language in languages if language != "en"]
    if zero_shot and len(zero_shot) < len(languages):
        means = [
            sum(task_score(metric, task_results[arm]["languages"][lang]) for lang in zero_shot) / len(zero_shot)
            for arm in arms
        ]
        table.add_row("average (non-English)", *_cells(means))
    return table


def _cells(values: list[float]) -> list[str]:
    cells = [f"{value:.2f}" for value in values]
    if len(values) == 2:
        cells.append(f"{values[1] - values[0]:+.2f}")
    return cells


def print_results(results: Mapping[str, Any], console: Console | None = None) -> None:
    """Print every task's per-language table and the benchmark score of each arm."""
    console = console or Console()
    arms = results["arms"]
    tasks = sorted({task for arm in arms.values() for task in arm["tasks"]})
    for task in tasks:
        per_arm = {name: arm["tasks"][task] for name, arm in arms.items() if task in arm["tasks"]}
        split = next(iter(per_arm.values()))["split"]
        console.print(language_table(per_arm, f"{task} ({split}, zero-shot from English; metric: {next(iter(per_arm.values()))['metric']})"))
    if len(tasks) > 1:
        for name, arm in arms.items():
            console.print(f"{name}: benchmark score (mean of task scores) = {arm['benchmark_score']:.2f}")
