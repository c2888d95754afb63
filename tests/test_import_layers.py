"""fastxlt's imports point down only (docs/design.md, "Layers"): no module import cycle, no import from a
higher layer or from a room of the same layer that design.md does not name, and imports inside functions
only where a command line must start fast.

Why a test: a function-level import hides a cycle from Python (it runs late), not from the design; only
a check that reads every import, module-level and function-level alike, keeps the layers true. The
checker works on any package directory, so the last tests plant a cycle and an upward import in a tiny
tree and show it catches both (it cannot pass by finding nothing).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Module prefix -> layer (docs/design.md, "Layers"; keep the two in step). The longest prefix names the
# module's room; a module imports its own room in any order without cycles, any room of a lower layer,
# and a room of its own layer only where SAME_LAYER says so.
LAYERS: dict[str, int] = {
    "fastxlt": 1,  # the package itself: the version
    "fastxlt.errors": 1,
    "fastxlt.utils": 1,
    "fastxlt.config": 2,
    "fastxlt.tasks.base": 3,  # the registry: task records, families
    "fastxlt.tasks.languages": 3,
    "fastxlt.tasks.readers": 3,  # data sources: file layouts
    "fastxlt.tasks": 4,  # one module per family, features, metrics
    "fastxlt.models": 4,
    "fastxlt.kernels": 4,
    "fastxlt.training": 5,
    "fastxlt.inference": 5,  # batching, precision, predict, embeddings, result files
    "fastxlt.evaluation": 6,
    "fastxlt.retrieval": 6,
    "fastxlt.robustness": 6,
    "fastxlt.export": 6,
    "fastxlt.experiments": 7,
    "fastxlt.synthetic": 7,
    "fastxlt.reports": 8,
    "fastxlt.plugins": 9,  # the plugin list: every module that registers tasks
    "fastxlt.plan": 9,
    "fastxlt.cli": 9,  # every command line: fastxlt, fastxlt-eval, train.py's options, --retrieval, --suite
    "fastxlt.train": 9,
}
# (importer room, imported room) pairs allowed within one layer, each with its reason in docs/design.md.
SAME_LAYER: set[tuple[str, str]] = {
    ("fastxlt.utils", "fastxlt.errors"),  # utilities raise the package's errors
    ("fastxlt.models", "fastxlt.tasks"),  # make_head builds the head a family registered
    ("fastxlt.models", "fastxlt.kernels"),  # the masked-LM head's fused linear + cross-entropy
    ("fastxlt.training", "fastxlt.inference"),  # English dev evaluation during training
    ("fastxlt.retrieval", "fastxlt.export"),  # the ONNX Runtime backend of sentence embeddings
    ("fastxlt.evaluation", "fastxlt.export"),  # the ONNX Runtime backend of evaluation
    ("fastxlt.evaluation", "fastxlt.robustness"),  # the perturbation pass after the clean one
    ("fastxlt.experiments", "fastxlt.synthetic"),  # the embedded default world and model
    ("fastxlt.plugins", "fastxlt.synthetic"),
    ("fastxlt.cli", "fastxlt.plan"),
    ("fastxlt.train", "fastxlt.cli"),
}
# Modules whose imports may sit inside functions: the command lines, whose --help must not load torch; and the
# synthetic package, whose source files are hashed into the phase-store key of every synthetic phase
# (``fastxlt.experiments.phases.synthetic_source_digest``), so that a refactoring there would orphan
# every stored phase (its lazy imports hide no cycle: ``world`` imports the ``generate`` submodule only).
LAZY_IMPORTERS = {"fastxlt.cli", "fastxlt.train", "fastxlt.synthetic"}
MAX_FUNCTION_IMPORTS = 31  # a budget: one per command handler that needs torch (31 with `fastxlt rekey`)
# The compiled C++ extension: no Python source, imports nothing back (an optional build).
EXTENSIONS = {"fastxlt._C"}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under ``root/package``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path], package: str) -> list[Import]:
    """Every import of a module of ``package`` in one file, at module level and inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    def add(target: str, node: ast.stmt, in_function: bool) -> None:
        if target in EXTENSIONS or not (target == package or target.startswith(package + ".")):
            return
        resolved = resolve(target)
        if resolved is not None and resolved != name:
            found.append(Import(name, resolved, node.lineno, in_function))

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, in_function)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # a submodule by name, else a name defined in the module
                submodule = f"{base}.{alias.name}"
                add(submodule if submodule in modules or submodule in EXTENSIONS else base, node, in_function)
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def import_graph(root: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    modules = module_files(root, package)
    return modules, [imp for name, path in modules.items() for imp in imports_of(name, path, modules, package)]


def cycles(modules: dict[str, Path], imports: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports:
        edges[imp.importer].add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def room_of(module: str, layers: dict[str, int]) -> str:
    """The longest prefix of ``module`` that ``layers`` names (a module with none is an error)."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        if prefix in layers:
            return prefix
    raise KeyError(f"module '{module}' is in no layer; add its prefix to LAYERS (and to docs/design.md)")


def layer_violations(imports: list[Import], layers: dict[str, int], same_layer: set[tuple[str, str]]) -> list[str]:
    """Imports that point up a layer, or across rooms of one layer without a SAME_LAYER entry."""
    bad = []
    for imp in imports:
        here, there = room_of(imp.importer, layers), room_of(imp.imported, layers)
        if here == there or layers[there] < layers[here]:
            continue
        if layers[there] == layers[here] and (here, there) in same_layer:
            continue
        bad.append(f"{imp.importer}:{imp.line} (layer {layers[here]}, {here}) imports {imp.imported} "
                   f"(layer {layers[there]}, {there})")
    return bad


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT, "fastxlt")


def test_no_import_cycle(graph):
    modules, imports = graph
    assert len(modules) > 100 and len(imports) > 300  # the whole package was read
    assert cycles(modules, imports) == []


def test_every_import_points_down(graph):
    modules, imports = graph
    for name in modules:
        room_of(name, LAYERS)
    assert layer_violations(imports, LAYERS, SAME_LAYER) == []


def test_same_layer_exceptions_are_used(graph):
    """An exception nobody needs any more is removed, so the list stays the true picture."""
    _, imports = graph
    used = {(room_of(i.importer, LAYERS), room_of(i.imported, LAYERS)) for i in imports}
    assert SAME_LAYER - used == set()


def test_function_level_imports_only_where_a_command_line_starts(graph):
    _, imports = graph
    statements = sorted({(imp.importer, imp.line) for imp in imports if imp.in_function})
    assert [f"{name}:{line}" for name, line in statements if name not in LAZY_IMPORTERS] == []
    assert len(statements) <= MAX_FUNCTION_IMPORTS


def test_design_md_lists_every_layer_prefix():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    missing = [prefix for prefix in LAYERS if f"`{prefix}`" not in design]
    assert missing == []


# ------------------------------------------------------------------ the checker catches what it should


def _tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import helper\n",
        "pkg/b.py": "def helper():\n    from pkg import a\n    return a\n",
        "pkg/c.py": "from . import a\n",
    })  # fmt: skip
    modules, imports = import_graph(tmp_path, "pkg")
    assert cycles(modules, imports) == [["pkg.a", "pkg.b"]]
    assert [(i.importer, i.imported) for i in imports if i.in_function] == [("pkg.b", "pkg.a")]
    assert ("pkg.c", "pkg.a") in {(i.importer, i.imported) for i in imports}  # relative imports resolve


def test_checker_finds_an_upward_and_an_unlisted_sideways_import(tmp_path):
    _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "import os\n\ndef f():\n    import pkg.high.top\n",
        "pkg/high/__init__.py": "",
        "pkg/high/top.py": "from pkg.low import f\nfrom pkg.side import g\n",
        "pkg/side.py": "def g():\n    pass\n",
    })  # fmt: skip
    modules, imports = import_graph(tmp_path, "pkg")
    layers = {"pkg": 1, "pkg.low": 1, "pkg.high": 2, "pkg.side": 2}
    assert cycles(modules, imports) == [["pkg.high.top", "pkg.low"]]
    upward = "pkg.low:4 (layer 1, pkg.low) imports pkg.high.top (layer 2, pkg.high)"
    sideways = "pkg.high.top:2 (layer 2, pkg.high) imports pkg.side (layer 2, pkg.side)"
    assert sorted(layer_violations(imports, layers, set())) == sorted([upward, sideways])
    assert layer_violations(imports, layers, {("pkg.high", "pkg.side")}) == [upward]
    with pytest.raises(KeyError, match="in no layer"):
        room_of("pkg.other", {"pkg.low": 1})
