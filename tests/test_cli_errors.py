"""One-line errors instead of tracebacks, and the small things users hit (issue 14, items 7 and 8).

Each error case runs through the command-line entry points (``fastxlt.cli.main`` / ``eval_main``): exit code 2,
exactly one line on stderr, no traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastxlt.cli import CLI_OUTPUT_DIRNAME, eval_main, main

TINY_RUN_CONFIG = """
name: cli-errors
run_dir: {run_dir}
model: {{name_or_path: {model}}}
optimization: {{max_steps: 1, max_length: 64, batch_size: 4, grad_accum: 1}}
phases:
  target: {{tasks: [synth-para]}}
  evaluate: {{languages: [en]}}
"""


PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # tqdm lines (also transformers' weight loading)


def one_line_error(capsys, code) -> str:
    """The error line; everything else on stderr may only be progress bars."""
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("fastxlt: error:") == 1, err
    start = err.index("fastxlt: error:")
    error, rest = err[start:].rstrip("\n"), err[:start]
    assert "\n" not in error and "\r" not in error, err
    noise = [part for part in re.split(r"[\r\n]", rest) if part.strip() and not PROGRESS_BAR.search(part)]
    assert not noise, noise
    return error


@pytest.fixture
def truncated_run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run whose encoder weights were cut in half (an interrupted copy)."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    weights = run / "target" / "baseline" / "model" / "encoder" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return run


def test_truncated_safetensors_in_eval_export_retrieval_and_run(truncated_run, tmp_path, capsys):
    encoder = truncated_run / "target" / "baseline" / "model" / "encoder"
    expected = "its safetensors weights are damaged"
    run_args = ["--model", str(truncated_run), "--task", "synth-para", "--max-length", "64"]
    assert expected in one_line_error(capsys, eval_main(run_args))
    assert expected in one_line_error(capsys, main(["export", *run_args]))
    assert expected in one_line_error(capsys, main(["export", "--model", str(encoder)]))
    tatoeba = tmp_path / "tatoeba"
    tatoeba.mkdir()
    (tatoeba / "tatoeba.deu-eng.deu").write_text("ein Hund\neine Katze\n", encoding="utf-8")
    (tatoeba / "tatoeba.deu-eng.eng").write_text("a dog\na cat\n", encoding="utf-8")
    retrieval = ["--retrieval", "tatoeba", "--model", str(encoder), "--data", str(tatoeba), "--languages", "de"]
    assert expected in one_line_error(capsys, eval_main(retrieval))
    config = tmp_path / "run.yaml"
    config.write_text(TINY_RUN_CONFIG.format(run_dir=tmp_path / "new-run", model=encoder), encoding="utf-8")
    assert expected in one_line_error(capsys, main(["run", "--config", str(config)]))


def test_invalid_yaml_in_set(capsys):
    line = one_line_error(capsys, main(["run", "--set", "seed=[1,"]))
    assert line.startswith("fastxlt: error: override 'seed=[1,': the value is not valid YAML")


def test_run_dir_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    line = one_line_error(capsys, main(["run", "--run-dir", str(blocker / "run")]))
    assert line.startswith(f"fastxlt: error: run_dir: cannot create '{blocker / 'run'}'")


def tiny_run_with_heads(root: Path, synthetic_model: Path, tasks: list[str]) -> Path:
    """A run directory whose target model is a tiny encoder with an untrained head for each of ``tasks``: what
    `fastxlt-eval --model RUN --task T` loads, built in a second."""
    import torch

    from fastxlt.models.encoder import load_encoder, load_tokenizer
    from fastxlt.models.transfer import TransferModel, save_phase_outputs
    from fastxlt.synthetic.model import build_tiny_encoder
    from fastxlt.tasks.base import get_task

    tokenizer = load_tokenizer(synthetic_model)
    build_tiny_encoder(tokenizer, seed=4, out_dir=root / "encoder", hidden_size=32, num_layers=2, num_heads=2,
                       intermediate_size=64, max_length=128, dropout=0.0)  # fmt: skip
    torch.manual_seed(2)
    save_phase_outputs(TransferModel(load_encoder(root / "encoder"), [get_task(task) for task in tasks]),
                       root / "run" / "target" / "baseline" / "model", tokenizer)  # fmt: skip
    return root / "run"


@pytest.fixture(scope="module")
def nli_run(tmp_path_factory, synthetic_model) -> Path:
    """A tiny model with an NLI head (what XNLI evaluation loads)."""
    return tiny_run_with_heads(tmp_path_factory.mktemp("nli-run"), synthetic_model, ["xnli"])


def test_empty_unlabelled_xnli_file(nli_run, tmp_path, capsys):
    data = tmp_path / "xnli"
    data.mkdir()
    (data / "test-de.tsv").write_text("", encoding="utf-8")
    args = ["--model", str(nli_run), "--task", "xnli", "--languages", "de", "--data", str(data), "--output", str(tmp_path / "out"), "--max-length", "64"]
    line = one_line_error(capsys, eval_main(args))
    assert "holds no examples" in line and "'de'" in line


def test_constant_labels_refused_then_allowed(nli_run, tmp_path, capsys):
    data = tmp_path / "xnli"
    data.mkdir()
    (data / "test-de.tsv").write_text("".join(f"s{i}\th{i}\tentailment\n" for i in range(12)), encoding="utf-8")
    args = ["--model", str(nli_run), "--task", "xnli", "--languages", "de", "--data", str(data), "--output", str(tmp_path / "out"), "--max-length", "64"]
    line = one_line_error(capsys, eval_main(args))
    assert "all 12 gold labels are 0" in line and "--allow-constant-labels" in line
    assert eval_main([*args, "--allow-constant-labels"]) == 0
    saved = json.loads((tmp_path / "out" / "eval" / "baseline" / "xnli" / "de.json").read_text(encoding="utf-8"))
    assert saved["scores"]["accuracy"] == pytest.approx(100.0 * saved["predictions"].count(0) / 12)


@pytest.mark.parametrize("content", ["{not json", "", '{"arms": 3}', '{"arms": {"x": {"tasks": {"xnli": {}}}}}', "\xff"])
def test_report_on_a_damaged_results_file(tmp_path, capsys, content):
    (tmp_path / "results.json").write_bytes(content.encode("latin-1"))
    line = one_line_error(capsys, main(["report", str(tmp_path)]))
    assert str(tmp_path / "results.json") in line and "fastxlt run" in line


# ------------------------------------------------------------------------------------------ --help


def imported_after_parsing(code: str) -> set[str]:
    heavy = "','.join(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules)"
    script = f"import sys\n{code}\nprint('MODULES:' + {heavy})"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("MODULES:")
    return {name for name in last[len("MODULES:"):].split(",") if name}


def test_help_imports_no_torch():
    assert imported_after_parsing("from fastxlt.cli import build_parser\nbuild_parser()") == set()
    code = "from fastxlt.cli import main, eval_main\nfor f, a in ((main, ['eval', '--help']), (eval_main, ['--help'])):\n" \
           "    try: f(a)\n    except SystemExit: pass"
    assert imported_after_parsing(code) == set()
    code = "from fastxlt.cli import train_main\ntry: train_main(['--help'])\nexcept SystemExit: pass"
    assert imported_after_parsing(code) == set()  # deepspeed fastxlt/train.py --help


@pytest.mark.parametrize("module, usage", [
    ("fastxlt.cli", "usage: fastxlt "),  # what the tests spawn for `fastxlt`
    ("fastxlt.cli.retrieval", "usage: fastxlt-eval --retrieval"),
])
def test_every_module_command_line_still_runs(module, usage):
    """All parsing moved into fastxlt/cli/; each ``python -m`` command line that existed before still answers."""
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(usage)


def test_the_train_script_parses_with_the_other_command_lines():
    """``deepspeed fastxlt/train.py`` runs the file as a script: its --help comes from fastxlt.cli.train_main."""
    script = Path(__file__).resolve().parents[1] / "fastxlt" / "train.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: fastxlt/train.py") and "--no-eval" in result.stdout


def test_help_states_the_real_default_output_directory(tiny_run, tmp_path, capsys):
    from fastxlt.evaluation.model_eval import CLI_OUTPUT_DIRNAME as USED

    with pytest.raises(SystemExit):
        eval_main(["--help"])
    assert f"<model>/{USED}" in "".join(capsys.readouterr().out.split())  # argparse may wrap at the hyphen
    assert CLI_OUTPUT_DIRNAME == USED
    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert eval_main(["--model", str(run), "--task", "synth-para", "--languages", "en"]) == 0
    assert (run / USED / "results.json").is_file()


def test_default_max_length_is_capped_by_the_models_positions(tiny_run, tmp_path):
    """Without --max-length: 256, or the model's limit when smaller (the tiny model: 128); an explicit value
    beyond the limit is refused (tests/test_preflight.py)."""
    from fastxlt.cli import EVAL_MAX_LENGTH
    from fastxlt.evaluation.model_eval import DEFAULT_MAX_LENGTH

    assert EVAL_MAX_LENGTH == DEFAULT_MAX_LENGTH == 256
    assert eval_main(["--model", str(tiny_run), "--task", "synth-para", "--languages", "en", "--output", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "eval" / "baseline" / "synth-para" / "en.json").read_text(encoding="utf-8"))
    assert saved["cache_key"]["max_length"] == 128


# ------------------------------------------------------------------------------------------ retrieval


def test_retrieval_uses_one_maximum_length(tiny_encoder):
    from transformers import XLMRobertaConfig

    from fastxlt.cli import build_parser
    from fastxlt.inference.precision import EVAL_PRECISIONS
    from fastxlt.cli import retrieval as retrieval_cli
    from fastxlt.retrieval.embed import TorchSentenceEncoder, _model_max_length
    from fastxlt.retrieval.options import ENCODER_PRECISIONS, RETRIEVAL_MAX_LENGTH
    from fastxlt.models.encoder import load_encoder, load_tokenizer

    assert ENCODER_PRECISIONS == EVAL_PRECISIONS
    # no entry point brings its own default: fastxlt-eval's task default (256) does not leak into retrieval
    assert build_parser().parse_args(["eval", "--retrieval", "tatoeba", "--model", "m"]).max_length is None
    assert retrieval_cli.build_parser().parse_args(["--retrieval", "tatoeba", "--model", "m"]).max_length is None
    large = type("Model", (), {"config": XLMRobertaConfig(max_position_embeddings=514)})()
    assert _model_max_length(large, type("Tok", (), {"model_max_length": 10**30})()) == RETRIEVAL_MAX_LENGTH == 512
    encoder = TorchSentenceEncoder(load_encoder(tiny_encoder), load_tokenizer(tiny_encoder), device="cpu")
    assert encoder.max_length == 128  # the tiny model's 130 positions, less XLM-R's two


class TableEncoder:
    """Embeds each known sentence as a fixed unit vector: translations share one."""

    def __init__(self, table: dict[str, int], dim: int = 8) -> None:
        self.table, self.dim = table, dim

    def encode(self, sentences):
        vectors = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for row, sentence in enumerate(sentences):
            vectors[row, self.table[sentence]] = 1.0
            vectors[row, -1] = 0.1 * (row + 1)  # break ties deterministically
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_bucc_duplicates_every_id_or_dropped_as_xtreme_does():
    from fastxlt.retrieval.bucc import BuccCorpus, mine_corpus

    corpus = BuccCorpus(
        language="de", split="test",
        source_ids=["de-1", "de-2", "de-3", "de-4"], source_sentences=["Hund", "Katze", "Hund", "Maus"],
        target_ids=["en-1", "en-2", "en-3"], target_sentences=["dog", "cat", "mouse"], gold=None, layout="files",
    )  # fmt: skip
    encoder = TableEncoder({"Hund": 0, "dog": 0, "Katze": 1, "cat": 1, "Maus": 2, "mouse": 2})
    every = mine_corpus(corpus, encoder)
    assert sorted(zip(every.source_ids, every.target_ids)) == [("de-1", "en-1"), ("de-2", "en-2"), ("de-3", "en-1"),
                                                                ("de-4", "en-3")]  # fmt: skip
    # XTREME's read_sent2id deletes a repeated sentence from its map: no candidate carries "Hund" at all
    dropped = mine_corpus(corpus, encoder, drop_duplicates=True)
    assert sorted(zip(dropped.source_ids, dropped.target_ids)) == [("de-2", "en-2"), ("de-4", "en-3")]
