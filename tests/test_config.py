"""Config loading: valid files become typed objects; invalid ones fail with the field path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastxlt.cli import default_config_path
from fastxlt.config import ExperimentConfig, apply_override
from fastxlt.experiments.preflight import experiment_from_dict, load_experiment
from fastxlt.errors import ConfigError

MINIMAL = {
    "name": "t",
    "run_dir": "runs/t",
    "model": {"name_or_path": "xlm-roberta-large"},
    "data": {"xnli": "../shared/data/xnli"},
    "phases": {
        "intermediate": {"tasks": ["mnli"]},
        "target": {"tasks": ["xnli"], "optimization": {"lr": 2e-5}},
        "evaluate": {"languages": "all"},
    },
}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_minimal_config_is_typed_and_has_the_recipe_defaults(tmp_path):
    config = load_experiment(write(tmp_path, MINIMAL))
    assert isinstance(config, ExperimentConfig)
    assert config.optimization.lr == 1e-5 and config.optimization.weight_decay == 0.01
    assert config.optimization.warmup_ratio == 0.1
    assert (config.optimization.batch_size, config.optimization.grad_accum, config.optimization.max_length) == (4, 8, 256)
    target = config.phase_optimization("target")
    assert target.lr == 2e-5 and target.batch_size == 4  # override applied field by field
    assert config.phase_optimization("intermediate").lr == 1e-5
    assert config.evaluation_tasks() == ["xnli"]
    assert config.deepspeed.zero_stage == 0 and config.deepspeed.precision == "fp32"


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    config = load_experiment(write(tmp_path, "phases:\n  target:\n    tasks: [xnli]\noptimization:\n  lr: 1e-5\n"))
    assert config.optimization.lr == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["optimization"].update(lr="fast"), "optimization.lr: expected a number, got 'fast'"),
        (lambda d: d["optimization"].update(lr=-1), "optimization.lr: must be > 0"),
        (lambda d: d["optimization"].update(batch_size=2.5), "optimization.batch_size: expected an integer"),
        (lambda d: d["deepspeed"].update(zero_stage=4), "deepspeed.zero_stage: must be 0, 1, 2 or 3"),
        (lambda d: d["deepspeed"].update(precision="fp8"), "deepspeed.precision: must be one of fp32, bf16, fp16, bf16_autocast"),
        (lambda d: d["optimization"].update(group_by_length=-1), "optimization.group_by_length: must be >= 0"),
        (lambda d: d["optimization"].update(optimizer="adafactor", fused_adamw=True),
         "optimization.fused_adamw: fuses AdamW's update, but the optimizer is adafactor"),
        (lambda d: (d["optimization"].update(sparse_embedding_grads=True), d["deepspeed"].update(zero_stage=2)),
         "optimization.sparse_embedding_grads: (phase intermediate) needs deepspeed zero_stage 0"),
        (lambda d: (d["optimization"].update(sparse_embedding_grads=True), d["deepspeed"].update(precision="bf16")),
         "optimization.sparse_embedding_grads: (phase intermediate) needs deepspeed zero_stage 0 and precision fp32 or"),
        (lambda d: d["phases"]["target"].update(tasks=["nope"]), "phases.target.tasks[0]: unknown task 'nope'"),
        (lambda d: d["phases"]["target"].update(sampler="random"), "phases.target.sampler: must be one of"),
        (lambda d: d["phases"]["target"]["optimization"].update(lrr=1), "phases.target.optimization.lrr: unknown field"),
        (lambda d: d.update(modle={}), "modle: unknown field"),
        (lambda d: d["phases"].update(target="xnli"), "phases.target: expected a mapping"),
        (lambda d: d.update(seed="abc"), "seed: expected an integer"),
        (lambda d: d["data"].update(xnlii="x"), "data.xnlii: unknown task"),
    ],
)
def test_invalid_fields_name_their_path(tmp_path, mutate, expected):
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    data.setdefault("optimization", {})
    data.setdefault("deepspeed", {})
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    message = str(error.value)
    assert expected in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_experiment(write(tmp_path, "phases: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_experiment(write(tmp_path, "- a\n- b\n"))


def test_a_config_needs_a_training_phase():
    with pytest.raises(ConfigError, match="phases: needs at least one of"):
        experiment_from_dict({"phases": {"evaluate": {"tasks": ["xnli"]}}})


def test_overrides_are_parsed_as_yaml(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    apply_override(data, "optimization.lr=3e-5")
    apply_override(data, "phases.evaluate.languages=[de, fr]")
    apply_override(data, "deepspeed.zero_stage=2")
    config = experiment_from_dict(data)
    assert config.optimization.lr == pytest.approx(3e-5)
    assert config.phases.evaluate.languages == ["de", "fr"]
    assert config.deepspeed.zero_stage == 2
    with pytest.raises(ConfigError, match="must look like"):
        apply_override(data, "no-equals-sign")


def test_shipped_configs_are_valid():
    root = Path(__file__).resolve().parents[1]
    paths = [default_config_path(), *sorted((root / "configs").rglob("*.yaml"))]
    assert len(paths) >= 2
    from fastxlt.experiments.grid import has_grid_section, load_grid

    for path in paths:
        if has_grid_section(path):
            assert load_grid(path).cells  # every cell is a valid experiment config
        else:
            load_experiment(path)
