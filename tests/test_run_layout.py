"""One module owns the run-directory names (``fastxlt/utils/run_layout.py``): no other module spells them."""

from __future__ import annotations

import ast
from pathlib import Path

from fastxlt.utils import run_layout

PACKAGE = Path(__file__).resolve().parents[1] / "fastxlt"
# The file names ("cells" is also the key of grid.json's cell list, so the folder name is left out of the check).
NAMES = {run_layout.CONFIG_FILENAME, run_layout.RESULTS_FILENAME, run_layout.GRID_FILENAME, run_layout.CELL_FILENAME,
         run_layout.PHASE_DONE, run_layout.REPORT_FILENAME, run_layout.RESULTS_CSV, run_layout.SUMMARY_CSV}


def spelled_names(source: str) -> list[tuple[int, str]]:
    """(line, name) for every string constant that is exactly one of the layout's names (messages that mention a
    name inside longer text are fine: they read it, they do not build a path from it)."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAMES]


def test_no_module_but_run_layout_spells_a_run_directory_name():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} {name!r}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "run_layout.py"
             for line, name in spelled_names(path.read_text(encoding="utf-8"))]
    assert found == [], f"use fastxlt.utils.run_layout instead: {found}"


def test_the_check_sees_a_literal_path_name():
    assert spelled_names('path = run_dir / "grid.json"\nmessage = "no grid.json here"') == [(1, "grid.json")]
    assert run_layout.cell_dir("runs/g", "a=1") == Path("runs/g/cells/a=1")
