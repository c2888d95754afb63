"""AdamW with the reference recipe's parameter groups and the linear warm-up/decay schedule."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from fastxlt.config import OptimizationConfig

NO_DECAY_MARKERS = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias", "layernorm")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on every weight except biases and LayerNorm parameters (the reference implementation's rule)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if any(marker in name for marker in NO_DECAY_MARKERS) or parameter.ndim == 1:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, settings: OptimizationConfig, *, offload: bool = False) -> torch.optim.Optimizer:
    groups = parameter_groups(model, settings.weight_decay)
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=settings.lr, adamw_mode=True)
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8)


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LambdaLR]:
    """A factory DeepSpeed calls with its (possibly wrapped) optimizer: transformers' linear warm-up then decay to 0."""
    warmup_steps = int(round(total_steps * warmup_ratio))
    return lambda optimizer: get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
