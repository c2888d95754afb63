"""The shared phase store: every trained phase filed under a key of exactly what determines its weights.

A grid of intermediate tasks x targets x sizes x seeds needs each intermediate model once, however many
cells (and grids) start from it. So a phase is not stored under a cell's name but under the hash of its
*identity*: the phase kind, what it starts from (the pretrained model, or the parent phase's key and
snapshot), its tasks and their data (directory and a fingerprint of the files), the training languages
and subset, the resolved optimisation settings, the seed, the precision and kernels. Operational settings
that cannot change the weights (checkpoint cadence, evaluation batch size, where the run lives) are left
out, and so are snapshot requests, which only add files beside the phase.

Layout::

    <store>/<kind>/<key>/identity.json    what the key was computed from (for people, and `fastxlt rekey`)
    <store>/<kind>/<key>/...              an ordinary phase directory (model/, phase.json, snapshots/)
    <store>/pretrained/<key>/             the embedded default's generated tokenizer + tiny encoder

Concurrent shards on a shared filesystem meet here: each phase is trained under its own directory lock,
so a second shard that needs the same phase waits for it and then reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fastxlt.config import DeepSpeedConfig, OptimizationConfig, PhaseConfig
from fastxlt.training.precision import resolve_training_precision
from fastxlt.utils.io import write_json_atomic

KEY_LENGTH = 16
IDENTITY_FILENAME = "identity.json"
# OptimizationConfig fields that change how a phase is run or watched, never its weights.
# (sparse_embedding_grads: the same weights bit for bit, only faster)
OPERATIONAL_OPTIMIZATION = ("checkpoint_every", "keep_checkpoints", "eval_batch_tokens", "sparse_embedding_grads")
# OptimizationConfig fields added after phase stores existed, with the value that reproduces the weights of
# phases trained before them: left out of an identity at that value, so those phases keep their keys.
ADDED_OPTIMIZATION_DEFAULTS = {"fused_adamw": False, "group_by_length": 0, "fast_dropout": False}
# PhaseConfig fields that only add files beside the phase.
OPERATIONAL_PHASE = ("snapshots",)
# Files of a model directory that determine its weights (a fingerprint, not a content hash: weights are GBs).
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "sentencepiece.bpe.model")
FINGERPRINT_FILE_LIMIT = 5000


def key_of(identity: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable identity."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def phase_identity(
    kind: str,
    parent: dict[str, Any],
    phase: PhaseConfig,
    optimization: OptimizationConfig,
    *,
    seed: int,
    deepspeed: DeepSpeedConfig,
    kernels: str,
    pooling: str,
    data_dirs: dict[str, str],
) -> dict[str, Any]:
    """Everything that determines a phase's weights, as plain data."""
    phase_fields = {k: v for k, v in dataclasses.asdict(phase).items() if k not in OPERATIONAL_PHASE}
    phase_fields.pop("optimization", None)  # the resolved settings below replace the raw overrides
    settings = {
        k: v for k, v in dataclasses.asdict(optimization).items()
        if k not in OPERATIONAL_OPTIMIZATION and not (k in ADDED_OPTIMIZATION_DEFAULTS and v == ADDED_OPTIMIZATION_DEFAULTS[k])
    }
    return {
        "kind": kind,
        "parent": parent,
        "phase": phase_fields,
        "optimization": settings,
        "seed": seed,
        "precision": resolve_training_precision(deepspeed.precision),  # auto: what this machine trains in
        "zero_stage": deepspeed.zero_stage,
        "kernels": kernels,
        "pooling": pooling,
        "data": {task: data_fingerprint(data_dirs[task]) for task in phase.tasks if task in data_dirs},
    }


def model_identity(name_or_path: str) -> dict[str, Any]:
    """A pretrained model: its hub name, or a local directory's path and the fingerprint of its weights."""
    path = Path(name_or_path)
    if not path.is_dir():
        return {"model": name_or_path}
    files = {name: _stat(path / name) for name in MODEL_FILES if (path / name).is_file()}
    return {"model": str(path.resolve()), "files": files}


def data_fingerprint(directory: str) -> dict[str, Any]:
    """A data directory's path plus (relative path, size, mtime) of its files: edits and copies change it."""
    root = Path(directory)
    if not root.exists():
        return {"path": str(directory), "missing": True}
    digest = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            digest.update(f"{file.relative_to(root)}|{_stat(file)}\n".encode())
            count += 1
            if count >= FINGERPRINT_FILE_LIMIT:
                break
    return {"path": str(root.resolve()), "files": count, "digest": digest.hexdigest()[:KEY_LENGTH]}


def _stat(file: Path) -> str:
    info = file.stat()
    return f"{info.st_size}:{info.st_mtime_ns}"


class PhaseStore:
    """Phase directories keyed by identity under one root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def phase_dir(self, kind: str, identity: dict[str, Any]) -> Path:
        """The directory of the phase with this identity (created, with its identity.json, on first use)."""
        directory = self.root / kind / key_of(identity)
        if not (directory / IDENTITY_FILENAME).is_file():
            write_json_atomic(directory / IDENTITY_FILENAME, identity)
        return directory
