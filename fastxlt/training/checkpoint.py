"""Resumable checkpoints on DeepSpeed (weights, optimizer, scheduler, loop state) and consolidated weights.

The loop's own state (micro-step, best dev score, evaluations without improvement, history) travels in
DeepSpeed's ``client_state``; the data order needs no state because it is a function of the step.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from fastxlt.errors import CheckpointError
from fastxlt.training import distributed

TAG_PREFIX = "step-"


class CheckpointManager:
    def __init__(self, directory: Path, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def save(self, engine, step: int, state: dict[str, Any]) -> None:
        engine.save_checkpoint(str(self.directory), tag=f"{TAG_PREFIX}{step:08d}", client_state={"fastxlt": state})
        distributed.barrier()
        if distributed.is_main():
            for old in self.tags()[: -self.keep]:
                shutil.rmtree(self.directory / old, ignore_errors=True)
        distributed.barrier()

    def tags(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and p.name.startswith(TAG_PREFIX))

    def resume(self, engine) -> dict[str, Any] | None:
        """Load the latest checkpoint into the engine; None when there is none."""
        if not (self.directory / "latest").is_file():
            return None
        try:
            path, client_state = engine.load_checkpoint(str(self.directory))
        except Exception as error:  # noqa: BLE001 - DeepSpeed raises many types for a bad checkpoint
            raise CheckpointError(
                f"cannot resume from '{self.directory}' ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "it belongs to another model or config, or is damaged: delete that folder to restart the phase"
            ) from error
        if path is None or not client_state or "fastxlt" not in client_state:
            raise CheckpointError(
                f"'{self.directory}' holds no usable fastxlt checkpoint; delete that folder to restart the phase"
            )
        return client_state["fastxlt"]

    def remove_all(self) -> None:
        distributed.barrier()
        if distributed.is_main():
            shutil.rmtree(self.directory, ignore_errors=True)
        distributed.barrier()


def consolidated_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """The full fp32 state dict on rank 0 (gathered from the partitions under ZeRO-3); None on other ranks."""
    if engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict()
    if state is None or not distributed.is_main():
        return None
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}
