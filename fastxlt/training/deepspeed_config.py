"""The DeepSpeed config generated from fastxlt's config (ZeRO stage, precision, batch, clipping)."""

from __future__ import annotations

from typing import Any

from fastxlt.config import DeepSpeedConfig, OptimizationConfig


def build_deepspeed_config(section: DeepSpeedConfig, settings: OptimizationConfig) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": section.zero_stage}
    if section.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if section.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if section.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accum,
        "gradient_clipping": settings.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": section.precision == "bf16"},
        "fp16": {"enabled": section.precision == "fp16", "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(config, section.extra)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
