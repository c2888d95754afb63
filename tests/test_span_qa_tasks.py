"""Span-QA tasks: readers for every local layout, the real XQuAD files, sliding-window features whose
labels map back to the gold answers, the span head's loss, and a tiny end-to-end train + evaluate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fastxlt.errors import CorruptDataError, DataNotFoundError, UnknownLanguageError
from fastxlt.models.heads import make_head
from fastxlt.tasks.base import Family, get_task
from fastxlt.tasks.features import ops_for
from fastxlt.tasks.span_qa import QAExample, SpanHead, SpanQAOps, answer_token_span
from fastxlt.utils.run_layout import arm_phase_dir

REPO = Path(__file__).resolve().parents[1]
XQUAD = REPO.parent / "shared" / "data" / "xquad"
XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")


def squad_json(path: Path, paragraphs: list[tuple[str, list[dict]]], version: str = "1.1") -> Path:
    """Write a SQuAD-format file: one article holding (context, qas) paragraphs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": version, "data": [{"title": "T", "paragraphs": [{"context": c, "qas": q} for c, q in paragraphs]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def qa(qid: str, question: str, answers: list[tuple[str, int]], **extra) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers], **extra}


# ------------------------------------------------------------------------------------ readers


def test_squad_v1_and_v2_layouts(tmp_path):
    squad_json(tmp_path / "train-v1.1.json", [("Paris is big.", [qa("q1", " What is big?", [("Paris", 0)])])])
    squad_json(tmp_path / "dev-v1.1.json", [("Rome is old.", [qa("q2", "Old?", [("Rome", 0), ("Rome is", 0)])])])
    squad_json(tmp_path / "dev-v2.0.json", [("Rome is old.", [
        qa("q3", "Old?", [("Rome", 0)], is_impossible=False),
        qa("q4", "New?", [], is_impossible=True, plausible_answers=[{"text": "Rome", "answer_start": 0}]),
    ])], version="v2.0")  # fmt: skip
    (train,) = get_task("squad").load("train", "en", tmp_path)
    assert train == QAExample("q1", " What is big?", "Paris is big.", ("Paris",), (0,), False, "en")
    (dev,) = get_task("squad").load("validation", "en", tmp_path)
    assert dev.answer_texts == ("Rome", "Rome is") and dev.answer_starts == (0, 0)
    answerable, impossible = get_task("squad_v2").load("validation", "en", tmp_path)
    assert not answerable.is_impossible and impossible.is_impossible and impossible.answer_texts == ()
    with pytest.raises(DataNotFoundError, match=r"train-v2\.0\.json"):
        get_task("squad_v2").load("train", "en", tmp_path)


