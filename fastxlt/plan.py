"""`fastxlt plan`: how much GPU memory each training phase needs, and the smallest DeepSpeed setting that fits.

Why it exists: XLM-R Large fits one 80 GB GPU at ZeRO 0, mT5-XXL's encoder does not fit eight of them without
ZeRO 3; users should learn that from one command, before they queue a job, not from an out-of-memory error.

What it counts, per GPU, for one training phase:

- **model states** (parameters, gradients, optimizer states) for ZeRO stages 0-3, with and without CPU offload.
  In mixed precision (bf16/fp16) with AdamW, stages 2 and 3 come from DeepSpeed's own estimators
  (``estimate_zero2_model_states_mem_needs``, ``estimate_zero3_model_states_mem_needs``: the functions that
  ``estimate_zero{2,3}_model_states_mem_needs_all_cold`` print). Every other cell uses the same byte counts
  per parameter, spelled out in ``state_bytes``:

  ============================  ==========  =====  =========================================
  what                          mixed       fp32   sharded from stage
  ============================  ==========  =====  =========================================
  working parameters            2           4      3
  working gradients             2           --     2 (fp32 has no separate copy)
  fp32 gradients                4           4      1 (DeepSpeed's fp32 gradient partition)
  fp32 master parameters        4           --     1
  optimizer states              8 (AdamW)   8      1
  ============================  ==========  =====  =========================================

  Stage 0 = all of it on every GPU (mixed: 20 bytes/parameter, fp32: 16); stage 1 shards the last three rows;
  stage 2 also the working gradients (= DeepSpeed's ``2 + 18 / N``); stage 3 everything except working gradients,
  which it does not keep, plus one gathered largest layer in fp32 (= DeepSpeed's ``4 L + 18 / N``). Offload moves
  the sharded optimizer rows to the CPU (stage 1: 16-bit parameters and gradients stay, stage 2: 16-bit parameters
  stay, stage 3: one gathered layer plus the parameter shard stays, or only the layer with parameter offload).
  Adafactor (``optimization.optimizer: adafactor``, no momentum) keeps a factored second moment: one row and one
  column vector per matrix at stage 0; under ZeRO 1-3 DeepSpeed hands it flat partitions, so the second moment is
  unfactored there (4 bytes/parameter; see ``fastxlt/training/optim.py``).
- **activations** at the phase's micro-batch (``optimization.batch_size``, DeepSpeed's
  ``train_micro_batch_size_per_gpu``) and ``max_length``, with Korthikanti et al. 2022 ("Reducing Activation
  Recomputation in Large Transformer Models", eq. 2, no tensor or sequence parallelism) per layer:
  ``batch * length * hidden * (34 + 5 * heads * length / hidden)`` bytes for 16-bit activations; twice that in
  fp32 (which slightly overcounts the 1-byte dropout masks). It assumes a 4 x hidden feed-forward layer, so for
  mT5's gated 2.5 x feed-forward it is an approximation; no activation checkpointing; ZeRO does not shard
  activations. Heads are left out (a classification head is hidden^2 parameters: < 0.5 % of any encoder here;
  the MLM head's 250k-way logits are never materialised, see ``fastxlt/kernels/linear_ce.py``).

A setting *fits* when model states + activations <= ``USABLE_FRACTION`` of the GPU's memory (``--gpu-memory``, GiB) (the rest: the CUDA
context, allocator fragmentation, communication buckets). The recommendation avoids offload whenever some GPU
count up to ``--gpus x --nodes`` fits without it (offload moves every step's optimizer work to the CPU), then takes
the fewest GPUs, then the lowest stage.

Parameter counts come from the model's config, never its weights: a local directory's ``config.json`` (or a
cached hub config), else ``BUILTIN_MODELS``; the model is built on the meta device (no memory) and its unique
parameters counted, encoder only (mT5: ``MT5EncoderModel``, as fastxlt trains it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastxlt.errors import ConfigError
from fastxlt.experiments.grid import has_grid_section, load_grid
from fastxlt.experiments.preflight import load_experiment
from fastxlt.models.encoder import resolve_encoder_path
from fastxlt.models.family import encoder_class

GIB = 2**30
USABLE_FRACTION = 0.9
DEFAULT_GPU_MEMORY_GB = 80.0
MIXED_PRECISIONS = ("bf16", "fp16")
ADDITIONAL_BUFFER_FACTOR = 1.5  # DeepSpeed's default; it scales only the CPU memory, which the plan does not print

# Hyperparameters of the public checkpoints (their config.json on the Hugging Face hub). Counted on the meta
# device these give: xlm-roberta-base 278.0M, xlm-roberta-large 559.9M (Conneau et al. 2020 round them to 270M /
# 550M); mT5 encoders (Xue et al. 2021 list the whole encoder-decoder: 300M, 580M, 1.2B, 3.7B, 13B):
# small 146.9M, base 277.0M, large 564.4M, xl 1.67B, xxl 5.66B; see tests/test_plan.py.
_XLMR = {"vocab_size": 250002, "max_position_embeddings": 514, "type_vocab_size": 1}
_MT5 = {"vocab_size": 250112, "d_kv": 64, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
BUILTIN_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "xlm-roberta-base": ("xlm-roberta", {**_XLMR, "hidden_size": 768, "num_hidden_layers": 12,
                                         "num_attention_heads": 12, "intermediate_size": 3072}),
    "xlm-roberta-large": ("xlm-roberta", {**_XLMR, "hidden_size": 1024, "num_hidden_layers": 24,
                                          "num_attention_heads": 16, "intermediate_size": 4096}),
    "google/mt5-small": ("mt5", {**_MT5, "d_model": 512, "d_ff": 1024, "num_layers": 8, "num_heads": 6}),
    "google/mt5-base": ("mt5", {**_MT5, "d_model": 768, "d_ff": 2048, "num_layers": 12, "num_heads": 12}),
    "google/mt5-large": ("mt5", {**_MT5, "d_model": 1024, "d_ff": 2816, "num_layers": 24, "num_heads": 16}),
    "google/mt5-xl": ("mt5", {**_MT5, "d_model": 2048, "d_ff": 5120, "num_layers": 24, "num_heads": 32}),
    "google/mt5-xxl": ("mt5", {**_MT5, "d_model": 4096, "d_ff": 10240, "num_layers": 24, "num_heads": 64}),
}
_ALIASES = {"facebookai/xlm-roberta-base": "xlm-roberta-base", "facebookai/xlm-roberta-large": "xlm-roberta-large"}

# (stage, offload) in the order the recommendation tries them at equal GPUs (offloaded ones only after no GPU count fits without).
SETTINGS: tuple[tuple[int, str], ...] = (
    (0, "none"), (1, "none"), (2, "none"), (3, "none"),
    (1, "optimizer"), (2, "optimizer"), (3, "optimizer"), (3, "optimizer+params"),
)
_TABLE_ORDER = sorted(SETTINGS)


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a model depends on: its parameter counts and the sizes the activations scale with."""

    name: str
    model_type: str
    total_params: int
    largest_layer_params: int  # the largest module's own parameters (DeepSpeed's "largest layer": ZeRO 3 gathers it)
    adafactor_factored_elements: int  # Adafactor's second-moment elements when factored (rows + columns per matrix)
    hidden: int
    layers: int
    heads: int


