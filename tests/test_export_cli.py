"""The command line around export: ``fastxlt export`` then ``fastxlt-eval --backend onnx`` on a tiny run
directory (graph exported once and reused, same predictions as the torch backend, results cached per
backend), the ``evaluate`` config section, and the one-line errors for wrong or missing models."""

from __future__ import annotations

import pytest

from fastxlt.cli import eval_main, main
from fastxlt.experiments.preflight import experiment_from_dict
from fastxlt.errors import ConfigError
from fastxlt.tasks.base import get_task
from fastxlt.utils.io import read_json

TASK = "synth-para"


def test_export_then_evaluate_with_onnx_matches_torch(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["export", "--model", str(tiny_run), "--task", TASK, "--max-length", "64"]) == 0
    assert "exported" in capsys.readouterr().out
    graph_dir = tiny_run / "target" / "baseline" / "model" / "onnx" / f"{TASK}-fp32"
    manifest = read_json(graph_dir / "manifest.json")
    assert manifest["task"] == TASK and manifest["precision"] == "fp32" and manifest["parity"]["max_abs"] <= 1e-4
    exported_at = (graph_dir / "model.onnx").stat().st_mtime_ns

    languages = ",".join(get_task(TASK).languages[:2])
    common = ["--model", str(tiny_run), "--task", TASK, "--languages", languages, "--max-length", "64", "--batch-tokens", "2048"]
    assert eval_main([*common, "--backend", "onnx", "--output", str(tmp_path / "onnx")]) == 0
    assert (graph_dir / "model.onnx").stat().st_mtime_ns == exported_at  # the exported graph was reused
    assert eval_main([*common, "--output", str(tmp_path / "torch")]) == 0
    for language in languages.split(","):
        onnx = read_json(tmp_path / "onnx" / "eval" / "baseline" / TASK / f"{language}.json")
        torch_result = read_json(tmp_path / "torch" / "eval" / "baseline" / TASK / f"{language}.json")
        assert onnx["predictions"] == torch_result["predictions"] and onnx["scores"] == torch_result["scores"]
        assert onnx["model"].endswith("#onnx-fp32") and not torch_result["model"].endswith("fp32")

    # Cached results are per backend: the torch run in the onnx output directory recomputes and re-keys them.
    assert eval_main([*common, "--output", str(tmp_path / "onnx")]) == 0
    first = languages.split(",")[0]
    assert not read_json(tmp_path / "onnx" / "eval" / "baseline" / TASK / f"{first}.json")["model"].endswith("fp32")

    assert main(["export", "--model", str(tiny_run), "--task", TASK, "--max-length", "64"]) == 0
    assert "reused" in capsys.readouterr().out


def test_wrong_or_missing_models_give_one_line_errors(tiny_run, tmp_path, capsys):
    cases = [
        (main, ["export", "--model", str(tmp_path / "missing"), "--task", TASK], "does not exist"),
        (main, ["export", "--model", str(tmp_path), "--task", TASK], "holds no trained fastxlt model"),
        (eval_main, ["--model", str(tiny_run), "--task", TASK, "--quantize", "int8"], "needs the onnx backend"),
        (main, ["export", "--model", str(tiny_run), "--task", "no-such-task"], "unknown task 'no-such-task'"),
    ]
    for entry, argv, message in cases:
        assert entry(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("fastxlt: error:") and message in err and "\n" not in err, err


def test_evaluate_section_takes_backend_and_quantize():
    base = {"phases": {"target": {"tasks": ["xnli"]}, "evaluate": {"backend": "onnx", "quantize": "int8"}}}
    config = experiment_from_dict(base)
    assert config.phases.evaluate.backend == "onnx" and config.phases.evaluate.quantize == "int8"
    with pytest.raises(ConfigError, match="phases.evaluate.quantize: int8 runs in ONNX Runtime"):
        experiment_from_dict({"phases": {"target": {"tasks": ["xnli"]}, "evaluate": {"quantize": "int8"}}})
    with pytest.raises(ConfigError, match="phases.evaluate.backend: must be one of torch, onnx"):
        experiment_from_dict({"phases": {"target": {"tasks": ["xnli"]}, "evaluate": {"backend": "tensorrt"}}})
