"""Every check before training (issue 14, item 4): the experiment is refused with one line naming the field
before a single step runs, and nothing is written into the run directory."""

from __future__ import annotations

import pytest
from transformers import BertConfig, XLMRobertaConfig

from fastxlt.cli import eval_main, main
from fastxlt.experiments.preflight import experiment_from_dict
from fastxlt.errors import ConfigError, DataNotFoundError, UnknownLanguageError, UnknownTaskError
from fastxlt.experiments.pipeline import run_experiment
from fastxlt.experiments.preflight import check_experiment, position_limit


def experiment(tmp_path, **fields) -> dict:
    data = {
        "name": "preflight", "run_dir": str(tmp_path / "run"), "model": {"name_or_path": "synthetic"},
        "optimization": {"max_steps": 1, "max_length": 64},
        "phases": {"target": {"tasks": ["synth-para"]}, "evaluate": {"languages": "all", "split": "test"}},
    }  # fmt: skip
    for key, value in fields.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def refused(tmp_path, error_type, **fields) -> str:
    """The one-line error of run_experiment, which must stop before writing anything into the run directory."""
    config = experiment_from_dict(experiment(tmp_path, **fields))
    with pytest.raises(error_type) as caught:
        run_experiment(config)
    run_dir = tmp_path / "run"
    assert not run_dir.exists() or not any(run_dir.iterdir()), "refused after training had started"
    message = str(caught.value)
    assert "\n" not in message
    return message


def xnli_dir(tmp_path, languages=("de",), split="test"):
    folder = tmp_path / "xnli"
    folder.mkdir(exist_ok=True)
    for language in languages:
        (folder / f"{split}-{language}.tsv").write_text("a\tb\tneutral\nc\td\tentailment\n", encoding="utf-8")
    return folder


def test_unknown_language_and_split_name_the_field(tmp_path):
    message = refused(tmp_path, UnknownLanguageError, **{"phases.evaluate.languages": ["en", "zz"]})
    assert message.startswith("phases.evaluate.languages:") and "'zz'" in message
    message = refused(tmp_path, UnknownTaskError, **{"phases.evaluate.split": "dev"})
    assert message.startswith("phases.evaluate.split:") and "no split 'dev'" in message
    message = refused(tmp_path, UnknownTaskError, **{"phases.target.train_split": "training"})
    assert message.startswith("phases.target.tasks[0] (synth-para):") and "'training'" in message


def test_missing_data_directory_and_file(tmp_path):
    absent = tmp_path / "absent"
    message = refused(tmp_path, ConfigError, data={"xnli": str(absent)},
                      **{"phases.evaluate.tasks": ["xnli"], "phases.evaluate.languages": ["de"]})
    assert message.startswith("data.xnli:") and str(absent) in message
    folder = xnli_dir(tmp_path, languages=("de",))
    message = refused(tmp_path, DataNotFoundError, data={"xnli": str(folder)},
                      **{"phases.evaluate.tasks": ["xnli"], "phases.evaluate.languages": ["de", "fr"]})
    assert message.startswith("phases.evaluate (xnli):") and "test-fr.tsv" in message
    # the training side: the target's English train file and the English dev file early stopping reads
    message = refused(tmp_path, DataNotFoundError, data={"xnli": str(folder)},
                      **{"phases.target.tasks": ["xnli"], "phases.evaluate.tasks": ["xnli"], "phases.evaluate.languages": ["de"]})
    assert message.startswith("phases.target.tasks[0] (xnli):") and "no train file for task 'xnli'" in message


def test_complete_local_data_passes(tmp_path):
    folder = xnli_dir(tmp_path, languages=("de", "fr"))
    config = experiment_from_dict(experiment(tmp_path, data={"xnli": str(folder)},
                                         **{"phases.evaluate.tasks": ["xnli"], "phases.evaluate.languages": ["de", "fr"]}))
    check_experiment(config)  # no error


def test_position_limit_matches_the_models_definition():
    # XLM-R: positions start after padding_idx (1), so 514 embeddings hold 512 tokens; BERT: all 512.
    assert position_limit(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert position_limit(BertConfig(max_position_embeddings=512)) == 512


def test_max_length_beyond_the_models_positions(tmp_path, tiny_encoder):
    # tiny_encoder: max_position_embeddings 130, padding_idx 1 -> 128 usable positions
    model = {"name_or_path": str(tiny_encoder)}
    message = refused(tmp_path, ConfigError, model=model, **{"optimization.max_length": 256})
    assert message == (f"optimization.max_length: 256 exceeds the 128 tokens that model '{tiny_encoder}' can take "
                       "(its position embeddings); set optimization.max_length to 128 or less")
    message = refused(tmp_path, ConfigError, model=model, **{"phases.target.optimization": {"max_length": 129}})
    assert message.startswith("phases.target.optimization.max_length: 129 exceeds the 128 tokens")
    check_experiment(experiment_from_dict(experiment(tmp_path, model=model, **{"optimization.max_length": 128})))


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    config = experiment_from_dict(experiment(tmp_path, run_dir=str(blocker / "run")))
    with pytest.raises(ConfigError, match=r"^run_dir: cannot create .*; choose a writable directory$"):
        check_experiment(config)


@pytest.mark.parametrize("flag, value, field", [("--batch-tokens", "0", "--batch-tokens"),
                                                ("--batch-tokens", "-5", "--batch-tokens"),
                                                ("--max-length", "0", "--max-length")])
def test_cli_lengths_are_checked_first(tmp_path, capsys, flag, value, field):
    # the model does not exist: the length check must come before anything touches it
    args = ["--model", str(tmp_path / "no-model"), "--task", "xnli", flag, value]
    assert eval_main(args) == 2
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"fastxlt: error: {field} must be a positive") for line in err)
    assert main(["export", "--model", str(tmp_path / "no-model"), "--max-length", "0"]) == 2
    assert "--max-length must be a positive" in capsys.readouterr().err


def test_eval_checks_data_before_loading_the_model(tiny_run, tmp_path, capsys):
    folder = xnli_dir(tmp_path, languages=("de",))
    args = ["--model", str(tiny_run), "--task", "xnli", "--data", str(folder), "--languages", "de,fr"]
    assert eval_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "test-fr.tsv" in err
    assert eval_main(["--model", str(tiny_run), "--task", "synth-para", "--max-length", "4096"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastxlt: error: max_length: 4096 exceeds the 128 tokens")
