"""One intermediate phase across task families (pair classification + token tagging + multiple choice + span QA) with
the capped examples-proportional sampler, each task on its own head, then the encoder handed to a tagging
target task and zero-shot evaluation in two languages. Toy size: the tiny synthetic model, data files
written by the test in the tasks' original layouts, a few optimizer steps, run as users run it
(``fastxlt run`` in a subprocess)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from seqeval.metrics import f1_score
from transformers import AutoModel

from fastxlt.tasks.base import get_task
from fastxlt.utils.run_layout import arm_phase_dir
from fastxlt.training.samplers import MultiTaskSchedule, mixing_rates
from fastxlt.utils.io import read_json

REPO = Path(__file__).resolve().parents[1]
# One fastxlt run of three phases, about 25 s on the 2-core development machine: in the default suite.
WORDS = ["Marco", "Anna", "Paris", "Berlin", "bought", "bread", "visited", "the", "market", "in", "and", "saw", "a", "dog"]
UPOS = ["PROPN", "PROPN", "PROPN", "PROPN", "VERB", "NOUN", "VERB", "DET", "NOUN", "ADP", "CCONJ", "VERB", "DET", "NOUN"]
NER = {"Marco": "B-PER", "Anna": "B-PER", "Paris": "B-LOC", "Berlin": "B-LOC"}
INTERMEDIATE = ["synth-nli", "panx", "cosmos_qa", "squad"]
SIZES = {"synth-nli": 48, "panx": 40, "cosmos_qa": 24, "squad": 20}  # training examples (one feature each at this length)
CAP = 32


def sentences(rng: random.Random, count: int) -> list[list[int]]:
    return [[rng.randrange(len(WORDS)) for _ in range(rng.randint(3, 8))] for _ in range(count)]


def write_panx(folder: Path, split: str, rows: list[list[int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join("".join(f"{WORDS[w]}\t{NER.get(WORDS[w], 'O')}\n" for w in row) for row in rows)
    (folder / f"{split}-en.tsv").write_text(text, encoding="utf-8")


def write_conllu(path: Path, rows: list[list[int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = ["".join(f"{i + 1}\t{WORDS[w]}\t_\t{UPOS[w]}\t_\t_\t0\troot\t_\t_\n" for i, w in enumerate(row)) for row in rows]
    path.write_text("\n".join(blocks) + "\n", encoding="utf-8")


def write_cosmos(path: Path, rng: random.Random, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["id,context,question,answer0,answer1,answer2,answer3,label"]
    for i in range(count):
        answers = [" ".join(WORDS[w] for w in row) for row in sentences(rng, 4)]
        context = " ".join(WORDS[w] for w in sentences(rng, 1)[0])
        lines.append(f"q{i},{context},Why ?,{','.join(answers)},{rng.randrange(4)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_squad(path: Path, rng: random.Random, count: int, prefix: str) -> None:
    """SQuAD v1.1 layout: the answer is the first word of a short context (one window at max_length 32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    paragraphs = []
    for i in range(count):
        context = " ".join(WORDS[w] for w in sentences(rng, 1)[0])
        first = context.split(" ")[0]
        qas = [{"id": f"{prefix}{i}", "question": "Who ?", "answers": [{"text": first, "answer_start": 0}]}]
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]}), encoding="utf-8")


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_model) -> Path:
    root = tmp_path_factory.mktemp("multifamily")
    rng = random.Random(3)
    write_panx(root / "panx", "train", sentences(rng, SIZES["panx"]))
    write_panx(root / "panx", "dev", sentences(rng, 12))
    write_cosmos(root / "cosmos" / "train.csv", rng, SIZES["cosmos_qa"])
    write_cosmos(root / "cosmos" / "valid.csv", rng, 8)
    write_squad(root / "squad" / "train-v1.1.json", rng, SIZES["squad"], "t")
    write_squad(root / "squad" / "dev-v1.1.json", rng, 8, "d")
    for language, split, count in (("en", "train", 40), ("en", "dev", 10), ("en", "test", 10), ("de", "test", 10)):
        write_conllu(root / "ud" / f"UD_{language}-Toy" / f"{language}_toy-ud-{split}.conllu", sentences(rng, count))
    config = {
        "name": "multifamily", "seed": 5, "run_dir": str(root / "run"), "kernels": "none",
        "model": {"name_or_path": str(synthetic_model)},
        "data": {"panx": str(root / "panx"), "cosmos_qa": str(root / "cosmos"), "squad": str(root / "squad"), "udpos": str(root / "ud")},
        "optimization": {"lr": 5.0e-4, "batch_size": 8, "grad_accum": 1, "max_length": 32, "max_steps": 8,
                         "eval_every": 8, "eval_batch_tokens": 2048},
        "phases": {
            "intermediate": {"tasks": INTERMEDIATE, "train_examples": 48, "sampling_cap": CAP},
            "target": {"tasks": ["udpos"], "optimization": {"max_steps": 3, "eval_every": 3}},
            "evaluate": {"tasks": ["udpos"], "languages": ["en", "de"], "split": "test"},
        },
    }  # fmt: skip
    path = root / "multifamily.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "fastxlt.cli", "run", "--config", str(path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def test_intermediate_phase_mixes_four_families_with_capped_proportional_sampling(run):
    summary = read_json(arm_phase_dir(run / "run", "intermediate", "+".join(INTERMEDIATE)) / "phase.json")
    assert summary["tasks"] == INTERMEDIATE
    assert summary["train_sizes"] == [SIZES[t] for t in INTERMEDIATE]
    capped = np.array([min(SIZES[t], CAP) for t in INTERMEDIATE], dtype=float)  # 32, 32, 24, 20
    np.testing.assert_allclose(summary["mixing_rates"], capped / capped.sum())
    # every task gets batches in this run's schedule, so every head is trained
    schedule = MultiTaskSchedule(summary["train_sizes"], mixing_rates(summary["train_sizes"], "proportional", CAP), 8, 8, 5)
    assert {schedule.batch(i)[0] for i in range(8)} == {0, 1, 2, 3}
    last = summary["history"][-1]
    for task in INTERMEDIATE:
        assert 0.0 <= last[f"dev_{task}"] <= 100.0  # the English dev set of every family was scored
    saved = torch.load(arm_phase_dir(run / "run", "intermediate", "+".join(INTERMEDIATE)) / "model" / "heads.pt", weights_only=True)
    assert saved["task_to_head"] == {task: get_task(task).head_key for task in INTERMEDIATE}
    assert saved["heads"]["panx.classifier.weight"].shape[0] == 7  # O + B/I x PER, ORG, LOC
    assert saved["heads"]["choice.scorer.weight"].shape[0] == 1  # one score per choice
    assert saved["heads"]["squad.qa_outputs.weight"].shape[0] == 2  # start and end logits