@dataclass(frozen=True)
class PhaseNeeds:
    """One phase's settings that change its memory."""

    phase: str
    batch_size: int
    max_length: int
    optimizer: str


@dataclass
class ModelPlan:
    """One model's phases under one precision: what `fastxlt plan` prints for it."""

    shape: ModelShape
    precision: str
    phases: list[PhaseNeeds] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ parameter counts


def model_config(name_or_path: str):
    """The Hugging Face config of ``name_or_path``: a local directory or run, a built-in hub name, a cached hub config."""
    from transformers import AutoConfig

    if name_or_path == "synthetic":
        raise ConfigError("model 'synthetic' is built inside the run (a tiny model: nothing to plan); "
                          "plan a config whose model.name_or_path is a real model (e.g. configs/plan/*.yaml)")
    path = Path(name_or_path)
    if path.exists():
        return AutoConfig.from_pretrained(resolve_encoder_path(path))
    key = _ALIASES.get(name_or_path.lower(), name_or_path.lower())
    if key in BUILTIN_MODELS:
        model_type, kwargs = BUILTIN_MODELS[key]
        return AutoConfig.for_model(model_type, **kwargs)
    try:
        return AutoConfig.from_pretrained(name_or_path)  # a cached hub config (offline) or the hub itself
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"model '{name_or_path}': not a local directory, not a cached hub model and not one of the built-in sizes "
            f"({', '.join(BUILTIN_MODELS)}); pass a directory holding its config.json ({type(error).__name__})"
        ) from None


