"""No file the project runs or imports outside the package may shadow an installed or stdlib module.

Why: ``python some_folder/x.py`` and pytest's default import mode put the script's own folder first on
``sys.path``. A file there named like a distribution is then imported in its place by any library that
imports that distribution: ``benchmarks/kernels.py`` broke every benchmark the day transformers 5.25
started importing the ``kernels`` package (issue 20). This test lists every module name that such a
folder defines and checks it against everything importable from the environment and the stdlib.
"""

from __future__ import annotations

import importlib.metadata
import pkgutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT_FOLDERS = ("benchmarks", "tests", "tools", "scripts")


def module_names_under(folder: Path) -> dict[str, Path]:
    """Every importable name a folder defines: its ``.py`` files' stems and its sub-packages, at any depth."""
    names: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        names.setdefault(path.stem, path)
        if path.name == "__init__.py":
            names.setdefault(path.parent.name, path.parent)
    names.pop("__init__", None)
    return names


def installed_top_level_names() -> set[str]:
    """Top-level modules of the stdlib and of every installed distribution, outside this repository."""
    repo_paths = {str(REPO), ""} | {str(REPO / folder) for folder in SCRIPT_FOLDERS}
    outside = [entry for entry in sys.path if entry not in repo_paths and not entry.startswith(str(REPO) + "/")]
    found = {module.name for module in pkgutil.iter_modules(outside)}
    found |= set(importlib.metadata.packages_distributions())
    found |= set(sys.stdlib_module_names)
    return found - {"fastxlt"}


def collisions(root: Path, installed: set[str]) -> list[str]:
    """``folder/file -> name`` for every module name under the script folders that is also installed."""
    found = []
    for folder in SCRIPT_FOLDERS:
        if (root / folder).is_dir():
            for name, path in module_names_under(root / folder).items():
                if name in installed:
                    found.append(f"{path.relative_to(root)} -> {name}")
    return found


def test_no_script_or_test_module_shadows_an_installed_module():
    found = collisions(REPO, installed_top_level_names())
    assert not found, f"rename these files; each shadows an installed or stdlib module: {found}"


def test_the_check_finds_the_old_benchmark_layout(tmp_path):
    """The layout before issue 20 (``benchmarks/kernels.py`` beside ``benchmarks/_results.py``) is caught, and
    so are a stdlib name and a nested package, against a hand-written set of installed names."""
    (tmp_path / "benchmarks" / "nested" / "json").mkdir(parents=True)
    for name in ("kernels.py", "_results.py", "train_throughput.py", "nested/__init__.py", "nested/json/__init__.py"):
        (tmp_path / "benchmarks" / name).write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_ok.py").write_text("")
    found = collisions(tmp_path, {"kernels", "json", "torch"})
    assert found == ["benchmarks/kernels.py -> kernels", "benchmarks/nested/json -> json"]


def test_the_installed_names_include_what_transformers_imports():
    """The environment side of the check is real: the stdlib and installed distributions are both seen."""
    installed = installed_top_level_names()
    assert {"json", "os", "torch", "transformers", "numpy"} <= installed
    assert "benchmarks" not in installed and "fastxlt" not in installed
