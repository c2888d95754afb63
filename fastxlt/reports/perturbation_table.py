"""The perturbation table printed by ``fastxlt-eval --perturb``: per language, clean, perturbed and drop for
each arm, task and perturbation, with the attack success rate for PGD and a line per unavailable language."""

from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console
from rich.table import Table


def print_perturbations(results: Mapping[str, Any], console: Console | None = None) -> None:
    """One table per (arm, task, perturbation) found in ``results`` (the dict ``evaluate_models`` returns)."""
    console = console or Console()
    for arm, arm_results in results["arms"].items():
        for task, task_results in arm_results["tasks"].items():
            for key, perturbation in task_results.get("perturbations", {}).items():
                console.print(_table(f"{task} / {arm}: {key} (seed {perturbation['seed']})", perturbation))
                for language, reason in perturbation.get("unavailable", {}).items():
                    console.print(f"  {language}: not evaluated: {reason}")


def _table(title: str, perturbation: Mapping[str, Any]) -> Table:
    languages = perturbation["languages"]
    attack = any("success_rate" in r for r in languages.values())
    table = Table(title=title, title_justify="left")
    for column in ("language", "clean", "perturbed", "drop") + (("success rate",) if attack else ()):
        table.add_column(column, justify="left" if column == "language" else "right")
    for language, result in languages.items():
        cells = [_cell(result.get(k)) for k in ("clean", "perturbed", "drop")]
        if attack:
            cells.append(_cell(None if result.get("success_rate") is None else 100 * result["success_rate"]))
        table.add_row(language, *cells)
    if perturbation.get("average_drop") is not None:
        table.add_section()
        table.add_row("average drop", "", "", _cell(perturbation["average_drop"]), *([""] if attack else []), style="bold")
    return table


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
