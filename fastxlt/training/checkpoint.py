"""Resumable checkpoints on DeepSpeed (weights, optimizer, scheduler) plus the loop's own state, and
consolidated weights.

A checkpoint is one tag directory, ``checkpoints/step-00000004/``: DeepSpeed's files, then, written by
rank 0 once every rank's files are on disk, ``fastxlt_state.json`` with the loop state (micro-step, best
dev score, evaluations without improvement, history) and the size of every file of the tag. That JSON
file is the tag's seal: a tag without it was interrupted while saving, a tag whose files do not match it
is damaged, and resuming takes the newest intact tag (saying which ones it skipped). The data order needs
no state: it is a function of the step.

Resuming never runs code from the run directory. DeepSpeed's checkpoint engine loads with
``torch.load(weights_only=False)``, which executes whatever a pickle asks for; ``use_safe_loading``
replaces that load with ``weights_only=True`` and an allow-list of the only classes DeepSpeed pickles
(found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` over ZeRO 0-3, fp32/bf16, with and
without optimizer offload: the loss scaler, the ZeRO stage enum and a tensor-fragment address). A file
that needs anything else is refused with ``UnsafeCheckpointError``; the loop state never travels in a
pickle (it used to ride in DeepSpeed's ``client_state``).
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fastxlt.errors import CheckpointError, UnsafeCheckpointError
from fastxlt.training import distributed
from fastxlt.utils.io import read_json, write_json_atomic

TAG_PREFIX = "step-"
STATE_FILENAME = "fastxlt_state.json"
STATE_FORMAT = 1

# The classes DeepSpeed pickles into its state files (module, name); everything else is refused.
DEEPSPEED_PICKLED_CLASSES = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),  # fp16 on a GPU
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)


def tag_name(step: int) -> str:
    return f"{TAG_PREFIX}{step:08d}"


def allowed_classes() -> list[type]:
    """The allow-list as classes (imported lazily: DeepSpeed is heavy)."""
    return [getattr(importlib.import_module(module), name) for module, name in DEEPSPEED_PICKLED_CLASSES]


def safe_torch_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load`` that unpickles tensors, containers and the allow-list only; refuses anything else."""
    try:
        with torch.serialization.safe_globals(allowed_classes()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        lines = str(error).splitlines()
        unsafe = next((line.strip() for line in lines if "GLOBAL" in line), None)
        if unsafe is not None:
            raise UnsafeCheckpointError(
                f"refusing to load '{path}': it needs a pickled object outside fastxlt's allow-list ({unsafe}), "
                "so loading it could run code; fastxlt did not write it: delete that checkpoint folder"
            ) from None
        raise CheckpointError(f"'{path}' is not a readable checkpoint file (damaged); delete that checkpoint folder") from None


def use_safe_loading(engine) -> None:
    """Make every checkpoint read of this DeepSpeed engine go through ``safe_torch_load``."""
    engine.checkpoint_engine.load = safe_torch_load


class CheckpointManager:
    """Save, rotate and resume the checkpoints of one phase (``<phase_dir>/checkpoints``)."""

    def __init__(self, directory: Path, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def save(self, engine, step: int, state: dict[str, Any]) -> None:
        """DeepSpeed's files for every rank, then the seal with the loop state; keeps the newest ``keep``."""
        tag = tag_name(step)
        if distributed.is_main():  # a leftover of an interrupted attempt at this step must not look sealed
            shutil.rmtree(self.directory / tag, ignore_errors=True)
        distributed.barrier()
        engine.save_checkpoint(str(self.directory), tag=tag)
        distributed.barrier()
        if distributed.is_main():
            record = {"format": STATE_FORMAT, "step": step, "state": state, "files": _file_sizes(self.directory / tag)}
            write_json_atomic(self.directory / tag / STATE_FILENAME, record)
            self._rotate(tag)
        distributed.barrier()

    def tags(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and p.name.startswith(TAG_PREFIX))

    def inspect(self, tag: str) -> tuple[dict[str, Any] | None, str]:
        """(the sealed record, "") for an intact tag, else (None, what is wrong with it)."""
        folder = self.directory / tag
        seal = folder / STATE_FILENAME
        if not seal.is_file():
            return None, f"was interrupted while saving (no {STATE_FILENAME})"
        try:
            record = read_json(seal)
            files, state = dict(record["files"]), dict(record["state"])
            state["micro_step"] = int(state["micro_step"])
            if record.get("format") != STATE_FORMAT or tag != tag_name(int(record["step"])):
                return None, f"is damaged ({STATE_FILENAME} describes another checkpoint)"
        except (OSError, ValueError, KeyError, TypeError) as error:
            return None, f"is damaged ({STATE_FILENAME} is unreadable: {type(error).__name__})"
        for name, size in sorted(files.items()):
            path = folder / name
            if not path.is_file():
                return None, f"is damaged ({name} is missing)"
            if path.stat().st_size != size:
                return None, f"is damaged ({name} has {path.stat().st_size} bytes, expected {size})"
        return record, ""

    def resume(self, engine) -> dict[str, Any] | None:
        """Load the newest intact checkpoint into the engine and return the loop state; None when there is none."""
        use_safe_loading(engine)
        decision = distributed.broadcast_object(self._choose() if distributed.is_main() else None)
        tag, state, notes, error = decision
        if distributed.is_main():
            for note in notes:
                tqdm.write(note)
        if error:
            raise CheckpointError(error)
        if tag is None:
            return None
        try:
            path, _ = engine.load_checkpoint(str(self.directory), tag=tag)
        except CheckpointError:
            raise
        except Exception as error:  # noqa: BLE001 - DeepSpeed raises many types for a checkpoint it cannot use
            first = str(error).splitlines()[0] if str(error) else ""
            raise CheckpointError(
                f"cannot resume from '{self.directory}' ({type(error).__name__}: {first}); "
                "it belongs to another model or config, or is damaged: delete that folder to restart the phase"
            ) from error
        if path is None:
            raise CheckpointError(f"'{self.directory / tag}' holds no DeepSpeed checkpoint; delete that folder to restart the phase")
        return state

    def remove_all(self) -> None:
        distributed.barrier()
        if distributed.is_main():
            shutil.rmtree(self.directory, ignore_errors=True)
        distributed.barrier()

    # ------------------------------------------------------------------------------------- internals

    def _choose(self) -> tuple[str | None, dict[str, Any] | None, list[str], str | None]:
        """(tag, loop state, notes, error) for resuming: the newest intact tag, never an older one silently."""
        skipped: list[tuple[str, str]] = []
        for tag in reversed(self.tags()):
            record, problem = self.inspect(tag)
            if record is not None:
                notes = [f"checkpoint {bad} in '{self.directory}' {why}; resuming from {tag} instead" for bad, why in skipped]
                return tag, record["state"], notes, None
            skipped.append((tag, problem))
        damaged = [(tag, why) for tag, why in skipped if why.startswith("is damaged")]
        if damaged:
            listing = "; ".join(f"{tag} {why}" for tag, why in damaged)
            return None, None, [], (
                f"cannot resume from '{self.directory}': no intact checkpoint ({listing}); delete that folder to restart the phase"
            )
        notes = [f"no complete checkpoint in '{self.directory}' (killed while saving the first one); the phase starts over"] if skipped else []
        return None, None, notes, None

    def _rotate(self, newest: str) -> None:
        """Keep the newest ``keep`` intact tags up to ``newest``; drop the rest (older, damaged, or left by a lost future)."""
        intact = [tag for tag in self.tags() if tag <= newest and self.inspect(tag)[0] is not None]
        kept = set(intact[-self.keep:]) | {newest}
        for tag in self.tags():
            if tag not in kept:
                shutil.rmtree(self.directory / tag, ignore_errors=True)


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != STATE_FILENAME
    }


def consolidated_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """The full fp32 state dict on rank 0 (gathered from the partitions under ZeRO-3); None on other ranks."""
    if engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict()
    if state is None or not distributed.is_main():
        return None
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}
