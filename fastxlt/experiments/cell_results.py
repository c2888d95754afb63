"""A grid cell's ``results.json``: read it, or tell that it is absent or damaged.

A cell is done when its results file holds results. A truncated or otherwise damaged file (a disk that
filled up, a copy cut short) must not count as done: ``fastxlt status`` would list the cell as done,
``fastxlt report`` would crash on it and no re-run would ever repair it. Treated as not done, the next
``fastxlt run`` re-scores the cell from its stored phases and per-language files (nothing retrains), and
every command names the damaged cell in one line on stderr (once per command: ``start_command``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fastxlt.utils.io import read_json
from fastxlt.utils.run_layout import RESULTS_FILENAME

_named: set[tuple[str, int]] = set()  # (path, mtime_ns) already reported by this command


def start_command() -> None:
    """A new command names each damaged cell again (one command reads a cell several times: table, report)."""
    _named.clear()


def is_results_record(results: object, needs: tuple[str, ...] = ("metric", "languages")) -> bool:
    """The shape tables read: {"arms": {arm: {"tasks": {task: {metric, languages, ...}}}}}, at least one arm;
    ``needs`` names the keys every task must have."""
    arms = results.get("arms") if isinstance(results, dict) else None
    if not isinstance(arms, dict) or not arms:
        return False
    tables = [arm.get("tasks") if isinstance(arm, dict) else None for arm in arms.values()]
    return all(
        isinstance(table, dict)
        and all(isinstance(task, dict) and set(needs) <= task.keys() for task in table.values())
        for table in tables
    )  # fmt: skip


def read_cell_results(cell_dir: str | Path) -> dict[str, Any] | None:
    """The cell's results, or None when it has none yet or its file is damaged (then named on stderr)."""
    path = Path(cell_dir) / RESULTS_FILENAME
    if not path.is_file():
        return None
    try:
        results = read_json(path)
    except (OSError, ValueError):  # ValueError: not JSON (truncated), or not UTF-8
        results = None
    if is_results_record(results):
        return results
    _name_damaged(path)
    return None


def _name_damaged(path: Path) -> None:
    try:
        identity = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return
    if identity in _named:
        return
    _named.add(identity)
    print(f"fastxlt: cell {path.parent.name}: {path} is damaged; the cell counts as not done and "
          "`fastxlt run` re-scores it (its trained phases are reused)", file=sys.stderr)
