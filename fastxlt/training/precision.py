"""``deepspeed.precision: auto``: the training precision this machine runs fastest without losing fp32 weights.

Why per machine and not per config file: bf16 autocast is 2-6x faster than fp32 on CPUs with bf16 product
instructions (AMX Xeons; AVX-512 BF16 EPYCs) and several times slower where bf16 is emulated (AVX2-only
EPYCs, AVX-512 VNNI Xeons), so a config that names either precision is wrong on some machine. ``auto`` resolves
to ``bf16_autocast`` where ``fastxlt.utils.hardware.bf16_training_choice`` says bf16 pays, ``fp32`` otherwise:
both keep fp32 weights, gradients and optimizer. The phase store keys a phase on the resolved precision
(``fastxlt.experiments.store.phase_identity``), so a phase trained in bf16 is never reused as an fp32 one.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from tqdm import tqdm

from fastxlt.config import DeepSpeedConfig
from fastxlt.utils.hardware import bf16_training_choice, default_device

AUTO = "auto"


@functools.cache
def _auto_precision(device: torch.device) -> str:
    """The resolved precision for ``device``, stated once per process in one log line."""
    pays, reason = bf16_training_choice(device)
    chosen = "bf16_autocast" if pays else "fp32"
    tqdm.write(f"[precision] deepspeed.precision auto -> {chosen} on {device.type} ({reason})")
    return chosen


def resolve_training_precision(precision: str, device: torch.device | None = None) -> str:
    """``precision`` itself, or for ``auto`` the precision this machine's ``device`` trains fastest in."""
    if precision != AUTO:
        return precision
    return _auto_precision(device if device is not None else default_device())


def resolved_deepspeed(section: DeepSpeedConfig, device: torch.device | None = None) -> DeepSpeedConfig:
    """A copy of ``section`` with ``auto`` resolved (the same object when nothing needs resolving)."""
    if section.precision != AUTO:
        return section
    return dataclasses.replace(section, precision=resolve_training_precision(AUTO, device))
