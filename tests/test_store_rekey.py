"""`fastxlt rekey`: a phase store whose data directory got new modification times (a copy, a remount) files
its phases under the keys a grid computes from the data as it is now, parents before children."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fastxlt.cli import main
from fastxlt.errors import ConfigError
from fastxlt.experiments.rekey import rekey_store, stale_phase_note
from fastxlt.experiments.store import IDENTITY_FILENAME, data_fingerprint, key_of


def _data_and_store(root: Path) -> tuple[Path, Path]:
    """A one-file data directory (its mtime is what the tests change) and where the store will be."""
    data = root / "xnli"
    data.mkdir()
    (data / "dev.tsv").write_text("premise\thypothesis\tlabel\n")
    return data, root / "store"


def _file_phase(store: Path, kind: str, identity: dict) -> Path:
    directory = store / kind / key_of(identity)
    directory.mkdir(parents=True)
    (directory / IDENTITY_FILENAME).write_text(json.dumps(identity))
    (directory / "phase.json").write_text("{}")
    return directory


def _identities(data: Path, model: str = "/models/enc") -> tuple[dict, dict]:
    """An intermediate phase on ``data`` and the target phase trained from it (the fields a grid writes)."""
    intermediate = {"kind": "intermediate", "data": {"xnli": data_fingerprint(str(data))}, "phase": {"tasks": ["xnli"]},
                    "parent": {"pretrained": {"model": model}}, "seed": 1}  # fmt: skip
    target = {"kind": "target", "data": {}, "phase": {"tasks": ["pawsx"]}, "seed": 1,
              "parent": {"phase": "intermediate", "key": key_of(intermediate), "snapshot": "best"}}  # fmt: skip
    return intermediate, target


def test_phases_are_linked_under_the_keys_of_todays_data(tmp_path):
    data, store = _data_and_store(tmp_path)
    old_intermediate, old_target = _identities(data)
    first = _file_phase(store, "intermediate", old_intermediate)
    second = _file_phase(store, "target", old_target)
    _file_phase(store, "target", {"kind": "target", "data": {}, "seed": 9})  # no data, no re-keyed parent

    os.utime(data / "dev.tsv", ns=(1, 1))  # the same bytes, another modification time
    new_intermediate, new_target = _identities(data)
    assert key_of(new_intermediate) != first.name and key_of(new_target) != second.name

    outcome = rekey_store(store)
    assert sorted(outcome.linked) == sorted([("intermediate", first.name, key_of(new_intermediate)),
                                             ("target", second.name, key_of(new_target))])  # fmt: skip
    assert outcome.unchanged == 1
    assert (store / "intermediate" / key_of(new_intermediate)).resolve() == first.resolve()
    assert (store / "target" / key_of(new_target)).resolve() == second.resolve()
    assert first.is_dir() and not first.is_symlink()  # old keys stay: run directories name them

    again = rekey_store(store)
    assert again.linked == [] and again.already_linked == 2


def test_a_new_key_already_trained_is_kept(tmp_path):
    """A phase trained again under the new key (before rekey ran) is not replaced by a link."""
    data, store = _data_and_store(tmp_path)
    old_intermediate, _ = _identities(data)
    old = _file_phase(store, "intermediate", old_intermediate)
    os.utime(data / "dev.tsv", ns=(1, 1))
    retrained = _file_phase(store, "intermediate", _identities(data)[0])
    outcome = rekey_store(store)
    assert outcome.linked == [] and outcome.taken == [("intermediate", old.name, retrained.name)]
    assert not retrained.is_symlink()


def test_dry_run_links_nothing_and_cli_reports(tmp_path, capsys):
    data, store = _data_and_store(tmp_path)
    _file_phase(store, "intermediate", _identities(data)[0])
    os.utime(data / "dev.tsv", ns=(1, 1))
    assert main(["rekey", str(store), "--dry-run"]) == 0
    assert "1 phase(s) would link" in capsys.readouterr().out
    assert len(list((store / "intermediate").iterdir())) == 1
    assert main(["rekey", str(store)]) == 0
    assert len(list((store / "intermediate").iterdir())) == 2


def test_a_missing_store_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        rekey_store(tmp_path / "nowhere")


def test_a_grid_run_is_told_when_rekey_would_help(tmp_path):
    """`fastxlt run` prints this note before training anything: without it, a remount silently retrains a store."""
    data, store = _data_and_store(tmp_path)
    _file_phase(store, "intermediate", _identities(data)[0])
    assert stale_phase_note(store) is None  # the data as it was: nothing to say
    os.utime(data / "dev.tsv", ns=(1, 1))
    note = stale_phase_note(store)
    assert note is not None and note.startswith("1 stored phase(s)") and f"fastxlt rekey {store}" in note
    rekey_store(store)
    assert stale_phase_note(store) is None
    assert stale_phase_note(tmp_path / "no-store-yet") is None


def test_a_damaged_identity_is_skipped_not_fatal(tmp_path):
    """`fastxlt run` reads every identity.json for its note: one damaged file must not stop a grid."""
    data, store = _data_and_store(tmp_path)
    good = _file_phase(store, "intermediate", _identities(data)[0])
    damaged = store / "intermediate" / "0123456789abcdef"
    damaged.mkdir()
    (damaged / IDENTITY_FILENAME).write_text("{not json")
    os.utime(data / "dev.tsv", ns=(1, 1))
    outcome = rekey_store(store)
    assert outcome.unreadable == [("intermediate", damaged.name)]
    assert [old for _, old, _ in outcome.linked] == [good.name]
