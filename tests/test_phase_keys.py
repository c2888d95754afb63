"""The phase-store keys of representative configs, pinned so that stored phases stay valid.

A grid files every trained phase under ``key_of(identity)`` (``fastxlt.experiments.store``) and reuses it
whenever a later cell, grid or re-run computes the same key. If a refactoring changes how an identity is
built -- a field renamed, added, dropped or ordered into the JSON differently -- every phase already in a
store is silently orphaned and retrained (hours at full scale), or worse, two different phases share a key.
So the keys below were computed by the code as it stood *before* ``fastxlt.experiments.phases`` replaced the
grid runner's own identity and plan builders (``grid_runner._identity`` / ``_intermediate_identity`` /
``_base_identity_only``), and every later version must reproduce them exactly. A deliberate change of what
determines a phase's weights (a new training option with a non-neutral default, a changed synthetic
generator: its sources are hashed into the embedded default's keys) changes them on purpose: then update the
hex strings here in the same commit and say in its message that stored phases are retrained.

The cases: the embedded default (``fastxlt run`` with no config: mlm -> intermediate -> target, synthetic
model), and configs/rq/cpu/q2-me5-small.yaml with (a) a fake local model directory and data directories whose
files have fixed contents and modification times (the fingerprint path of ``model_identity`` and
``data_fingerprint``) and (b) a hub model name with data directories that are not there. Absolute paths of the
temporary directory are replaced by ``/pinned`` before hashing, so (a) pins everything but where pytest put it;
the target after (a)'s intermediate hashes its parent's key with the real path inside, so it is not pinned.
``deepspeed.precision`` is fixed (``auto`` resolves per machine).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastxlt.experiments.grid import BEST_SNAPSHOT, COLLAPSED, GridSpec, load_grid
from fastxlt.experiments.phases import base_identity, intermediate_identity, phase_of
from fastxlt.experiments.store import key_of

REPO = Path(__file__).resolve().parents[1]
# Frozen copies of the configs as they were when the keys were recorded: the keys pin the code, not the configs'
# later, deliberate changes (the embedded default now has 2 seeds; q2's CPU twin 3 seeds and 5 snapshots).
DEFAULT = REPO / "tests" / "fixtures" / "pins" / "default.yaml"
Q2 = REPO / "tests" / "fixtures" / "pins" / "q2-me5-small.yaml"
MTIME_NS = 1_700_000_000_000_000_000

EMBEDDED_DEFAULT = {
    "target_size=1000,intermediate=none": {"mlm": "9a24fd52e170ad68", "target": "41a897ccc0911262"},
    "target_size=1000,intermediate=synth-nli": {
        "mlm": "9a24fd52e170ad68", "intermediate": "4a19fa49abeec6c7", "target": "98800d23747537f0"},
    "target_size=all,intermediate=none": {"mlm": "9a24fd52e170ad68", "target": "8020ad3558df902a"},
    "target_size=all,intermediate=synth-nli": {
        "mlm": "9a24fd52e170ad68", "intermediate": "4a19fa49abeec6c7", "target": "6a44647f549ad3da"},
}
Q2_SNAPSHOT_CELLS = ["frac-0.25", "frac-0.5", "frac-0.75", "avg-3"]  # their targets need the trained phase's steps
Q2_FAKE_DIR_FP32 = {
    "intermediate=none,seed=1,snapshot=-": {"target": "f93a17f7dc781612"},
    **{f"intermediate=snli,seed=1,snapshot={s}": {"intermediate": "471bdde8d37a82f4"} for s in Q2_SNAPSHOT_CELLS},
    "intermediate=snli,seed=1,snapshot=best": {"intermediate": "471bdde8d37a82f4"},
}
Q2_HUB_BF16 = {
    "intermediate=none,seed=1,snapshot=-": {"target": "347eb51782a074e0"},
    **{f"intermediate=snli,seed=1,snapshot={s}": {"intermediate": "e1e69f5c4cb5b689"} for s in Q2_SNAPSHOT_CELLS},
    "intermediate=snli,seed=1,snapshot=best": {"intermediate": "e1e69f5c4cb5b689", "target": "da5a5906d825649c"},
}


def cell_keys(spec: GridSpec, relocate: Path | None = None, chained_targets: bool = True) -> dict[str, dict[str, str]]:
    """Every phase key of every cell, chained the way ``grid_runner.run_cell`` chains them (the mlm phase on the
    base seed, a target after an intermediate from its dev-selected "best" model)."""
    out = {}
    for cell in spec.cells:
        config, keys = cell.config, {}
        parent = base_identity(config, spec.base_seed)
        if config.phases.mlm is not None:
            mlm = phase_of(config, "mlm", seed=spec.base_seed).identity(parent)
            keys["mlm"] = _key(mlm, relocate)
            parent = {"phase": "mlm", "key": key_of(mlm)}
        if cell.has_intermediate:
            identity = intermediate_identity(config, spec.base_seed)
            keys["intermediate"] = _key(identity, relocate)
            parent = {"phase": "intermediate", "key": key_of(identity), "snapshot": BEST_SNAPSHOT}
        if cell.snapshot in (BEST_SNAPSHOT, COLLAPSED) and (chained_targets or not cell.has_intermediate):
            keys["target"] = _key(phase_of(config, "target").identity(parent), relocate)
        out[cell.cell_id] = keys
    return out


def _key(identity: dict[str, Any], relocate: Path | None) -> str:
    if relocate is None:
        return key_of(identity)
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return key_of(json.loads(text.replace(str(relocate.resolve()), "/pinned")))


def _fixed_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))


def _q2_grid(tmp_path: Path, label: str, model: str, data: dict[str, str], precision: str) -> GridSpec:
    config = copy.deepcopy(yaml.safe_load(Q2.read_text()))
    config["model"]["name_or_path"] = model
    config["data"] = data
    config["deepspeed"]["precision"] = precision
    config["run_dir"] = str(tmp_path / "runs" / label)
    config["grid"]["store"] = str(tmp_path / "store")
    path = tmp_path / f"{label}.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_grid(path)


def test_the_embedded_defaults_phase_keys_are_pinned(tmp_path):
    spec = load_grid(DEFAULT, [f"run_dir={tmp_path / 'default'}"])
    assert cell_keys(spec) == EMBEDDED_DEFAULT


def test_a_local_models_phase_keys_are_pinned(tmp_path):
    model = tmp_path / "me5-small"
    _fixed_file(model / "config.json", '{"model_type": "bert", "hidden_size": 384}\n')
    _fixed_file(model / "model.safetensors", "not weights, a fixed fingerprint\n")
    _fixed_file(tmp_path / "data" / "xnli" / "test.tsv", "en\tpremise\thypothesis\tentailment\n")
    _fixed_file(tmp_path / "data" / "snli" / "validation.jsonl", '{"premise": "a", "hypothesis": "b", "label": 0}\n')
    data = {"xnli": str(tmp_path / "data" / "xnli"), "snli": str(tmp_path / "data" / "snli")}
    spec = _q2_grid(tmp_path, "q2-fake-dir-fp32", str(model), data, "fp32")
    assert cell_keys(spec, relocate=tmp_path, chained_targets=False) == Q2_FAKE_DIR_FP32


def test_a_hub_models_phase_keys_are_pinned(tmp_path):
    data = {"xnli": "not-here/xnli", "snli": "not-here/snli"}
    spec = _q2_grid(tmp_path, "q2-hub-bf16", "intfloat/multilingual-e5-small", data, "bf16_autocast")
    assert cell_keys(spec) == Q2_HUB_BF16


@pytest.mark.parametrize("kind", ["mlm", "intermediate", "target"])
def test_the_plan_trains_what_the_identity_names(kind):
    """The plan and the identity come from one ``Phase``: every setting that the identity hashes is the one the
    loop is handed (an independent reading of the config, not of the ``Phase``)."""
    spec = load_grid(DEFAULT)
    config = spec.cells[-1].config
    phase = phase_of(config, kind, seed=5, snapshots=[2])
    plan = phase.plan(phase_dir=Path("p"), init_encoder="e", tokenizer="t", run_name="r")
    identity = phase.identity({"pretrained": "x"})
    assert plan.seed == identity["seed"] == 5
    assert plan.optimization == config.phase_optimization(kind)
    assert [task.name for task in plan.tasks] == identity["phase"]["tasks"] == getattr(config.phases, kind).tasks
    assert (plan.kernels, plan.pooling, plan.deepspeed) == (config.kernels, config.model.pooling, config.deepspeed)
    assert identity["zero_stage"] == config.deepspeed.zero_stage and identity["kernels"] == config.kernels
    assert plan.phase.snapshots == [2] and "snapshots" not in identity["phase"]  # snapshots only add files
    assert (plan.name, plan.run_name, plan.init_encoder, plan.tokenizer) == (kind, "r", "e", "t")


def test_question_4s_four_layer_cells_are_question_5s_cells():
    """configs/rq/cpu/q4-me5-small.yaml says its 4-layer cells are question 5's English and en+de+es+fr+zh cells
    (one phase store, so the grid run second reuses them). Both configs evolve: this keeps the claim true."""
    q4 = load_grid(REPO / "configs" / "rq" / "cpu" / "q4-me5-small.yaml")
    q5 = load_grid(REPO / "configs" / "rq" / "cpu" / "q5-me5-small.yaml")
    assert q4.store == q5.store
    q5_phases = {json.dumps(keys, sort_keys=True) for keys in cell_keys(q5).values()}
    four_layer = {cell: keys for cell, keys in cell_keys(q4).items() if "model=me5-small-L4" in cell}
    assert len(four_layer) == 3 * 2 * 2  # seeds x intermediate languages x targets
    assert all("intermediate" in keys and "target" in keys for keys in four_layer.values())
    assert {cell for cell, keys in four_layer.items() if json.dumps(keys, sort_keys=True) not in q5_phases} == set()
    others = [keys["target"] for cell, keys in cell_keys(q4).items() if "model=me5-small-L4" not in cell]
    assert not set(others) & {json.loads(k)["target"] for k in q5_phases}  # and no other q4 cell is
