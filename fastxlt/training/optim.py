"""The optimiser (AdamW or Adafactor) with the reference recipe's parameter groups, and its learning-rate schedule.

- ``adamw`` (the default): the X-STILTs reference -- AdamW, betas (0.9, 0.999), eps 1e-8, and a linear
  warm-up over ``warmup_ratio`` of the steps followed by a linear decay to 0.
- ``adafactor``: the T5/mT5 fine-tuning recipe -- ``transformers.optimization.Adafactor`` at a *constant*
  learning rate ``lr`` (1e-3 in the mT5 paper): no relative step size, no scaling of the update by the
  parameter's RMS, no warm-up initialisation, no momentum (``beta1=None``); the schedule is constant, so
  ``warmup_ratio`` does not apply. Adafactor keeps a factored second moment (a row and a column vector)
  for every matrix, which is why it fits large mT5 models. Under ZeRO 1-3 DeepSpeed hands the optimiser
  flat 1-D partitions of the parameters, so the second moment is kept unfactored there (the update rule
  is the same; only the memory saving is lost).

DeepSpeed takes either as a client optimiser (``deepspeed.initialize(optimizer=...)``), with the schedule
as a callable that it applies to that optimiser.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers import get_constant_schedule, get_linear_schedule_with_warmup

from fastxlt.config import OptimizationConfig

NO_DECAY_MARKERS = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias", "layernorm")
ScheduleFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LambdaLR]


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
    """The optimiser ``settings.optimizer`` names, over ``parameter_groups`` (offload: DeepSpeed's CPU AdamW, which
    is a fused kernel of its own, whatever ``fused_adamw`` says)."""
    groups = parameter_groups(model, settings.weight_decay)
    if settings.optimizer == "adafactor":
        return make_adafactor(groups, settings.lr)
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=settings.lr, adamw_mode=True)
    # fused: one kernel over all parameters (the same update to fp32 rounding); torch's default on a CPU is a
    # Python loop over them, which at XLM-R's 250k-row embedding matrix costs a large share of a step (issue 13)
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8, fused=settings.fused_adamw or None)


def make_adafactor(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """Adafactor at a constant ``lr``: the settings of T5's fine-tuning, not Adafactor's relative-step default."""
    from transformers.optimization import Adafactor

    return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False, beta1=None)


def lr_schedule(total_steps: int, settings: OptimizationConfig) -> ScheduleFactory:
    """The schedule of ``settings.optimizer``: linear warm-up and decay for AdamW, constant for Adafactor."""
    if settings.optimizer == "adafactor":
        return get_constant_schedule
    return linear_schedule(total_steps, settings.warmup_ratio)


def linear_schedule(total_steps: int, warmup_ratio: float) -> ScheduleFactory:
    """A factory DeepSpeed calls with its (possibly wrapped) optimizer: transformers' linear warm-up then decay to 0."""
    warmup_steps = int(round(total_steps * warmup_ratio))
    return lambda optimizer: get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