def test_xquad_mlqa_tydiqa_layouts(tmp_path):
    squad_json(tmp_path / "xquad.de.json", [("Berlin ist groß.", [qa("x1", "Was?", [("Berlin", 0)])])])
    assert get_task("xquad").load("test", "de", tmp_path)[0].language == "de"
    squad_json(tmp_path / "MLQA_V1" / "dev" / "dev-context-zh-question-zh.json", [("北京很大。", [qa("m1", "?", [("北京", 0)])])])
    squad_json(tmp_path / "test" / "test-context-zh-question-zh.json", [("上海。", [qa("m2", "?", [("上海", 0)])])])
    assert [e.id for e in get_task("mlqa").load("validation", "zh", tmp_path)] == ["m1"]
    assert [e.id for e in get_task("mlqa").load("test", "zh", tmp_path)] == ["m2"]
    # TyDiQA-GoldP, XTREME layout (both file namings), and the original all-language dev file.
    squad_json(tmp_path / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json", [("A b.", [qa("english-1-0", "?", [("A", 0)])])])
    squad_json(tmp_path / "tydiqa-goldp-v1.1-dev" / "tydiqa.fi.dev.json", [("C d.", [qa("finnish-2-0", "?", [("C", 0)])])])
    tydiqa = get_task("tydiqa")
    assert [e.id for e in tydiqa.load("train", "en", tmp_path)] == ["english-1-0"]
    assert [e.id for e in tydiqa.load("test", "fi", tmp_path)] == ["finnish-2-0"]
    original = tmp_path / "orig"
    squad_json(original / "tydiqa-goldp-v1.1-dev.json", [("E f.", [
        qa("swahili-3-0", "?", [("E", 0)]), qa("telugu-4-0", "?", [("f", 2)]), qa("swahili-5-1", "?", [("f", 2)]),
    ])])  # fmt: skip
    assert [e.id for e in tydiqa.load("validation", "sw", original)] == ["swahili-3-0", "swahili-5-1"]
    assert all(e.language == "sw" for e in tydiqa.load("validation", "sw", original))


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"xquad\.el\.json"):
        get_task("xquad").load("test", "el", tmp_path)
    # a non-English SQuAD train split is XTREME's translate-train file (tests/test_translate_train.py)
    with pytest.raises(DataNotFoundError, match=r"squad\.translate\.train\.en-de\.json"):
        get_task("xquad").load("train", "de", tmp_path)
    with pytest.raises(UnknownLanguageError, match="task 'squad_v2' has no language 'de'"):
        get_task("squad_v2").load("train", "de", tmp_path)
    broken = tmp_path / "xquad.ar.json"
    broken.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(CorruptDataError, match="not valid UTF-8 JSON"):
        get_task("xquad").load("test", "ar", tmp_path)
    squad_json(tmp_path / "xquad.hi.json", [("ctx", [{"id": "h1", "question": "?", "answers": [{"text": "c"}]}])])
    with pytest.raises(CorruptDataError, match="question 'h1' lacks or mangles 'answer_start'"):
        get_task("xquad").load("test", "hi", tmp_path)


def test_hub_path_fails_with_a_one_line_error_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match=r"cannot load google/xquad \(xquad\.de, validation\)"):
        get_task("xquad").load("test", "de")


def test_real_xquad_files_through_the_task():
    if not XQUAD.is_dir():
        pytest.skip(f"real data not present: {XQUAD}")
    spec = get_task("xquad")
    assert spec.languages == XQUAD_LANGUAGES and spec.family is Family.SPAN_QA
    ids = None
    for language in XQUAD_LANGUAGES:
        examples = spec.load("test", language, XQUAD)
        assert len(examples) == 1190 and len({e.context for e in examples}) == 240
        # XQuAD is parallel: the same question ids in every language, each answer where it says it is.
        assert ids is None or [e.id for e in examples] == ids
        ids = [e.id for e in examples]
        assert all(e.context[e.answer_starts[0] :].startswith(e.answer_texts[0]) for e in examples)


# ------------------------------------------------------------------------------------ features


def test_answer_token_span_hand_computed():
    # Context tokens (char start, end): "Paris" 0-5, "is" 6-8, "big" 9-12, "." 12-13
    starts, ends = [0, 6, 9, 12], [5, 8, 12, 13]
    assert answer_token_span(starts, ends, 6, 12) == (1, 2)
    assert answer_token_span(starts, ends, 1, 4) == (0, 0)  # inside one token
    assert answer_token_span(starts, ends, 5, 8) == (0, 1)  # starts on the space after "Paris"
    assert answer_token_span(starts, ends, 12, 14) is None  # runs past the window
    assert answer_token_span([], [], 0, 1) is None


def check_windows(features, examples, max_length: int) -> int:
    """Every window's label is the minimal token span covering the first gold answer (checked against
    the character offsets token by token); returns the number of windows holding their answer."""
    labelled = 0
    for f in features:
        assert len(f["input_ids"]) <= max_length
        example = examples[f["example"]]
        begin, starts, ends = f["context_start"], f["char_starts"], f["char_ends"]
        assert begin >= 4  # after "<s> question </s></s>"
        a = example.answer_starts[0]
        b = a + len(example.answer_texts[0])
        inside = bool(starts) and starts[0] <= a and ends[-1] >= b
        s, e = f["start_position"] - begin, f["end_position"] - begin
        if not inside:
            assert (f["start_position"], f["end_position"]) == (0, 0)
            continue
        labelled += 1
        assert 0 <= s <= e < len(starts)
        assert starts[s] <= a and ends[e] >= b  # covers the answer ...
        assert s == len(starts) - 1 or starts[s + 1] > a  # ... and is minimal
        assert e == s or ends[e - 1] < b
        assert example.answer_texts[0].strip() in example.context[starts[s] : ends[e]]
    return labelled


