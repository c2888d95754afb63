"""Typed experiment config: YAML in, validated dataclasses out.

A config names the model, the phases (an optional MLM warm-up, intermediate, target, evaluate), the
optimisation settings (DESIGN.md defaults: AdamW lr 1e-5, weight decay 0.01, 10% linear warm-up,
batch 4 x grad-accum 8, max length 256), the DeepSpeed section and the run directory. Every field is
checked at load time; an invalid file fails with the field path and what is wrong, e.g.
``config.yaml: phases.target.optimization.lr: expected a number, got 'fast'``.

This module is pure data and parsing (docs/design.md, layer 2): it imports no task, model or
perturbation. The checks that need them (task names against the registry, perturbation specs, what the
encoder family allows) run in :func:`fastxlt.experiments.preflight.experiment_from_dict` and
:func:`~fastxlt.experiments.preflight.load_experiment`, which every command uses to read a config.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fastxlt.errors import ConfigError

SAMPLERS = ("proportional", "temperature", "uniform")
PRECISIONS = ("fp32", "bf16", "fp16", "bf16_autocast", "auto")
# the engine holds fp32 weights and gradients (auto resolves to fp32 or bf16_autocast: fastxlt/training/precision.py)
FP32_WEIGHT_PRECISIONS = ("fp32", "bf16_autocast", "auto")
KERNEL_BACKENDS = ("auto", "triton", "torch", "none")
# Hugging Face Trainer's ``report_to`` names that fastxlt understands ("all": every one of them that is installed).
REPORT_TO = ("none", "all", "tensorboard", "wandb")


@dataclass
class OptimizationConfig:
    """Optimiser and loop settings; a phase's own section overrides the experiment-wide one field by field."""

    # adamw: the reference (linear warm-up and decay); adafactor: T5's recipe at a constant lr (1e-3 for mT5; no
    # relative step, no parameter scaling, no warm-up: warmup_ratio does not apply). See fastxlt/training/optim.py.
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_size: int = 4
    grad_accum: int = 8
    max_length: int = 256
    epochs: float = 3.0
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    max_grad_norm: float = 1.0
    eval_every: int | None = None  # optimizer steps between English dev evaluations (None: once per epoch)
    patience: int | None = None  # evaluations without improvement before stopping early (None: never stop early)
    checkpoint_every: int | None = None  # optimizer steps between resumable checkpoints (None: at each evaluation)
    keep_checkpoints: int = 2
    eval_batch_tokens: int | None = None  # token budget of an English dev batch (None: 2048 on a CPU, 16384 on a GPU)
    dropout: float | None = None  # override the encoder's hidden/attention dropout (None: keep the model's)
    freeze_embeddings: bool = False  # keep the word embeddings fixed (XLM-R's are 2/3 of base's weights): faster, less memory
    # torch.optim.AdamW(fused=True): one kernel for all parameters instead of a Python loop over them; the same update
    # to fp32 rounding (a test compares them), ~10x faster on a CPU at XLM-R's 250k-row embedding matrix (issue 13)
    fused_adamw: bool = False
    # Sort the examples of this many consecutive micro-batches of a task by length, cut them into batches again and
    # shuffle those: the same examples in the same stretch of training, with far less padding (0: off; issue 13)
    group_by_length: int = 0
    # The word embeddings' gradient as the batch's rows added into one buffer kept for the whole phase (zeroing only
    # the rows the previous step touched) instead of a fresh zero-filled 250k-row matrix every step: bit-identical
    # weights, ~25 % faster steps on a 2-core CPU, one embedding-sized buffer held between steps. ZeRO stage 0 with
    # fp32 weights (precision fp32 or bf16_autocast) only (fastxlt/training/embedding_grads.py; issue 13).
    sparse_embedding_grads: bool = False
    # Dropout on a CPU by a fused C++ kernel (Philox keep masks made and applied in one pass) instead of torch's
    # per-element Bernoulli sampler: the same keep probability, ~3x faster, but another random stream, so other
    # (equally distributed) masks and weights; nothing changes on a GPU (fastxlt/training/dropout.py; issue 13)
    fast_dropout: bool = False

    def validate(self, path: str) -> None:
        _require(self.lr > 0, f"{path}.lr", f"must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, f"{path}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(0 <= self.warmup_ratio < 1, f"{path}.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        for name in ("batch_size", "grad_accum", "max_length", "keep_checkpoints"):
            value = getattr(self, name)
            _require(value >= 1, f"{path}.{name}", f"must be >= 1, got {value}")
        for name in ("max_steps", "eval_every", "patience", "checkpoint_every", "eval_batch_tokens"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"{path}.{name}", f"must be >= 1 or null, got {value}")
        _require(self.epochs > 0, f"{path}.epochs", f"must be > 0, got {self.epochs}")
        _require(self.group_by_length >= 0, f"{path}.group_by_length", f"must be >= 0 (0: off), got {self.group_by_length}")
        _require(
            not self.fused_adamw or self.optimizer == "adamw",
            f"{path}.fused_adamw",
            f"fuses AdamW's update, but the optimizer is {self.optimizer}; set fused_adamw: false",
        )
        _require(self.max_grad_norm >= 0, f"{path}.max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        _require(
            self.dropout is None or 0 <= self.dropout < 1, f"{path}.dropout", f"must be in [0, 1), got {self.dropout}"
        )


@dataclass
class DeepSpeedConfig:
    """The DeepSpeed engine every phase runs on (ZeRO stage 0 = plain data parallelism)."""

    zero_stage: int = 0
    # fp32; bf16 / fp16: DeepSpeed's own modes (16-bit weights with fp32 master copies); bf16_autocast: fp32
    # weights, gradients and optimizer, with torch.autocast running the forward's products and attention in bf16
    # (the faster of the two bf16 choices on AMX CPUs: benchmarks/train_throughput.py); auto: bf16_autocast where
    # this machine's bf16 products are measured faster than fp32 ones, fp32 elsewhere (fastxlt/training/precision.py)
    precision: Literal["fp32", "bf16", "fp16", "bf16_autocast", "auto"] = "fp32"
    offload_optimizer: bool = False
    offload_param: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # merged verbatim into the generated DeepSpeed config

    def validate(self, path: str) -> None:
        _require(self.zero_stage in (0, 1, 2, 3), f"{path}.zero_stage", f"must be 0, 1, 2 or 3, got {self.zero_stage}")
        _require(
            not self.offload_param or self.zero_stage == 3,
            f"{path}.offload_param",
            "parameter offload needs zero_stage 3",
        )
        _require(
            not self.offload_optimizer or self.zero_stage >= 1,
            f"{path}.offload_optimizer",
            "optimizer offload needs zero_stage >= 1",
        )


@dataclass
class ModelConfig:
    """The pretrained encoder: a hub name, a local Hugging Face directory, or ``synthetic`` (the embedded tiny XLM-R)."""

    name_or_path: str = "xlm-roberta-large"
    tokenizer: str | None = None  # defaults to name_or_path
    # What sequence-level heads read: <s> (cls, XLM-R's reference) or the token mean. Left out, the encoder family's:
    # cls for XLM-R-like encoders, mean for (m)T5, which has no CLS token (cls is refused there; fastxlt/models/family.py).
    pooling: Literal["cls", "mean"] | None = None


ADVERSARIAL_METHODS = ("freelb", "pgd", "smart", "r3f")

# Method-specific defaults, each from the method's published code (see fastxlt/training/adversarial.py):
# FreeLB and vanilla PGD from zhuchen03/FreeLB fairseq-RoBERTa/launch/{FreeLB,VanillaPGD}/*mnli-fp32-clip.sh (the
# RoBERTa-large MNLI runs), SMART from namisan/mt-dnn train.py (--adv_*), R3F from fairseq's
# sentence_prediction_r3f criterion and the paper's uniform noise.
ADVERSARIAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "freelb": {"steps": 2, "step_size": 0.1, "init_magnitude": 0.1, "max_norm": 0.3, "norm": "l2"},
    "pgd": {"steps": 2, "step_size": 0.1, "init_magnitude": 0.2, "max_norm": 0.2, "norm": "l2"},
    "smart": {"steps": 1, "step_size": 1e-5, "noise": 1e-5, "max_norm": 1.0, "norm": "linf", "weight": 1.0},
    "r3f": {"noise": 1e-5, "noise_type": "uniform", "weight": 1.0},
}


@dataclass
class AdversarialConfig:
    """Adversarial training on the input embeddings of one phase (``adversarial: {method: freelb}``).

    Unset fields take the method's published defaults (``ADVERSARIAL_DEFAULTS``), so a phase's identity is the
    same whether a default is written out or not; a field the method does not use is refused.
    """

    method: Literal["freelb", "pgd", "smart", "r3f"] | None = None
    steps: int | None = None  # ascent steps (freelb, pgd, smart)
    step_size: float | None = None  # ascent step on the normalised gradient
    init_magnitude: float | None = None  # random start (freelb, pgd); 0 = start from zero
    max_norm: float | None = None  # radius of the ball (per example; smart: per token, inf-norm); 0 = unbounded
    norm: Literal["l2", "linf"] | None = None  # the ball's norm (smart: linf only)
    noise: float | None = None  # smart: std of the normal start; r3f: scale of the noise
    noise_type: Literal["uniform", "normal"] | None = None  # r3f
    weight: float | None = None  # weight of the smoothness regulariser (smart, r3f)

    def __post_init__(self) -> None:
        for name, value in ADVERSARIAL_DEFAULTS.get(self.method or "", {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self, path: str) -> None:
        _require(self.method is not None, f"{path}.method", f"name the method: {', '.join(ADVERSARIAL_METHODS)}")
        used = ADVERSARIAL_DEFAULTS[self.method]
        for spec in dataclasses.fields(self):
            if spec.name != "method" and spec.name not in used and getattr(self, spec.name) is not None:
                _require(False, f"{path}.{spec.name}", f"not used by {self.method}; its fields: {', '.join(used)}")
        if "steps" in used:
            _require(self.steps >= 1, f"{path}.steps", f"must be >= 1, got {self.steps}")
            _require(self.step_size > 0, f"{path}.step_size", f"must be > 0, got {self.step_size}")
            _require(self.max_norm >= 0, f"{path}.max_norm", f"must be >= 0 (0 = unbounded), got {self.max_norm}")
        if "init_magnitude" in used:
            _require(self.init_magnitude >= 0, f"{path}.init_magnitude", f"must be >= 0, got {self.init_magnitude}")
        if "noise" in used:
            _require(self.noise > 0, f"{path}.noise", f"must be > 0, got {self.noise}")
            _require(self.weight >= 0, f"{path}.weight", f"must be >= 0, got {self.weight}")
        if self.method == "smart":
            _require(self.norm == "linf", f"{path}.norm", "smart projects in the inf-norm only (as its published code)")


@dataclass
class PhaseConfig:
    """One training phase: its tasks, how they are mixed, and optimisation overrides."""

    tasks: list[str] = field(default_factory=list)
    sampler: Literal["proportional", "temperature", "uniform"] = "proportional"
    sampling_cap: int | None = 131072  # examples-proportional mixing caps each task's size at this many examples
    temperature: float = 2.0
    # Target-data size studies: N training examples of each task (or a fraction of them), drawn as the first N of
    # one permutation seeded by subset_seed, so a smaller set is always a subset of a larger one. With several
    # train_languages, N is the total over languages, split equally (parallel files: different items per language).
    train_examples: int | None = None
    train_fraction: float | None = None
    subset_seed: int = 0
    # Save the encoder at these optimizer steps (ints) or fractions of the planned steps (floats in (0, 1]);
    # each snapshot is a starting point for later phases (intermediate-training duration studies).
    snapshots: list[int | float] = field(default_factory=list)
    train_languages: list[str] | None = None  # default: English (the task's train_language); masked LM: every language
    train_split: str = "train"  # e.g. "validation" to train on a dev set when no training data is at hand
    dev_holdout: int | None = None  # hold out N random (fixed) training examples as the English dev set (instead of dev_split)
    optimization: dict[str, Any] = field(default_factory=dict)
    adversarial: AdversarialConfig | None = None  # adversarial training on the input embeddings (null: standard)

    def validate(self, path: str, *, min_tasks: int = 1) -> None:
        _require(len(self.tasks) >= min_tasks, f"{path}.tasks", f"needs at least {min_tasks} task")
        if self.adversarial is not None:
            self.adversarial.validate(f"{path}.adversarial")
        _require(
            self.sampling_cap is None or self.sampling_cap >= 1, f"{path}.sampling_cap", "must be >= 1 or null"
        )
        _require(self.temperature > 0, f"{path}.temperature", f"must be > 0, got {self.temperature}")
        _require(
            self.train_examples is None or self.train_examples >= 1, f"{path}.train_examples", "must be >= 1 or null"
        )
        _require(self.dev_holdout is None or self.dev_holdout >= 1, f"{path}.dev_holdout", "must be >= 1 or null")
        _require(
            self.train_fraction is None or 0 < self.train_fraction <= 1,
            f"{path}.train_fraction", f"must be in (0, 1] or null, got {self.train_fraction}",
        )
        _require(
            self.train_fraction is None or self.train_examples is None,
            f"{path}.train_fraction", "set train_examples or train_fraction, not both",
        )
        for index, point in enumerate(self.snapshots):
            valid = (isinstance(point, int) and point >= 1) or (isinstance(point, float) and 0 < point <= 1)
            _require(valid, f"{path}.snapshots[{index}]", f"must be a step >= 1 or a fraction in (0, 1], got {point!r}")


@dataclass
class EvaluateConfig:
    """Zero-shot evaluation: which tasks (default: the target tasks), languages and split."""

    tasks: list[str] | None = None
    languages: str | list[str] = "all"
    split: str = "test"
    batch_tokens: int | None = None  # token budget of a padded batch (None: 2048 on a CPU, 16384 on a GPU)
    backend: Literal["torch", "onnx"] = "torch"  # onnx: graphs exported once per model, run by ONNX Runtime
    quantize: Literal["int8"] | None = None  # int8 dynamic quantisation (CPU; needs backend onnx)
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # torch backend; auto: bf16 on an AMX CPU or a bf16 GPU
    # Score a file whose gold is one value throughout (refused by default: the sign of withheld test labels,
    # see fastxlt/tasks/sanity.py); set true only when the labels are known to be real.
    allow_constant_labels: bool = False
    # Perturbed evaluation after the clean pass (pair classification): NAME[:strength] specs, see
    # fastxlt/robustness/registry.py, e.g. ["char:0.1", "word_order:0.3", "code_switch_to_en:0.3", "pgd:1.0"];
    # seeded by the experiment's seed. muse_dir: the MUSE folder (dictionaries/en-XX.txt) for code-switching.
    perturbations: list[str] = field(default_factory=list)
    muse_dir: str | None = None
    # Evaluate the first N examples of each language (XNLI's and PAWS-X's test sets are parallel, so every
    # language keeps the same items): a cheaper, still paired, evaluation for CPU studies. None: all of them.
    max_examples: int | None = None


@dataclass
class LoggingConfig:
    """Where training curves go besides ``phase.json``: HF Trainer's ``report_to`` names (default: nowhere).

    Operational, like the checkpoint cadence: it never enters a phase's store key (``fastxlt.experiments.store``).
    """

    report_to: str | list[str] = field(default_factory=list)

    def validate(self, path: str) -> None:
        names = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        for name in names:
            _require(name in REPORT_TO, f"{path}.report_to", f"unknown integration {name!r}; known: {', '.join(REPORT_TO)}")
        _require("none" not in names or len(names) == 1, f"{path}.report_to", "'none' cannot be listed with others")

    def integrations(self) -> list[str]:
        """The concrete integrations asked for ("all" expands in ``fastxlt.training.tracking``)."""
        names = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        return [name for name in dict.fromkeys(names) if name != "none"]


@dataclass
class PhasesConfig:
    mlm: PhaseConfig | None = None
    intermediate: PhaseConfig | None = None
    target: PhaseConfig | None = None
    evaluate: EvaluateConfig | None = None


@dataclass
class ExperimentConfig:
    """A whole experiment: the X-STILTs phases for one model, written into one run directory."""

    name: str = "experiment"
    seed: int = 42
    run_dir: str = "runs/experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: dict[str, str] = field(default_factory=dict)  # task name -> directory of local files in the original layout
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    kernels: Literal["auto", "triton", "torch", "none"] = "auto"
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    compare_without_intermediate: bool = False  # also fine-tune the target from the plain pretrained encoder
    source: str | None = None  # the file this config was read from (set by the loader)

    def validate(self) -> None:
        self.optimization.validate("optimization")
        self.deepspeed.validate("deepspeed")
        self.logging.validate("logging")
        phases = self.phases
        _require(
            any(getattr(phases, name) is not None for name in ("mlm", "intermediate", "target")),
            "phases",
            "needs at least one of mlm, intermediate, target",
        )
        for name in ("mlm", "intermediate", "target"):
            phase = getattr(phases, name)
            if phase is not None:
                phase.validate(f"phases.{name}")
                settings = self.phase_optimization(name)
                settings.validate(f"phases.{name}.optimization")
                _require(
                    not settings.sparse_embedding_grads or (
                        self.deepspeed.zero_stage == 0 and self.deepspeed.precision in FP32_WEIGHT_PRECISIONS),
                    "optimization.sparse_embedding_grads",
                    f"(phase {name}) needs deepspeed zero_stage 0 and precision fp32 or bf16_autocast (ZeRO and "
                    f"DeepSpeed's 16-bit modes keep gradient buffers of their own), got zero_stage "
                    f"{self.deepspeed.zero_stage}, precision {self.deepspeed.precision}; set sparse_embedding_grads: false",
                )
                _require(
                    settings.optimizer != "adafactor" or not self.deepspeed.offload_optimizer,
                    "deepspeed.offload_optimizer",
                    f"optimizer offload runs DeepSpeed's CPU AdamW, but phase {name} uses adafactor; turn offload off or use adamw",
                )
        if phases.evaluate is not None:
            _require(
                phases.evaluate.batch_tokens is None or phases.evaluate.batch_tokens >= 1,
                "phases.evaluate.batch_tokens",
                "must be >= 1 or null",
            )
            _require(
                phases.evaluate.max_examples is None or phases.evaluate.max_examples >= 1,
                "phases.evaluate.max_examples",
                "must be >= 1 or null",
            )
            _require(
                phases.evaluate.precision != "bf16" or phases.evaluate.backend == "torch",
                "phases.evaluate.precision",
                "bf16 runs on the torch backend; with backend onnx use quantize: int8",
            )
            _require(
                phases.evaluate.quantize is None or phases.evaluate.backend == "onnx",
                "phases.evaluate.quantize",
                "int8 runs in ONNX Runtime; set phases.evaluate.backend: onnx",
            )
            _require(
                phases.evaluate.tasks is not None or phases.target is not None,
                "phases.evaluate.tasks",
                "name the tasks to evaluate (there is no target phase to default to)",
            )

    def phase_optimization(self, phase_name: str) -> OptimizationConfig:
        """The experiment-wide optimisation settings with the phase's overrides applied."""
        phase = getattr(self.phases, phase_name)
        overrides = dict(phase.optimization) if phase is not None else {}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(OptimizationConfig)}
        if unknown:
            raise ConfigError(
                f"{self._where()}phases.{phase_name}.optimization.{sorted(unknown)[0]}: unknown field; "
                f"known: {', '.join(f.name for f in dataclasses.fields(OptimizationConfig))}"
            )
        merged = dataclasses.asdict(self.optimization) | overrides
        return _build(OptimizationConfig, merged, f"phases.{phase_name}.optimization", self._where())

    def evaluation_tasks(self) -> list[str]:
        evaluate = self.phases.evaluate
        if evaluate is None:
            return []
        if evaluate.tasks is not None:
            return list(evaluate.tasks)
        return list(self.phases.target.tasks) if self.phases.target else []

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source", None)
        return data

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""


def _require(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{path}: {message}")


# ---------------------------------------------------------------- generic typed construction


def _build(cls: type, data: Any, path: str, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types, with errors that name the field path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}{path or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise ConfigError(
            f"{where}{_join(path, str(unknown[0]))}: unknown field; known fields: {', '.join(n for n in fields if n != 'source')}"
        )
    values = {name: _coerce(hints[name], value, _join(path, name), where) for name, value in data.items()}
    return cls(**values)


def _coerce(annotation: Any, value: Any, path: str, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, path, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}{path}: {_describe(value)} does not fit {_type_name(annotation)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}{path}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}{path}: expected a list, got {_describe(value)}")
        return [_coerce(args[0], item, f"{path}[{i}]", where) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}{path}: expected a mapping, got {_describe(value)}")
        return {str(k): _coerce(args[1], v, _join(path, str(k)), where) for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, path, where)
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}{path}: expected true or false, got {_describe(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}{path}: expected an integer, got {_describe(value)}")
        return value
    if annotation is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-5 (no dot) as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}{path}: expected a number, got {_describe(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}{path}: expected a string, got {_describe(value)}")
        return str(value)
    raise TypeError(f"unsupported config annotation {annotation!r} at {path}")


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return repr(value)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------- public API


def config_from_dict(data: dict[str, Any], *, source: str | None = None) -> ExperimentConfig:
    where = f"{source}: " if source else ""
    config = _build(ExperimentConfig, data, "", where)
    config.source = source
    try:
        config.validate()
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(where) else f"{where}{message}") from None
    return config


def read_yaml_file(path: Path) -> Any:
    """A config file's YAML, with one-line errors for a missing file or invalid YAML (and its line)."""
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found; pass an existing YAML file (see configs/)")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line}: {getattr(error, 'problem', error)}") from None


def read_config_data(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A config file's fields as plain data, with ``key.sub=value`` overrides applied (values parsed as YAML);
    ``fastxlt.experiments.preflight.load_experiment`` turns them into a checked ``ExperimentConfig``."""
    path = Path(path)
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    for override in overrides or []:
        apply_override(data, override)
    return data


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` to a nested mapping (the value is parsed as YAML: 3, 1e-5, true, [en, de])."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' must look like key.path=value")
    key, raw = override.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{override}' has an empty key")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{override}': '{part}' is not a mapping")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
        raise ConfigError(
            f"override '{override}': the value is not valid YAML ({problem}); "
            "fix it (values are read as YAML: 3, 1e-5, true, [en, de], 'a string')"
        ) from None


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
