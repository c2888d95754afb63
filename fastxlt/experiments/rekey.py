"""Re-key a phase store after its data directories were copied or remounted.

A phase's key hashes a *fingerprint* of each data directory (file names, sizes and modification times:
``store.data_fingerprint``), not the files' contents, because datasets are large. A copy that does not keep
modification times, or a read-only dataset mount recreated with fresh ones, leaves every file as it was but
changes every fingerprint, so the next ``fastxlt run`` finds none of its phases and trains them all again
(measured 2026-12-07: a remounted ``../shared/data`` orphaned a 72 GB store whose grids were half done).

``rekey_store`` gives each stored phase the key it would get from the data directories as they are now: it
recomputes the fingerprint of every data path recorded in the phase's identity.json (the paths themselves
must be unchanged), follows parent keys (a target's intermediate phase is re-keyed first), and links the new
key to the existing directory. Old keys stay, so run directories that name them keep working. It is for data
whose *contents* did not change: the caller says so by running it (``fastxlt store rekey``); nothing here can
check contents that were never hashed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastxlt.errors import ConfigError
from fastxlt.experiments.store import IDENTITY_FILENAME, data_fingerprint, key_of

# Parents before children: a child's identity names its parent's key, which must be re-keyed first.
KIND_ORDER = ("pretrained", "mlm", "intermediate", "target")
FINGERPRINT_FIELDS = {"path", "files", "digest"}


@dataclass
class RekeyOutcome:
    """What ``rekey_store`` did, per kind: (old key, new key) pairs linked, and the ones whose new key was
    already taken by another directory (a phase trained again since; both are kept, nothing is merged)."""

    linked: list[tuple[str, str, str]] = field(default_factory=list)
    taken: list[tuple[str, str, str]] = field(default_factory=list)
    unchanged: int = 0
    already_linked: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def rekey_store(root: str | Path, *, dry_run: bool = False) -> RekeyOutcome:
    """Link every phase of the store at ``root`` under the key of its identity with today's data fingerprints
    (``dry_run``: say what would be linked, link nothing)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"phase store {root} does not exist; pass the grid's store directory (its grid.json 'store')")
    outcome, renamed, fingerprints = RekeyOutcome(), {}, {}
    for kind, directory in _phases(root):
        try:
            identity = json.loads((directory / IDENTITY_FILENAME).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            outcome.unreadable.append((kind, directory.name))  # a damaged identity: left alone, never a reason to stop
            continue
        current = _refingerprinted(identity, renamed, fingerprints)
        new_key = key_of(current)
        if new_key == directory.name:
            outcome.unchanged += 1
            continue
        renamed[(kind, directory.name)] = new_key
        target = directory.parent / new_key
        if target.is_symlink() and target.resolve() == directory.resolve():
            outcome.already_linked += 1
            continue
        if target.exists() or target.is_symlink():
            outcome.taken.append((kind, directory.name, new_key))
            continue
        if not dry_run:
            os.symlink(directory.name, target)  # relative: the store can move as a whole
        outcome.linked.append((kind, directory.name, new_key))
    return outcome


def stale_phase_note(root: str | Path) -> str | None:
    """A one-line note for ``fastxlt run`` when the store holds phases that ``rekey_store`` would link: phases
    trained on the same data paths under other modification times, which this run would otherwise train again."""
    if not Path(root).is_dir():
        return None
    found = rekey_store(root, dry_run=True).linked
    if not found:
        return None
    return (f"{len(found)} stored phase(s) in {root} were trained on these data paths under other file modification "
            f"times (a copy or remount?); if the files are unchanged, `fastxlt rekey {root}` lets this run reuse them")


def _phases(root: Path) -> Iterator[tuple[str, Path]]:
    """(kind, directory) of every real (not linked) phase directory with an identity, parents' kinds first."""
    kinds = sorted((path.name for path in root.iterdir() if path.is_dir()),
                   key=lambda name: (KIND_ORDER.index(name) if name in KIND_ORDER else len(KIND_ORDER), name))  # fmt: skip
    for kind in kinds:
        for directory in sorted((root / kind).iterdir()):
            if directory.is_dir() and not directory.is_symlink() and (directory / IDENTITY_FILENAME).is_file():
                yield kind, directory


def _refingerprinted(value: Any, renamed: dict[tuple[str, str], str], fingerprints: dict[str, dict]) -> Any:
    """A copy of an identity with each data fingerprint recomputed from its path (once per path: ``fingerprints``),
    and each parent key that was re-keyed replaced by its new key."""
    if isinstance(value, dict):
        if set(value) == FINGERPRINT_FIELDS and Path(value["path"]).exists():
            if value["path"] not in fingerprints:
                fingerprints[value["path"]] = data_fingerprint(value["path"])
            return fingerprints[value["path"]]
        out = {name: _refingerprinted(item, renamed, fingerprints) for name, item in value.items()}
        kind, key = out.get("phase"), out.get("key")
        if isinstance(kind, str) and isinstance(key, str) and (kind, key) in renamed:
            out["key"] = renamed[(kind, key)]
        return out
    if isinstance(value, list):
        return [_refingerprinted(item, renamed, fingerprints) for item in value]
    return value