def test_features_on_a_long_context_with_the_synthetic_tokenizer(synthetic_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(synthetic_model))
    sentences = [f"Rosa sells {i} cats and Omar buys {i + 1} dogs ." for i in range(40)]
    context = " ".join(sentences)
    examples = []
    for k in (0, 13, 27, 39):
        answer = f"Omar buys {k + 1} dogs"
        examples.append(QAExample(f"q{k}", "Who buys dogs ?", context, (answer,), (context.index(answer + " ."),)))
    examples.append(QAExample("none", "Who ?", context, (), (), True))
    spec = get_task("squad")
    features = ops_for(spec).featurize(spec, examples, tokenizer, 64)
    per_example = np.bincount([f["example"] for f in features])
    assert per_example.min() > 3  # the context needs many windows
    assert check_windows([f for f in features if f["example"] < 4], examples, 64) >= 4
    assert all((f["start_position"], f["end_position"]) == (0, 0) for f in features if f["example"] == 4)
    # Consecutive windows overlap (doc stride): every context character is covered.
    covered = set()
    for f in features:
        if f["example"] == 0:
            covered.update(range(f["char_starts"][0], f["char_ends"][-1]))
    assert covered >= {i for i, ch in enumerate(context) if not ch.isspace()}
    batch = ops_for(spec).collate(features[:3], tokenizer)
    assert batch["labels"].shape == (3, 2) and batch["input_ids"].shape[0] == 3


def test_squad_v2_decoding_predicts_no_answer_from_the_null_score(synthetic_model):
    from transformers import AutoTokenizer

    from fastxlt.tasks import metrics

    tokenizer = AutoTokenizer.from_pretrained(str(synthetic_model))
    context = " ".join(f"Rosa sells {i} cats and Omar buys {i + 1} dogs ." for i in range(12))
    examples = [
        QAExample("a", "Who buys dogs ?", context, ("Omar buys 9 dogs",), (context.index("Omar buys 9 dogs"),)),
        QAExample("b", "Who buys 3 cats ?", context, (), (), True),
        QAExample("c", "Who sells cats ?", context, ("Rosa sells 11 cats",), (context.index("Rosa sells 11 cats"),)),
    ]
    spec = get_task("squad_v2")
    ops = ops_for(spec)
    features = ops.featurize(spec, examples, tokenizer, 48)
    rng = np.random.default_rng(0)
    outputs = []
    for f in features:
        logits = rng.uniform(-1, 1, size=(len(f["input_ids"]), 2)).astype(np.float32)
        if f["start_position"] > 0:  # the answer: 8 + 8 beats the null score of every window (< 2 + 5)
            logits[f["start_position"], 0] = logits[f["end_position"], 1] = 8.0
        if examples[f["example"]].is_impossible:
            logits[0] = 5.0  # null 10 > any span (< 2)
        outputs.append(logits)
    predictions, gold = ops.decode(examples, features, outputs)
    assert predictions == ["Omar buys 9 dogs", "", "Rosa sells 11 cats"]
    shuffled = np.random.default_rng(1).permutation(len(features)).tolist()  # e.g. length-sorted by a caller
    assert ops.decode(examples, [features[i] for i in shuffled], [outputs[i] for i in shuffled])[0] == predictions
    assert metrics.compute("squad_v2", predictions, gold)["exact_match"] == 100.0
    # squad (v1.1) never predicts "no answer": the same logits give a span for "b".
    v1_features = ops_for(get_task("squad")).featurize(get_task("squad"), examples, tokenizer, 48)
    assert ops.decode(examples, v1_features, outputs)[0][1] != ""