def count_parameters(config, name: str = "model") -> ModelShape:
    """Build the encoder of ``config`` on the meta device (no memory, no weights) and count its unique parameters."""
    import torch
    from transformers import AutoModel


    with torch.device("meta"):
        loader = encoder_class(config.model_type)
        model = loader(config) if loader is not None else AutoModel.from_config(config)
    parameters = list(model.parameters())  # unique: tied weights (mT5's shared embedding) count once
    largest = max(sum(p.numel() for p in module.parameters(recurse=False)) for module in model.modules())
    return ModelShape(
        name=name,
        model_type=config.model_type,
        total_params=sum(p.numel() for p in parameters),
        largest_layer_params=largest,
        adafactor_factored_elements=sum(_factored_elements(tuple(p.shape)) for p in parameters),
        hidden=_first_attr(config, "hidden_size", "d_model"),
        layers=_first_attr(config, "num_hidden_layers", "num_layers"),
        heads=_first_attr(config, "num_attention_heads", "num_heads"),
    )


def _factored_elements(shape: tuple[int, ...]) -> int:
    """Adafactor's second moment for one parameter: row + column vectors for a matrix, the full vector otherwise."""
    if len(shape) < 2:
        return math.prod(shape)
    return math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]


def _first_attr(config, *names: str) -> int:
    for attr in names:
        if getattr(config, attr, None) is not None:
            return int(getattr(config, attr))
    raise ConfigError(f"the model config ({config.model_type}) has none of {', '.join(names)}; "
                      "fastxlt plan needs an encoder config with a hidden size, layer count and head count")


# ------------------------------------------------------------------------------------------ memory


def state_bytes(shape: ModelShape, precision: str, optimizer: str, stage: int) -> dict[str, float]:
    """Bytes of each model-state row (see the module docstring) for the whole model, before sharding."""
    params = shape.total_params
    mixed = precision in MIXED_PRECISIONS
    if optimizer == "adamw":
        optimizer_bytes = 8.0 * params
    else:  # Adafactor without momentum: factored second moment at stage 0, flat partitions (unfactored) under ZeRO
        optimizer_bytes = 4.0 * (shape.adafactor_factored_elements if stage == 0 else params)
    return {
        "params": (2.0 if mixed else 4.0) * params,
        "grads": 2.0 * params if mixed else 0.0,
        "fp32_grads": 4.0 * params,
        "master": 4.0 * params if mixed else 0.0,
        "optimizer": optimizer_bytes,
    }


def model_state_bytes(shape: ModelShape, precision: str, optimizer: str, stage: int, offload: str, gpus: int) -> float:
    """Model-state bytes per GPU at ``stage`` with ``offload`` (none, optimizer, optimizer+params) on ``gpus`` GPUs."""
    if precision in MIXED_PRECISIONS and optimizer == "adamw" and stage in (2, 3):
        return float(_deepspeed_estimate(shape, stage, offload, gpus))
    rows = state_bytes(shape, precision, optimizer, stage)
    sharded_by_stage_1 = rows["fp32_grads"] + rows["master"] + rows["optimizer"]
    if stage == 0:
        return sum(rows.values())
    if stage == 1:
        kept = rows["params"] + rows["grads"]
        return kept + (0.0 if offload != "none" else sharded_by_stage_1 / gpus)
    if stage == 2:
        return rows["params"] + (0.0 if offload != "none" else (rows["grads"] + sharded_by_stage_1) / gpus)
    layer = 4.0 * shape.largest_layer_params
    if offload == "optimizer+params":
        return layer
    return layer + (rows["params"] + (0.0 if offload != "none" else sharded_by_stage_1)) / gpus


