"""The manifest beside an exported graph: what it was exported from, how, and how faithful it is.

"Exported once, reused for every language": ``export_onnx`` reuses a graph whose manifest names the
same source checkpoint (fingerprint), head and precision, and re-exports otherwise; ``OnnxModel``
refuses a graph whose manifest names another checkpoint. The manifest is written last, so a graph
without one (an interrupted export) is never trusted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastxlt.utils.io import read_json, write_json_atomic

MANIFEST_FILENAME = "manifest.json"
GRAPH_FILENAME = "model.onnx"
FORMAT_VERSION = 1
_HASHED_WHOLE = {".json", ".pt", ".txt", ".model"}  # small files: hash the bytes
_SKIPPED_DIRS = {"onnx", "eval", "eval-cli", "checkpoints"}  # our own outputs live beside the model


def source_fingerprint(paths: list[Path] | Path | str) -> str:
    """A cheap identity of checkpoint files: small files by content, weight files by name, size and mtime.

    Hashing gigabytes of weights at every evaluation would cost seconds; a re-trained checkpoint
    always rewrites its weight files (new mtime) and its ``heads.pt`` (new content).
    """
    if isinstance(paths, (str, Path)) and not Path(paths).exists():
        return f"hub:{paths}"  # a hub name: the name is all we know
    digest = hashlib.sha256()
    roots = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not _skipped(p, root))
        for path in files:
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}".encode())
            if path.suffix in _HASHED_WHOLE and stat.st_size < 64 << 20:
                digest.update(path.read_bytes())
            else:
                digest.update(str(stat.st_mtime_ns).encode())
    return digest.hexdigest()[:32]


def _skipped(path: Path, root: Path) -> bool:
    return any(part in _SKIPPED_DIRS for part in path.relative_to(root).parts[:-1])


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``out_dir``, or None when there is none, it is damaged, or its graph is gone."""
    path = Path(out_dir) / MANIFEST_FILENAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except ValueError:
        return None
    if manifest.get("format") != FORMAT_VERSION or not (Path(out_dir) / manifest.get("graph", GRAPH_FILENAME)).is_file():
        return None
    return manifest


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(Path(out_dir) / MANIFEST_FILENAME, {"format": FORMAT_VERSION, **manifest})


def matches(manifest: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """True when ``manifest`` records every key of ``wanted`` with the same value."""
    return manifest is not None and all(manifest.get(key) == value for key, value in wanted.items())