def test_real_xquad_training_labels_map_back_to_the_answers(me5_small):
    if not XQUAD.is_dir():
        pytest.skip("XQuAD absent")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(me5_small))
    spec = get_task("xquad")
    for language in ("en", "zh"):
        examples = spec.load("test", language, XQUAD)
        features = SpanQAOps().featurize(spec, examples, tokenizer, 384)
        assert check_windows(features, examples, 384) >= len(examples)


# ------------------------------------------------------------------------------------ head


def test_span_head_loss_is_the_mean_of_start_and_end_cross_entropy():
    torch.manual_seed(0)
    head = SpanHead(8)
    hidden = torch.randn(3, 5, 8)
    labels = torch.tensor([[1, 3], [0, 0], [4, 9]])  # 9 is past the sequence: ignored, as in the reference
    loss, logits = head(hidden, torch.ones(3, 5, dtype=torch.long), labels)
    assert logits.shape == (3, 5, 2)
    by_hand_start = -(torch.log_softmax(logits[:, :, 0], 1)[torch.arange(3), labels[:, 0]]).mean()
    end_terms = [-torch.log_softmax(logits[i, :, 1], 0)[labels[i, 1]] for i in range(2)]
    assert torch.allclose(loss, (by_hand_start + torch.stack(end_terms).mean()) / 2)
    assert head(hidden, torch.ones(3, 5, dtype=torch.long))[0] is None


def test_make_head_builds_the_span_head(synthetic_model):
    from transformers import AutoModel

    head = make_head(get_task("xquad"), AutoModel.from_pretrained(str(synthetic_model)))
    assert isinstance(head, SpanHead) and head.qa_outputs.out_features == 2
    assert get_task("xquad").head_key == get_task("mlqa").head_key == get_task("squad").head_key == "squad"


# ------------------------------------------------------------------------------------ end to end


def first_word_dataset(path: Path, texts: list[str], prefix: str) -> list[tuple[str, str]]:
    """A learnable SQuAD-layout set: the answer is always the context's first word."""
    paragraphs = [(text, [qa(f"{prefix}{i}", "Who comes first ?", [(text.split()[0], 0)])]) for i, text in enumerate(texts)]
    squad_json(path, paragraphs)
    return [(text, text.split()[0]) for text in texts]


def test_tiny_model_trains_on_squad_layout_and_scores(tmp_path, synthetic_model):
    from fastxlt.inference.predict import score_examples
    from fastxlt.models.encoder import load_tokenizer
    from fastxlt.models.transfer import load_transfer_model
    from fastxlt.synthetic.world import get_world

    world = get_world()
    data = tmp_path / "squad"
    first_word_dataset(data / "train-v1.1.json", world.mlm_texts("en", "train", 400), "t")
    first_word_dataset(data / "dev-v1.1.json", world.mlm_texts("en", "validation", 60), "d")
    run_dir = tmp_path / "run"
    config = {
        "name": "qa-toy", "seed": 3, "run_dir": str(run_dir), "model": {"name_or_path": str(synthetic_model)},
        "kernels": "none", "data": {"squad": str(data)},
        "optimization": {"lr": 1.0e-3, "batch_size": 16, "grad_accum": 1, "max_length": 48, "max_steps": 24,
                         "eval_every": 24, "eval_batch_tokens": 4096},
        "phases": {"target": {"tasks": ["squad"]}},
    }  # fmt: skip
    config_path = tmp_path / "qa.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    model_dir = arm_phase_dir(run_dir, "target") / "model"
    spec = get_task("squad")
    model = load_transfer_model(model_dir, [spec])
    tokenizer = load_tokenizer(model_dir / "encoder")
    examples = spec.load("validation", "en", data)
    features = ops_for(spec).featurize(spec, examples, tokenizer, 48)
    scores, predictions = score_examples(model, spec, examples, features, tokenizer)
    assert len(predictions) == len(examples) == 60
    assert all(p and p in e.context for p, e in zip(predictions, examples))  # spans of the context
    assert 0.0 <= scores["exact_match"] <= scores["f1"] <= 100.0
    assert scores["f1"] > 50.0, scores  # the first word is learnable in 24 steps