def _deepspeed_estimate(shape: ModelShape, stage: int, offload: str, gpus: int) -> int:
    """DeepSpeed's own estimate (GPU bytes) for mixed-precision AdamW at stage 2 or 3."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    if stage == 2:
        _, gpu = estimate_zero2_model_states_mem_needs(
            shape.total_params, num_gpus_per_node=gpus, num_nodes=1, cpu_offload=offload != "none",
            additional_buffer_factor=ADDITIONAL_BUFFER_FACTOR)
        return gpu
    _, gpu, _ = estimate_zero3_model_states_mem_needs(
        shape.total_params, shape.largest_layer_params, num_gpus_per_node=gpus, num_nodes=1,
        cpu_offload=offload != "none", cpu_offload_params=offload == "optimizer+params", zero_init=True,
        additional_buffer_factor=ADDITIONAL_BUFFER_FACTOR)
    return gpu


def activation_bytes(shape: ModelShape, batch_size: int, max_length: int, precision: str) -> float:
    """Korthikanti et al. 2022, eq. 2, summed over layers: ``b s h (34 + 5 a s / h)`` bytes a layer in 16 bit."""
    b, s, h, a = batch_size, max_length, shape.hidden, shape.heads
    per_layer = b * s * h * (34 + 5 * a * s / h)
    return shape.layers * per_layer * (1.0 if precision in MIXED_PRECISIONS else 2.0)


# ------------------------------------------------------------------------------------------ the plan


def gpu_counts(gpus_per_node: int, nodes: int) -> list[int]:
    """GPU counts the recommendation tries: powers of two within a node, then whole nodes."""
    counts = [n for n in (2**i for i in range(0, 12)) if n < gpus_per_node]
    return counts + [gpus_per_node * k for k in range(1, nodes + 1)]


def total_need(plan: ModelPlan, phase: PhaseNeeds, stage: int, offload: str, gpus: int) -> float:
    """Model states plus activations per GPU, in bytes, for one phase."""
    states = model_state_bytes(plan.shape, plan.precision, phase.optimizer, stage, offload, gpus)
    return states + activation_bytes(plan.shape, phase.batch_size, phase.max_length, plan.precision)


def recommend(plan: ModelPlan, gpus_per_node: int, nodes: int, gpu_memory_gb: float) -> str:
    """ONE line: the first setting at which every phase fits, without offload if any GPU count allows it, then
    the fewest GPUs, then the lowest stage (offload needs ~16 bytes/parameter of CPU memory and runs every step's
    optimizer update on the CPU, so it is the last resort, not a way to save a GPU)."""
    budget = USABLE_FRACTION * gpu_memory_gb * GIB
    adafactor = any(p.optimizer == "adafactor" for p in plan.phases)
    candidates = [(gpus, stage, offload) for offloaded in (False, True) for gpus in gpu_counts(gpus_per_node, nodes)
                  for stage, offload in SETTINGS if (offload != "none") == offloaded]
    for gpus, stage, offload in candidates:
        if offload != "none" and adafactor:
            continue  # DeepSpeed's CPU offload runs its own AdamW (the config refuses adafactor with offload)
        worst = max(total_need(plan, p, stage, offload, gpus) for p in plan.phases)
        if worst <= budget:
            where = f"{gpus} GPU{'s' if gpus > 1 else ''}" + (
                f" ({math.ceil(gpus / gpus_per_node)} nodes x {gpus_per_node})" if gpus > gpus_per_node else "")
            return (f"recommendation ({plan.shape.name}): ZeRO stage {stage}, offload {offload}, {where}: "
                    f"{worst / GIB:.1f} GiB of {gpu_memory_gb:g} GiB per GPU at the largest phase "
                    f"(deepspeed: zero_stage: {stage}{_offload_fields(offload)})")
    return (f"recommendation ({plan.shape.name}): nothing fits {gpus_per_node * nodes} GPUs of {gpu_memory_gb:g} GiB "
            "(even ZeRO 3 with parameter offload); lower optimization.batch_size or max_length, or add --nodes")


def _offload_fields(offload: str) -> str:
    return {"none": "", "optimizer": ", offload_optimizer: true",
            "optimizer+params": ", offload_optimizer: true, offload_param: true"}[offload]


def phase_needs(config, phase: str) -> PhaseNeeds:
    settings = config.phase_optimization(phase)
    return PhaseNeeds(phase, settings.batch_size, settings.max_length, settings.optimizer)


def build_plans(config_path: str | Path, overrides: list[str] | None = None) -> list[ModelPlan]:
    """One ``ModelPlan`` for an experiment file; one per distinct model of its cells for a grid file."""
    if not Path(config_path).is_file():
        raise ConfigError(f"config file '{config_path}' not found; pass an existing YAML file (see configs/plan/)")
    if has_grid_section(config_path):
        configs = [cell.config for cell in load_grid(config_path, overrides).cells]
    else:
        configs = [load_experiment(config_path, overrides)]
    by_model: dict[str, list] = {}
    for config in configs:
        by_model.setdefault(config.model.name_or_path, []).append(config)
    plans = []
    for name, group in by_model.items():
        shape = count_parameters(model_config(name), name)
        plan = ModelPlan(shape, group[0].deepspeed.precision)
        for phase in ("mlm", "intermediate", "target"):
            needs = [phase_needs(c, phase) for c in group if getattr(c.phases, phase) is not None]
            if needs:  # cells may differ (e.g. batch size on an axis): plan for the most demanding one
                plan.phases.append(max(needs, key=lambda n: (n.batch_size * n.max_length, n.optimizer == "adamw")))
        plans.append(plan)
    return plans


def check_arguments(gpus: int, nodes: int, gpu_memory_gb: float) -> None:
    if gpus < 1:
        raise ConfigError(f"--gpus must be >= 1 (GPUs per node), got {gpus}")
    if nodes < 1:
        raise ConfigError(f"--nodes must be >= 1, got {nodes}")
    if not 0 < gpu_memory_gb < math.inf:  # nan and inf fit every plan: a recommendation of nothing
        raise ConfigError(f"--gpu-memory must be a positive, finite number of GiB per GPU (e.g. 79 for an 80 GB H100), got {gpu_memory_gb}")


def format_plan(plan: ModelPlan, gpus_per_node: int, nodes: int, gpu_memory_gb: float) -> list[str]:
    """The printed table of one model: per phase, per (stage, offload), states and states + activations per GPU."""
    shape, gpus = plan.shape, gpus_per_node * nodes
    lines = [
        f"model {shape.name} ({shape.model_type}): {shape.total_params / 1e6:,.1f}M parameters "
        f"(largest layer {shape.largest_layer_params / 1e6:,.1f}M), {plan.precision}, "
        f"{nodes} node{'s' if nodes > 1 else ''} x {gpus_per_node} GPU{'s' if gpus_per_node > 1 else ''} "
        f"of {gpu_memory_gb:g} GiB",
    ]
    groups: dict[tuple[int, int, str], list[str]] = {}  # phases with the same needs share one table
    for phase in plan.phases:
        groups.setdefault((phase.batch_size, phase.max_length, phase.optimizer), []).append(phase.phase)
    for (batch_size, max_length, optimizer), names in groups.items():
        phase = PhaseNeeds(names[0], batch_size, max_length, optimizer)
        activations = activation_bytes(shape, phase.batch_size, phase.max_length, plan.precision)
        lines.append(f"  phase{'s' if len(names) > 1 else ''} {', '.join(names)}: {phase.optimizer}, micro-batch "
                     f"{phase.batch_size} x {phase.max_length} tokens, activations {activations / GIB:.2f} GiB per GPU")
        lines.append(f"    {'stage':>5}  {'offload':<16} {'states GiB':>10} {'+ activations':>13}  fits  source")
        for stage, offload in _TABLE_ORDER:
            if offload != "none" and phase.optimizer == "adafactor":
                continue
            states = model_state_bytes(shape, plan.precision, phase.optimizer, stage, offload, gpus)
            total = states + activations
            fits = "yes" if total <= USABLE_FRACTION * gpu_memory_gb * GIB else "no"
            source = ("deepspeed" if plan.precision in MIXED_PRECISIONS and phase.optimizer == "adamw"
                      and stage in (2, 3) else "fastxlt.plan")
            lines.append(f"    {stage:>5}  {offload:<16} {states / GIB:>10.2f} {total / GIB:>13.2f}  {fits:<4}  {source}")
    lines.append(recommend(plan, gpus_per_node, nodes, gpu_memory_gb))
    return lines


def run_plan(config_path: str | Path, *, gpus: int = 1, nodes: int = 1, gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB,
             overrides: list[str] | None = None) -> list[str]:
    """Every line `fastxlt plan` prints for ``config_path``."""
    check_arguments(gpus, nodes, gpu_memory_gb)
    lines: list[str] = []
    for plan in build_plans(config_path, overrides):
        lines.extend(format_plan(plan, gpus, nodes, gpu_memory_gb))
    return lines
