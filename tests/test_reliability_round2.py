"""Reliability, second round (issue 25): the last silent scores, a truncated cell, group-readable weights.

Each error case runs through the command-line entry points: exit code 2, one line on stderr, no traceback
(``test_cli_errors.one_line_error``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastxlt.cli import eval_main
from test_cli_errors import one_line_error, tiny_run_with_heads


@pytest.fixture(scope="module")
def copa_qa_run(tmp_path_factory, synthetic_model) -> Path:
    """A tiny model with an XCOPA head and an XQuAD head (what those evaluations load)."""
    return tiny_run_with_heads(tmp_path_factory.mktemp("copa-qa-run"), synthetic_model, ["xcopa", "xquad"])


def xcopa_test_file(folder: Path, labels: list[int]) -> Path:
    """XTREME-R's layout: ``xcopa/test-<lang>.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"premise": f"premise {i}", "choice1": f"one {i}", "choice2": f"two {i}", "question": "effect",
                "label": label, "idx": i} for i, label in enumerate(labels)]  # fmt: skip
    (folder / "test-et.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def xquad_file(folder: Path, answers: list[str], language: str = "de", question: str = "Wo ist es?") -> Path:
    """``xquad.<lang>.json``: one paragraph, one question per answer (a blank answer: withheld gold)."""
    folder.mkdir(parents=True, exist_ok=True)
    context = "Die Normandie liegt in Frankreich, am Meer."
    qas = [{"id": f"q{i}", "question": question,
            "answers": [{"text": text, "answer_start": context.index(text) if text else 0}]}
           for i, text in enumerate(answers)]  # fmt: skip
    document = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    (folder / f"xquad.{language}.json").write_text(json.dumps(document), encoding="utf-8")
    return folder


def eval_args(run: Path, task: str, language: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(run), "--task", task, "--languages", language, "--data", str(data), "--output", str(out),
            "--max-length", "64", *extra]  # fmt: skip


# ------------------------------------------------------------------------------------------ 1. --max-examples


def test_max_examples_does_not_skip_the_withheld_label_check(copa_qa_run, tmp_path, capsys):
    data = xcopa_test_file(tmp_path / "xcopa", [0] * 12)
    args = eval_args(copa_qa_run, "xcopa", "et", data, tmp_path / "out", "--max-examples", "9")
    line = one_line_error(capsys, eval_main(args))
    assert "all 12 gold labels are 0" in line and "--allow-constant-labels" in line
    assert not (tmp_path / "out" / "eval" / "baseline" / "xcopa" / "et.json").exists()
    # a real file of mixed labels still scores its first 9 examples
    xcopa_test_file(tmp_path / "xcopa", [i % 2 for i in range(12)])
    assert eval_main(args) == 0
    saved = json.loads((tmp_path / "out" / "eval" / "baseline" / "xcopa" / "et.json").read_text(encoding="utf-8"))
    assert saved["examples"] == 9


def test_max_examples_on_blank_qa_gold_is_one_line(copa_qa_run, tmp_path, capsys):
    data = xquad_file(tmp_path / "xquad", [""] * 12)
    line = one_line_error(capsys, eval_main(eval_args(copa_qa_run, "xquad", "de", data, tmp_path / "out",
                                                      "--max-examples", "5")))  # fmt: skip
    assert "all 12 gold answers are blank" in line


# ------------------------------------------------------------------------------------------ 2. the override on blank QA


def test_allow_constant_labels_cannot_score_blank_qa_gold(copa_qa_run, tmp_path, capsys, monkeypatch):
    import fastxlt.evaluation.zero_shot as zero_shot

    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted before refusing")

    monkeypatch.setattr(zero_shot, "predict_examples", no_prediction)
    data = xquad_file(tmp_path / "xquad", [""] * 3)  # any size: no flag makes a blank answer scorable
    line = one_line_error(capsys, eval_main(eval_args(copa_qa_run, "xquad", "de", data, tmp_path / "out",
                                                      "--allow-constant-labels")))  # fmt: skip
    assert "all 3 gold answers are blank" in line and "cannot help" in line


def test_some_blank_qa_gold_is_refused_by_name(copa_qa_run, tmp_path, capsys):
    data = xquad_file(tmp_path / "xquad", ["Frankreich", "", "Meer"])
    line = one_line_error(capsys, eval_main(eval_args(copa_qa_run, "xquad", "de", data, tmp_path / "out")))
    assert "1 of 3 questions have no gold answer" in line and "'de'" in line


# ------------------------------------------------------------------------------------------ 3. a damaged cell result

GRID = """
name: tiny-grid
seed: 5
kernels: none
run_dir: {run_dir}
model: {{name_or_path: {model}}}
optimization: {{lr: 5.0e-4, batch_size: 16, grad_accum: 1, max_length: 32, max_steps: 2, eval_batch_tokens: 4096}}
phases:
  target: {{tasks: [synth-para]}}
  evaluate: {{languages: [en, xa], split: validation}}
grid:
  axes: {{target_size: [{size}]}}
  store: {store}
"""


def write_grid(root: Path, model: Path, size: int | str = 24) -> Path:
    path = root / "grid.yaml"
    path.write_text(GRID.format(run_dir=root / "run", model=model, size=size, store=root / "store"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_cell_grid(tmp_path_factory, synthetic_model) -> Path:
    """A finished one-cell grid (target size 24 of synth-para, two optimizer steps)."""
    from fastxlt.cli import main

    root = tmp_path_factory.mktemp("grid")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DS_ACCELERATOR", "cpu")
        assert main(["run", "--config", str(write_grid(root, synthetic_model))]) == 0
    return root


def test_a_truncated_cell_result_is_not_done_and_is_rescored(one_cell_grid, synthetic_model, tmp_path, capsys, monkeypatch):
    import shutil

    from fastxlt.cli import main

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    root = Path(shutil.copytree(one_cell_grid, tmp_path / "grid"))
    (cell,) = (root / "run" / "cells").iterdir()
    results = cell / "results.json"
    intact = json.loads(results.read_text(encoding="utf-8"))
    results.write_text(results.read_text(encoding="utf-8")[:40], encoding="utf-8")  # a copy cut short
    trained = {p: p.stat().st_mtime_ns for p in root.glob("store/**/phase.json")}
    capsys.readouterr()

    assert main(["status", "-v", str(root / "run")]) == 0
    out, err = capsys.readouterr()
    assert "done        0 / 1" in out and "pending     1 / 1" in out
    assert [line for line in err.splitlines() if cell.name in line] == [
        f"fastxlt: cell {cell.name}: {results} is damaged; the cell counts as not done and `fastxlt run` re-scores it "
        "(its trained phases are reused)"]  # fmt: skip

    assert main(["report", str(root / "run")]) == 0  # no JSONDecodeError; the cell is pending
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count(f"cell {cell.name}:") == 1

    assert main(["run", "--config", str(write_grid(root, synthetic_model))]) == 0  # the copy's own paths
    rescored = json.loads(results.read_text(encoding="utf-8"))
    assert rescored["arms"]["none"]["tasks"] == intact["arms"]["none"]["tasks"]  # the same model, the same scores
    assert {p: p.stat().st_mtime_ns for p in root.glob("store/**/phase.json")} == trained  # nothing retrained
    assert main(["status", str(root / "run")]) == 0
    assert "done        1 / 1" in capsys.readouterr().out



# ------------------------------------------------------------------------------------------ 7. modes follow the umask


@pytest.fixture
def umask_027():
    import os

    old = os.umask(0o027)
    yield 0o640  # what open() gives a new file under umask 027
    os.umask(old)


def file_modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in sorted(root.rglob("*")) if p.is_file()}


def test_phase_outputs_follow_the_umask(tiny_run, tmp_path, umask_027):
    from fastxlt.models.encoder import load_encoder, load_tokenizer
    from fastxlt.models.transfer import TransferModel, save_phase_outputs
    from fastxlt.tasks.base import get_task

    source = tiny_run / "target" / "baseline" / "model"
    model = TransferModel(load_encoder(source / "encoder"), [get_task("synth-para")])
    save_phase_outputs(model, tmp_path / "model", load_tokenizer(source / "encoder"))
    modes = file_modes(tmp_path / "model")
    assert "encoder/model.safetensors" in modes and "heads.pt" in modes
    assert modes == dict.fromkeys(modes, umask_027)


def test_a_grid_phase_and_the_synthetic_model_write_weights_by_the_umask(one_cell_grid, synthetic_model):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    weights = [*(one_cell_grid / "store").rglob("model.safetensors"), synthetic_model / "model.safetensors"]
    assert len(weights) == 2  # the target phase's encoder, the embedded default's pretrained one
    assert {p.stat().st_mode & 0o777 for p in weights} == {0o666 & ~umask}


def test_export_files_follow_the_umask(tiny_run, tmp_path, umask_027):
    from fastxlt.cli import main

    out = tmp_path / "onnx"
    assert main(["export", "--model", str(tiny_run), "--task", "synth-para", "--out", str(out), "--max-length", "32"]) == 0
    modes = file_modes(out)
    assert "model.onnx" in modes and modes == dict.fromkeys(modes, umask_027)


# ------------------------------------------------------------------------------------------ 4. train_examples beyond the data


def test_train_examples_beyond_the_data_is_refused_before_training(synthetic_model, tmp_path, capsys, monkeypatch):
    from fastxlt.cli import main
    from fastxlt.tasks.base import get_task

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    pairs = len(get_task("synth-para").load("train", "en", None))
    line = one_line_error(capsys, main(["run", "--config", str(write_grid(tmp_path, synthetic_model, size=99999))]))
    assert f"phases.target.train_examples: 99999 exceeds the {pairs} training examples of task 'synth-para'" in line
    assert f"set it to {pairs} or less" in line
    assert not list((tmp_path / "store").rglob("phase.json"))  # nothing trained


def test_the_cap_is_refused_only_where_it_binds_no_task():
    from fastxlt.config import PhaseConfig
    from fastxlt.errors import ConfigError
    from fastxlt.training.loop import check_train_examples

    phase = PhaseConfig(tasks=["synth-para"], train_examples=101)
    check_train_examples(phase, {"synth-para": 101}, "train_examples")
    with pytest.raises(ConfigError, match="train_examples: 101 exceeds the 100 training examples of task 'synth-para'"):
        check_train_examples(phase, {"synth-para": 100}, "train_examples")
    # several tasks: "N of each task" caps the large one and takes all of the small one -- a real setting
    check_train_examples(phase, {"synth-nli": 500, "squad": 20}, "train_examples")
    with pytest.raises(ConfigError, match=r"exceeds the training examples of every task of the phase \(a: 50, b: 20\); "
                                          "set it to 50 or less"):
        check_train_examples(phase, {"a": 50, "b": 20}, "train_examples")


# ------------------------------------------------------------------------------------------ 6. evaluation limits in preflight

RUN = """
name: preflight
run_dir: {run_dir}
model: {{name_or_path: synthetic}}
optimization: {{max_steps: 1, max_length: {max_length}, batch_size: 4, grad_accum: 1}}
phases:
  target: {{tasks: [synth-para]}}
  evaluate: {{languages: [{languages}], tasks: [{tasks}]}}
data: {data}
"""


def write_run(tmp_path: Path, max_length: int = 64, tasks: str = "synth-para", languages: str = "en", data: str = "{}") -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(RUN.format(run_dir=tmp_path / "run", max_length=max_length, tasks=tasks, languages=languages,
                               data=data), encoding="utf-8")  # fmt: skip
    return path


def test_the_synthetic_models_length_limit_is_checked_in_preflight(tmp_path, capsys):
    from fastxlt.cli import main
    from fastxlt.synthetic.model import tiny_xlmr_config

    from fastxlt.experiments.preflight import position_limit

    limit = position_limit(tiny_xlmr_config(768))  # what the embedded default builds
    line = one_line_error(capsys, main(["run", "--config", str(write_run(tmp_path, max_length=256))]))
    assert f"optimization.max_length: 256 exceeds the {limit} tokens that model 'synthetic' can take" in line
    assert f"set optimization.max_length to {limit} or less" in line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing written


def test_withheld_evaluation_labels_named_in_a_config_are_refused_in_preflight(tmp_path, capsys):
    from fastxlt.cli import main

    xnli = tmp_path / "xnli"
    xnli.mkdir()
    (xnli / "test-de.tsv").write_text("".join(f"s{i}\th{i}\tentailment\n" for i in range(12)), encoding="utf-8")
    config = write_run(tmp_path, tasks="xnli", languages="de", data=f"{{xnli: {xnli}}}")
    line = one_line_error(capsys, main(["run", "--config", str(config)]))
    assert "phases.evaluate (xnli)" in line and "all 12 gold labels are 0" in line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # refused before anything


# ------------------------------------------------------------------------------------------ 5. long QA questions

LONG_QUESTION = " ".join(["Wie viele Einwohner hatte die alte Hauptstadt des Herzogtums im Jahr 1066 wirklich"] * 6) + "?"


def test_a_question_longer_than_the_window_is_cut_to_max_query_length(synthetic_model):
    from fastxlt.models.encoder import load_tokenizer
    from fastxlt.tasks.features import ops_for
    from fastxlt.tasks.span_qa import QAExample

    tokenizer = load_tokenizer(synthetic_model)
    spec = get_xquad()
    context = "Die Normandie liegt in Frankreich, am Meer. " * 8
    example = QAExample("q", LONG_QUESTION, context, ("Frankreich",), (context.index("Frankreich"),), "de")
    question_ids = tokenizer(LONG_QUESTION, add_special_tokens=False)["input_ids"]
    assert len(question_ids) > 32  # longer than the whole window
    features = ops_for(spec).featurize(spec, [example], tokenizer, 32)
    limit = 32 // 3  # max_query_length 64, capped at a third of max_length
    assert features and all(len(f["input_ids"]) <= 32 for f in features)
    for feature in features:  # <s> question </s></s> context </s>: the question's first `limit` tokens
        assert feature["input_ids"][1 : 1 + limit] == question_ids[:limit]
        assert feature["context_start"] == 1 + limit + 2
    assert any(f["start_position"] > 0 for f in features)  # the answer still lies in a window


def get_xquad():
    from fastxlt.tasks.base import get_task

    return get_task("xquad")


def test_long_xquad_questions_evaluate_with_a_short_max_length(copa_qa_run, tmp_path):
    data = xquad_file(tmp_path / "xquad", ["Frankreich", "Meer"], question=LONG_QUESTION)
    assert eval_main(eval_args(copa_qa_run, "xquad", "de", data, tmp_path / "out", "--max-length", "32")) == 0
    saved = json.loads((tmp_path / "out" / "eval" / "baseline" / "xquad" / "de.json").read_text(encoding="utf-8"))
    assert saved["examples"] == 2 and set(saved["scores"]) >= {"exact_match", "f1"}


def test_a_max_length_too_short_for_any_window_is_one_line(copa_qa_run, tmp_path, capsys):
    data = xquad_file(tmp_path / "xquad", ["Frankreich"])
    line = one_line_error(capsys, eval_main(eval_args(copa_qa_run, "xquad", "de", data, tmp_path / "out",
                                                      "--max-length", "8")))  # fmt: skip
    assert "max_length 8 is too short" in line


# ------------------------------------------------------------------------------------------ 8. smaller things


def test_an_empty_hypothesis_is_refused_at_its_row(tmp_path):
    from fastxlt.errors import CorruptDataError
    from fastxlt.tasks.base import get_task

    path = tmp_path / "test-de.tsv"
    path.write_text("Ein Hund bellt.\tEin Tier macht Laerm.\tentailment\nEine Katze schlaeft.\t \tneutral\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match=rf"^{path}, data row 2: the second sentence \(hypothesis\) is empty"):
        get_task("xnli").load("test", "de", tmp_path)


def conllu(path: Path, lines: list[tuple[str, str, str]]) -> Path:
    path.write_text("# sent_id = 1\n" + "".join(f"{i}\t{form}\t_\t{upos}\t_\t_\t0\troot\t_\t_\n" for i, form, upos in lines)
                    + "\n", encoding="utf-8")  # fmt: skip
    return path


def test_a_conllu_id_that_is_no_index_is_refused(tmp_path):
    from fastxlt.errors import CorruptDataError
    from fastxlt.tasks.tagging import read_conllu

    path = conllu(tmp_path / "de_gsd-ud-test.conllu", [("1", "Der", "DET"), ("abc", "Hund", "NOUN")])
    with pytest.raises(CorruptDataError, match=rf"^{path}:3: ID 'abc' is not a CoNLL-U word index"):
        read_conllu(path)
    ranges = conllu(tmp_path / "ok.conllu", [("1-2", "zum", "_"), ("1", "zu", "ADP"), ("2", "dem", "DET"), ("2.1", "x", "_")])
    assert [e.words for e in read_conllu(ranges)] == [("zu", "dem")]  # ranges and empty nodes are still skipped


def test_an_unknown_upos_tag_names_its_line(tmp_path):
    from fastxlt.errors import CorruptDataError
    from fastxlt.tasks.tagging import read_conllu

    path = conllu(tmp_path / "de_gsd-ud-test.conllu", [("1", "Der", "DET"), ("2", "Hund", "NOUNX")])
    with pytest.raises(CorruptDataError, match=rf"^{path}:3: UPOS tag 'NOUNX' is not one of the 17 UPOS tags"):
        read_conllu(path)


def test_a_bad_label_is_reported_in_the_label_file(tmp_path):
    from fastxlt.errors import CorruptDataError
    from fastxlt.tasks.base import get_task

    (tmp_path / "test-de.tsv").write_text("a\tb\nc\td\ne\tf\n", encoding="utf-8")  # XTREME: no label column
    labels = tmp_path / "DERIVED_test_labels.txt"
    labels.write_text("entailment\nmaybe\nneutral\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match=rf"^{labels}:2: unknown label 'maybe'"):
        get_task("xnli").load("test", "de", tmp_path)


def test_a_model_path_that_does_not_exist_says_so(tmp_path, capsys):
    line = one_line_error(capsys, eval_main(["--model", str(tmp_path / "absent"), "--task", "xnli"]))
    assert f"model path '{tmp_path / 'absent'}' does not exist" in line


def test_help_is_plain_text():
    import argparse
    import re

    from fastxlt.cli import _add_eval_arguments, build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    evaluation = argparse.ArgumentParser(prog="fastxlt-eval")
    _add_eval_arguments(evaluation)
    for each in [parser, evaluation, *commands.choices.values()]:
        assert not re.search(r"``|:(mod|func|class|meth|attr):`", each.format_help()), each.prog


def test_qa_progress_counts_questions_not_windows(copa_qa_run, monkeypatch):
    import fastxlt.inference.predict as predict_module
    from fastxlt.inference.predict import predict_examples
    from fastxlt.models.encoder import load_tokenizer
    from fastxlt.models.transfer import load_transfer_model
    from fastxlt.tasks.base import get_task
    from fastxlt.tasks.features import ops_for
    from fastxlt.tasks.span_qa import QAExample

    bars = []

    class Recorder:
        def __init__(self, *args, total=None, unit=None, **kwargs):
            self.total, self.unit, self.count = total, unit, 0
            bars.append(self)

        def update(self, n):
            self.count += n

        def close(self):
            pass

    monkeypatch.setattr(predict_module, "tqdm", Recorder)
    spec, model_dir = get_task("xquad"), copa_qa_run / "target" / "baseline" / "model"
    tokenizer = load_tokenizer(model_dir / "encoder")
    context = "Die Normandie liegt in Frankreich, am Meer. " * 12
    questions = [QAExample(f"q{i}", "Wo?", context, ("Meer",), (context.index("Meer"),), "de") for i in range(3)]
    features = ops_for(spec).featurize(spec, questions, tokenizer, 48)
    assert len(features) > len(questions)  # several windows per question
    model = load_transfer_model(model_dir, [get_task("xcopa"), spec])
    predict_examples(model, spec, questions, features, tokenizer, batch_tokens=96, progress="xquad de")
    (bar,) = bars
    assert (bar.total, bar.count, bar.unit) == (3, 3, "question")


@pytest.mark.parametrize("memory", ["inf", "nan", "0"])
def test_plan_refuses_a_gpu_memory_that_is_not_a_finite_positive_number(memory, capsys):
    from fastxlt.cli import main

    config = Path(__file__).resolve().parents[1] / "fastxlt" / "synthetic" / "default.yaml"
    line = one_line_error(capsys, main(["plan", "--config", str(config), "--gpu-memory", memory]))
    assert "--gpu-memory must be a positive, finite number of GiB per GPU" in line and memory in line
