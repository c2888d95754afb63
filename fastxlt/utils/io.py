"""Small file helpers: atomic JSON/YAML writes so that a killed run never leaves half a result.

Each write goes to a temporary file in the target's directory and is renamed over the target, so a
reader sees the old file or the new one, never a mix. ``tempfile.mkstemp`` creates its file with mode
0600 whatever the umask; the helpers widen it to what ``open()`` would have given (0666 minus the
umask), so results are as readable as the weights written beside them.

Weights need the same care: safetensors 0.8 creates ``model.safetensors`` with mode 0600 whatever the
umask (a plain ``save_pretrained`` does too), so group members on shared storage could not load a
model. ``follow_umask`` gives every file a phase or an export wrote the mode ``open()`` would have given.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only for an instant)
    os.umask(mask)
    return mask


def umask_mode() -> int:
    """The mode ``open(path, 'w')`` gives a new file: 0666 minus the umask."""
    return 0o666 & ~current_umask()


def follow_umask(*paths: str | Path) -> None:
    """Give each file (or every file under each directory) the mode of a plain ``open()``, see the module doc."""
    mode = umask_mode()
    for path in map(Path, paths):
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
        for file in files:
            if file.stat().st_mode & 0o777 != mode:
                os.chmod(file, mode)


def _write_atomic(path: str | Path, write, *, sync: bool) -> Path:
    """Create ``path`` through a temporary sibling with the mode a plain ``open(path, 'w')`` would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, umask_mode())
        with os.fdopen(handle, "w", encoding="utf-8") as tmp:
            write(tmp)
            if sync:
                tmp.flush()
                os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON to a temporary file in the same directory, fsync it, then rename it over ``path``."""

    def write(tmp) -> None:
        json.dump(data, tmp, indent=2, sort_keys=True, ensure_ascii=False)
        tmp.write("\n")

    return _write_atomic(path, write, sync=True)


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text through a temporary sibling and a rename (no fsync: configs and logs, not results)."""
    return _write_atomic(path, lambda tmp: tmp.write(text), sync=False)
