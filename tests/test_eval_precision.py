"""Evaluation precision and batch size: 'auto' follows the hardware, bf16 evaluation stays faithful to
fp32 for every task family, the device's default token budget predicts like any explicit one, and the
command line / config keep bf16 results apart from fp32 ones and refuse bf16 on the ONNX backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_export_cli import TASK
from test_export_onnx import FAMILIES, MAX_LENGTH, phase_model, registered, trained_paraphrase_model

from fastxlt.cli import eval_main
from fastxlt.experiments.preflight import experiment_from_dict
from fastxlt.errors import ConfigError
from fastxlt.inference import precision as eval_precision
from fastxlt.inference.predict import predict, score_examples
from fastxlt.models.encoder import load_encoder, load_tokenizer
from fastxlt.models.transfer import TransferModel, load_transfer_model
from fastxlt.tasks.base import get_task
from fastxlt.tasks.features import ops_for
from fastxlt.utils import hardware
from fastxlt.utils.io import read_json

CPU = torch.device("cpu")


def test_auto_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    assert eval_precision.resolve_eval_precision("auto", CPU) == "fp32"  # bf16 is emulated, slower than fp32
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_vnni", "amx_bf16", "amx_tile"}))
    assert eval_precision.resolve_eval_precision("auto", CPU) == "bf16"
    assert eval_precision.resolve_eval_precision("fp32", CPU) == "fp32"
    assert eval_precision.resolve_eval_precision("bf16", CPU) == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        eval_precision.resolve_eval_precision("fp8", CPU)


def test_default_token_budget_is_cache_sized_on_cpu_and_large_on_gpu():
    assert eval_precision.default_batch_tokens(CPU) == 2048
    assert eval_precision.default_batch_tokens(torch.device("cuda")) == 16384  # a device object only; no GPU needed


def test_cast_returns_the_model_in_the_dtype_and_in_eval_mode(tiny_encoder):
    model = TransferModel(load_encoder(tiny_encoder), [get_task(TASK)]).train()
    cast = eval_precision.cast_for_precision(model, "bf16")
    assert not cast.training and {p.dtype for p in cast.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in eval_precision.cast_for_precision(cast, "fp32").parameters()} == {torch.float32}
    with pytest.raises(ConfigError, match="resolve 'auto' first"):
        eval_precision.cast_for_precision(model, "auto")


def test_default_budget_predicts_like_explicit_budgets(tiny_encoder):
    spec = get_task(TASK)
    tokenizer = load_tokenizer(tiny_encoder)
    ops = ops_for(spec)
    features = ops.featurize(spec, spec.load("test", "en")[:150], tokenizer, MAX_LENGTH)
    torch.manual_seed(0)
    model = TransferModel(load_encoder(tiny_encoder), [spec]).eval()
    with torch.no_grad():
        one_by_one = [ops.predict(model(head=spec.head_key, **_unlabelled(ops.collate([f], tokenizer)))[1], None)[0]
                      for f in features]
    assert predict(model, spec.head_key, ops, features, tokenizer) == one_by_one
    assert predict(model, spec.head_key, ops, features, tokenizer, batch_tokens=64) == one_by_one


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.value)
def test_bf16_logits_track_fp32_for_every_family(family, tiny_encoder, tmp_path):
    spec, examples = registered(family)
    tokenizer = load_tokenizer(tiny_encoder)
    ops = ops_for(spec)
    features = ops.featurize(spec, examples, tokenizer, MAX_LENGTH)
    model_dir = phase_model(tmp_path / "phase", tiny_encoder, spec.name)
    fp32 = load_transfer_model(model_dir, [spec]).eval()
    bf16 = eval_precision.cast_for_precision(load_transfer_model(model_dir, [spec]), "bf16")
    head = fp32.head_for(spec.name)
    batch = _unlabelled(ops.collate(features[:8], tokenizer))
    with torch.no_grad():
        expected = fp32(head=head, **batch)[1]
        actual = bf16(head=head, **batch)[1].float()
    assert actual.shape == expected.shape
    finite = torch.isfinite(expected)  # span heads mask impossible positions with -inf / the dtype's minimum
    scale = expected[finite].abs().max().item()
    assert torch.max(torch.abs(actual[finite] - expected[finite])).item() <= 0.05 * scale + 0.02
    # The whole evaluation path (collate, forward, the family's decoding) runs in bf16.
    _, predictions = score_examples(bf16, spec, examples, features, tokenizer)
    assert len(predictions) == len(examples)


def test_bf16_keeps_the_accuracy_of_a_trained_head(tiny_encoder):
    """On a head trained to confident predictions, bf16 changes almost no prediction (fp32 is the oracle)."""
    spec, tokenizer, ops = get_task(TASK), load_tokenizer(tiny_encoder), ops_for(get_task(TASK))
    model = trained_paraphrase_model(tiny_encoder)
    test = spec.load("test", "en")[:200]
    features = ops.featurize(spec, test, tokenizer, MAX_LENGTH)
    fp32_scores, fp32_predictions = score_examples(model, spec, test, features, tokenizer)
    bf16_scores, bf16_predictions = score_examples(eval_precision.cast_for_precision(model, "bf16"), spec, test, features, tokenizer)
    assert fp32_scores["accuracy"] > 55.0  # above chance: the margins are worth keeping
    assert np.mean(np.array(fp32_predictions) == np.array(bf16_predictions)) >= 0.97
    assert abs(bf16_scores["accuracy"] - fp32_scores["accuracy"]) <= 1.5


def test_cli_keeps_bf16_results_apart_and_refuses_bf16_on_onnx(tiny_run, tmp_path, capsys, monkeypatch):
    languages = ",".join(get_task(TASK).languages[:2])
    common = ["--model", str(tiny_run), "--task", TASK, "--languages", languages, "--max-length", "64",
              "--output", str(tmp_path)]
    first = languages.split(",")[0]
    result_file = tmp_path / "eval" / "baseline" / TASK / f"{first}.json"
    assert eval_main(common) == 0
    fp32 = read_json(result_file)
    assert eval_main([*common, "--precision", "bf16"]) == 0
    bf16 = read_json(result_file)
    assert bf16["model"].endswith("#torch-bf16") and not fp32["model"].endswith("bf16")  # recomputed, not the fp32 cache
    assert len(bf16["predictions"]) == len(fp32["predictions"])

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset())  # no AMX: auto is fp32 and reuses fp32's key
    assert eval_main([*common, "--precision", "auto"]) == 0
    assert read_json(result_file)["model"] == fp32["model"]

    capsys.readouterr()
    assert eval_main([*common, "--precision", "bf16", "--backend", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastxlt: error:") and "bf16 runs on the torch backend" in err and "\n" not in err


def test_evaluate_section_takes_precision_and_an_automatic_budget():
    config = experiment_from_dict({"phases": {"target": {"tasks": ["xnli"]}, "evaluate": {"precision": "auto"}}})
    assert config.phases.evaluate.precision == "auto" and config.phases.evaluate.batch_tokens is None
    with pytest.raises(ConfigError, match="phases.evaluate.precision: bf16 runs on the torch backend"):
        experiment_from_dict({"phases": {"target": {"tasks": ["xnli"]}, "evaluate": {"precision": "bf16", "backend": "onnx"}}})
    with pytest.raises(ConfigError, match="phases.evaluate.batch_tokens"):
        experiment_from_dict({"phases": {"target": {"tasks": ["xnli"]}, "evaluate": {"batch_tokens": 0}}})


def _unlabelled(batch: dict) -> dict:
    batch.pop("labels", None)
    return batch