def test_encoder_is_handed_to_the_tagging_target_and_evaluated_zero_shot(run):
    intermediate_encoder = arm_phase_dir(run / "run", "intermediate", "+".join(INTERMEDIATE)) / "model" / "encoder"
    arm = "+".join(INTERMEDIATE)
    target = read_json(arm_phase_dir(run / "run", "target", arm) / "phase.json")
    assert target["init_encoder"] == str(intermediate_encoder)
    assert AutoModel.from_pretrained(intermediate_encoder).config.model_type == "xlm-roberta"
    heads = torch.load(arm_phase_dir(run / "run", "target", arm) / "model" / "heads.pt", weights_only=True)
    assert set(heads["task_to_head"]) == {"udpos"}
    results = read_json(run / "run" / "results.json")
    languages = results["arms"][arm]["tasks"]["udpos"]["languages"]
    assert set(languages) == {"en", "de"}
    for language in ("en", "de"):
        saved = read_json(run / "run" / "cells" / f"intermediate={arm}" / "eval" / arm / "udpos" / f"{language}.json")
        gold = [list(e.tags) for e in get_task("udpos").load("test", language, run / "ud")]
        assert [len(p) for p in saved["predictions"]] == [len(g) for g in gold]  # one tag per word
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = 100.0 * f1_score(gold, saved["predictions"])
        assert saved["scores"]["f1"] == pytest.approx(expected, abs=1e-9) == languages[language]["f1"]
