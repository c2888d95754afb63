"""One phase of an experiment, drawn from the config once: its phase-store identity and its training plan.

Why one place: the phase store files a trained phase under the hash of its identity
(``fastxlt.experiments.store``), and the training loop trains what its ``PhasePlan`` says. When the two were
built by separate functions from the config, a setting could reach the plan without reaching the key, and a
phase trained one way would be reused as if it had been trained another. Here ``phase_of`` reads the config's
settings for a phase kind into one ``Phase``, and both ``Phase.identity`` and ``Phase.plan`` are built from its
fields, so they cannot disagree. The grid runner (``fastxlt.experiments.grid_runner``), which also runs every
single experiment, plans its phases through it.

The identities themselves are unchanged from the ones stored phases were filed under:
``tests/test_phase_keys.py`` pins the keys of representative configs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastxlt.synthetic as synthetic_package
from fastxlt.config import DeepSpeedConfig, ExperimentConfig, OptimizationConfig, PhaseConfig
from fastxlt.experiments.store import key_of, model_identity, phase_identity
from fastxlt.tasks.base import get_task
from fastxlt.training.loop import PhasePlan

SYNTHETIC_MODEL = "synthetic"  # model.name_or_path of the embedded default: the encoder is generated, not loaded


@dataclass(frozen=True)
class Phase:
    """What one phase trains, read from the config once; its identity and its plan are both built from it."""

    kind: str
    phase: PhaseConfig
    optimization: OptimizationConfig
    seed: int
    deepspeed: DeepSpeedConfig
    kernels: str
    pooling: str
    data_dirs: dict[str, str]
    report_to: list[str]  # where the curves go: never part of the identity (it cannot change the weights)

    def identity(self, parent: dict[str, Any]) -> dict[str, Any]:
        """The phase-store identity of this phase started from ``parent`` (the identity of its encoder)."""
        return phase_identity(
            self.kind, parent, self.phase, self.optimization, seed=self.seed, deepspeed=self.deepspeed,
            kernels=self.kernels, pooling=self.pooling, data_dirs=self.data_dirs,
        )

    def plan(
        self, *, phase_dir: Path, init_encoder: str, tokenizer: str, run_name: str, name: str | None = None
    ) -> PhasePlan:
        """The training plan of this phase; ``name`` labels its logs (default: the phase kind)."""
        return PhasePlan(
            name=name or self.kind, tasks=[get_task(task) for task in self.phase.tasks], phase=self.phase,
            optimization=self.optimization, init_encoder=init_encoder, tokenizer=tokenizer, phase_dir=phase_dir,
            seed=self.seed, deepspeed=self.deepspeed, data_dirs=dict(self.data_dirs), kernels=self.kernels,
            pooling=self.pooling, report_to=list(self.report_to), run_name=run_name,
        )


def phase_of(config: ExperimentConfig, kind: str, *, seed: int | None = None, snapshots: list | None = None) -> Phase:
    """The ``kind`` phase (mlm, intermediate, target) of ``config``.

    ``seed`` defaults to the config's (a grid trains its shared mlm phase with the base seed); ``snapshots``,
    when given, replaces the phase's list (a grid saves every snapshot any of its cells starts from). Snapshots
    only add files beside a phase, so they are not part of its identity.
    """
    phase = getattr(config.phases, kind)
    if snapshots is not None:
        phase = dataclasses.replace(phase, snapshots=list(snapshots))
    return Phase(
        kind=kind, phase=phase, optimization=config.phase_optimization(kind),
        seed=config.seed if seed is None else seed, deepspeed=config.deepspeed, kernels=config.kernels,
        pooling=config.model.pooling, data_dirs=dict(config.data), report_to=config.logging.integrations(),
    )


def base_identity(config: ExperimentConfig, base_seed: int) -> dict[str, Any]:
    """The identity of the pretrained encoder: a model (hub name, or a directory's fingerprint), or the
    embedded default's generated one (its seed and the source of the generator)."""
    model = config.model
    if model.name_or_path != SYNTHETIC_MODEL:
        return {"pretrained": model_identity(model.name_or_path), "tokenizer": model.tokenizer}
    return {"pretrained": "synthetic", "seed": base_seed, "source": synthetic_source_digest()}


def intermediate_identity(config: ExperimentConfig, base_seed: int) -> dict[str, Any]:
    """The intermediate phase's identity, as a grid cell will compute it, without training anything."""
    parent = base_identity(config, base_seed)
    if config.phases.mlm is not None:
        parent = {"phase": "mlm", "key": key_of(phase_of(config, "mlm", seed=base_seed).identity(parent))}
    return phase_of(config, "intermediate").identity(parent)


@functools.lru_cache(maxsize=1)
def synthetic_source_digest() -> str:
    """The synthetic world is code: a changed generator must not reuse assets built by the old one."""
    digest = hashlib.sha256()
    for file in sorted(Path(synthetic_package.__file__).parent.glob("*.py")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
