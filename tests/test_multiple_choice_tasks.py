"""Multiple choice: readers in the original and hub layouts, the real files, features, the head and its loss.

The head check builds the model's (batch, choices) scores independently: each (context, choice) pair
is encoded on its own, pooled and scored by hand, and the cross-entropy over choices recomputed.
"""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer

from fastxlt.errors import CorruptDataError, DataNotFoundError
from fastxlt.models.encoder import load_encoder
from fastxlt.models.transfer import TransferModel
from fastxlt.tasks.base import get_task
from fastxlt.tasks.features import ops_for
from fastxlt.tasks.multiple_choice import ChoiceExample

from test_tasks_pair import jsonl, shared  # the real data under ../shared/data, JSON lines


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------------ layouts


def test_hellaswag_jsonl_and_text_layouts(tmp_path):
    record = {"ctx_a": "A man sits.", "ctx_b": "he", "ctx": "A man sits. he", "endings": ["a", "b", "c", "d"], "label": 2,
              "activity_label": "Sitting"}  # fmt: skip
    write(tmp_path / "jsonl" / "hellaswag_val.jsonl", jsonl([record, {**record, "label": ""}]))
    examples = get_task("hellaswag").load("validation", "en", tmp_path / "jsonl")
    assert examples == [ChoiceExample("A man sits.", ("he a", "he b", "he c", "he d"), 2),
                        ChoiceExample("A man sits.", ("he a", "he b", "he c", "he d"), -1)]  # fmt: skip
    text = "Sitting: A man sits. he\n2\na\nb\nc\nd\n"
    write(tmp_path / "text" / "hellaswag_val_full.txt.bz2", bz2.compress(text.encode()))
    assert get_task("hellaswag").load("validation", "en", tmp_path / "text") == [
        ChoiceExample("A man sits. he", ("a", "b", "c", "d"), 2)
    ]
    write(tmp_path / "broken" / "hellaswag_val_full.txt", "Sitting: x\n2\na\n")
    with pytest.raises(CorruptDataError, match="not a multiple of 6"):
        get_task("hellaswag").load("validation", "en", tmp_path / "broken")


def test_commonsense_qa_original_and_hub_layouts_agree(tmp_path):
    choices = [{"label": k, "text": t} for k, t in zip("ABCDE", ["bank", "library", "store", "mall", "city"])]
    original = {"answerKey": "B", "id": "x", "question": {"question_concept": "c", "choices": choices, "stem": "Where?"}}
    hub = {"id": "x", "question": "Where?", "question_concept": "c",
           "choices": {"label": list("ABCDE"), "text": ["bank", "library", "store", "mall", "city"]}, "answerKey": "B"}  # fmt: skip
    write(tmp_path / "orig" / "dev_rand_split.jsonl", jsonl([original]))
    write(tmp_path / "hub" / "validation.jsonl", jsonl([hub, {**hub, "answerKey": ""}]))
    expected = ChoiceExample("Where?", ("bank", "library", "store", "mall", "city"), 1)
    assert get_task("commonsense_qa").load("validation", "en", tmp_path / "orig") == [expected]
    assert get_task("commonsense_qa").load("validation", "en", tmp_path / "hub") == [expected, ChoiceExample(expected.context, expected.choices, -1)]
    write(tmp_path / "bad" / "validation.jsonl", jsonl([{**hub, "answerKey": "Z"}]))
    with pytest.raises(CorruptDataError, match="record 0: ValueError: answerKey 'Z'"):
        get_task("commonsense_qa").load("validation", "en", tmp_path / "bad")


def test_cosmos_social_copa_xcopa_layouts(tmp_path):
    write(tmp_path / "cosmos" / "valid.csv", 'id,context,question,answer0,answer1,answer2,answer3,label\n'
          'q1,"Rain, then sun.",Why?,a,b,c,d,3\n')  # fmt: skip
    assert get_task("cosmos_qa").load("validation", "en", tmp_path / "cosmos") == [
        ChoiceExample("Rain, then sun. Why?", ("a", "b", "c", "d"), 3)
    ]
    siqa = {"context": "Kai cooked.", "question": "What next?", "answerA": "eat", "answerB": "sleep", "answerC": "run"}
    write(tmp_path / "siqa" / "dev.jsonl", jsonl([siqa, siqa]))
    write(tmp_path / "siqa" / "dev-labels.lst", "3\n1\n")
    assert [e.label for e in get_task("social_iqa").load("validation", "en", tmp_path / "siqa")] == [2, 0]
    copa = {"premise": "The glass broke.", "choice1": "It fell.", "choice2": "It sang.", "question": "cause", "label": 0, "idx": 0}
    write(tmp_path / "copa" / "COPA" / "val.jsonl", jsonl([copa, {**copa, "question": "effect", "label": 1}]))
    write(tmp_path / "copa" / "data" / "et" / "val.et.jsonl", jsonl([{**copa, "premise": "Klaas purunes."}]))
    assert get_task("copa").load("validation", "en", tmp_path / "copa") == [
        ChoiceExample("The glass broke. What was the cause of this?", ("It fell.", "It sang."), 0),
        ChoiceExample("The glass broke. What happened as a result?", ("It fell.", "It sang."), 1),
    ]
    xcopa = get_task("xcopa")
    assert xcopa.load("validation", "et", tmp_path / "copa")[0].context == "Klaas purunes. What was the cause of this?"
    assert xcopa.load("validation", "en", tmp_path / "copa") == get_task("copa").load("validation", "en", tmp_path / "copa")
    with pytest.raises(DataNotFoundError, match="no train file for task 'xcopa' language 'et'"):
        xcopa.load("train", "et", tmp_path / "copa")


# ------------------------------------------------------------------------------------------ real files


def test_real_cosmos_qa_validation():
    examples = get_task("cosmos_qa").load("validation", "en", shared("cosmos_qa"))
    assert len(examples) == 2985
    assert all(len(e.choices) == 4 and 0 <= e.label < 4 for e in examples)
    assert examples[0].context.startswith("Do i need to go for a legal divorce ?")
    assert examples[0].context.endswith(" Why is this person asking about divorce ?")


def test_real_commonsense_qa_layouts_agree(tmp_path):
    (tmp_path / "validation.jsonl").symlink_to(shared("commonsense_qa", "validation_hf_format.jsonl"))
    hub = get_task("commonsense_qa").load("validation", "en", tmp_path)
    assert len(hub) == 1221 and all(len(e.choices) == 5 and 0 <= e.label < 5 for e in hub)
    original = get_task("commonsense_qa").load("validation", "en", shared("commonsense_qa", "hf_dummy_sample"))
    assert original == hub[: len(original)] and len(original) == 2


def test_real_hellaswag_text_and_jsonl_agree():
    text = get_task("hellaswag").load("validation", "en", shared("hellaswag", "val_full_textformat"))
    assert len(text) == 10042 and all(len(e.choices) == 4 and 0 <= e.label < 4 for e in text)
    sample = shared("hellaswag", "hf_dummy_sample")
    records = [json.loads(line) for line in (sample / "hellaswag_val.jsonl").read_text().splitlines() if line.strip()]
    original = get_task("hellaswag").load("validation", "en", sample)
    for record, example, line in zip(records, original, text):  # the sample rows are the first val items
        assert line.context == record["ctx"] and line.choices == tuple(record["endings"])
        assert example.label == line.label == record["label"]
        assert example.choices == tuple(f"{record['ctx_b']} {ending}" for ending in record["endings"])


# ------------------------------------------------------------------------------------------ features + head


@pytest.fixture(scope="module")
def tokenizer(synthetic_model):
    return AutoTokenizer.from_pretrained(synthetic_model)


EXAMPLES = [
    ChoiceExample("Marco bought bread. Why?", ("he was hungry", "the sky is green", "no", "bread was sold out today"), 0),
    ChoiceExample("Anna slept.", ("she was tired", "x", "the cat", "it rained all night long in the city"), 3),
]


def test_featurize_and_collate_shapes(tokenizer):
    spec = get_task("hellaswag")
    ops = ops_for(spec)
    features = ops.featurize(spec, EXAMPLES, tokenizer, max_length=16)
    for example, feature in zip(EXAMPLES, features):
        assert len(feature["input_ids"]) == 4 and feature["label"] == example.label
        for choice, ids in zip(example.choices, feature["input_ids"]):
            assert ids == tokenizer(example.context, choice, truncation="longest_first", max_length=16)["input_ids"]
    assert ops.length(features[1]) == 4 * max(len(ids) for ids in features[1]["input_ids"])
    batch = ops.collate(features, tokenizer)
    width = max(len(ids) for f in features for ids in f["input_ids"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 4, width)
    assert batch["labels"].tolist() == [0, 3]
    assert batch["attention_mask"][1, 3].sum() == len(features[1]["input_ids"][3])
    with pytest.raises(ValueError, match="mixes examples with"):
        ops.collate([features[0], {"input_ids": features[0]["input_ids"][:2], "label": 0}], tokenizer)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_head_scores_each_pair_like_a_direct_computation(tokenizer, synthetic_model, pooling):
    spec = get_task("cosmos_qa")
    model = TransferModel(load_encoder(synthetic_model), [spec], pooling=pooling).eval()
    ops = ops_for(spec)
    batch = ops.collate(ops.featurize(spec, EXAMPLES, tokenizer, max_length=32), tokenizer)
    with torch.no_grad():
        loss, logits = model(head=model.head_for("cosmos_qa"), **batch)
        assert logits.shape == (2, 4)
        head = model.heads[model.head_for("cosmos_qa")]
        direct = torch.empty(2, 4)
        for b, example in enumerate(EXAMPLES):
            for c, choice in enumerate(example.choices):
                ids = torch.tensor([tokenizer(example.context, choice, truncation=True, max_length=32)["input_ids"]])
                hidden = model.encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
                pooled = hidden[0] if pooling == "cls" else hidden.mean(dim=0)
                direct[b, c] = head.scorer(torch.tanh(head.dense(pooled)))[0]
    torch.testing.assert_close(logits, direct, atol=1e-5, rtol=1e-5)
    expected = -(F.log_softmax(direct, dim=-1)[0, 0] + F.log_softmax(direct, dim=-1)[1, 3]) / 2
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    assert ops.predict(logits, batch) == direct.argmax(dim=-1).tolist()


def test_hub_columns_of_each_task(monkeypatch):
    import datasets

    tables = {
        ("Rowan/hellaswag", None, "validation"): {"ctx_a": ["A man sits."], "ctx_b": [""], "endings": [["a", "b", "c", "d"]],
                                                  "label": ["1"]},
        ("allenai/cosmos_qa", None, "test"): {"context": ["c"], "question": ["q?"], "answer0": ["0"], "answer1": ["1"],
                                              "answer2": ["2"], "answer3": ["3"], "label": [-1]},
        ("allenai/social_i_qa", None, "train"): {"context": ["c"], "question": ["q?"], "answerA": ["a"], "answerB": ["b"],
                                                 "answerC": ["c"], "label": ["2\n"]},
        ("aps/super_glue", "copa", "train"): {"premise": ["p."], "choice1": ["x"], "choice2": ["y"], "question": ["effect"],
                                              "label": [1], "idx": [0]},
        ("cambridgeltl/xcopa", "th", "test"): {"premise": ["p."], "choice1": ["x"], "choice2": ["y"], "question": ["cause"],
                                               "label": [0], "idx": [0], "changed": [False]},
    }  # fmt: skip
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None, **kw: datasets.Dataset.from_dict(tables[(path, name, split)]))
    assert get_task("hellaswag").load("validation", "en") == [ChoiceExample("A man sits.", ("a", "b", "c", "d"), 1)]
    assert get_task("cosmos_qa").load("test", "en") == [ChoiceExample("c q?", ("0", "1", "2", "3"), -1)]
    assert get_task("social_iqa").load("train", "en")[0].label == 1  # 1-based on the hub
    assert get_task("copa").load("train", "en") == [ChoiceExample("p. What happened as a result?", ("x", "y"), 1)]
    assert get_task("xcopa").load("test", "th") == [ChoiceExample("p. What was the cause of this?", ("x", "y"), 0)]
    with pytest.raises(DataNotFoundError, match="has no train split for task 'xcopa' language 'th'"):
        get_task("xcopa").load("train", "th")


# ------------------------------------------------------------------------------------------ English MC -> XCOPA


def test_an_english_choice_head_is_the_head_xcopa_is_scored_with(tmp_path, tokenizer, synthetic_model):
    """XTREME-R evaluates XCOPA with a model trained on an English multiple-choice task: every choice task
    shares one scorer head, so a model saved after CommonsenseQA loads for XCOPA with that very head."""
    from fastxlt.models.transfer import load_transfer_model, save_phase_outputs

    torch.manual_seed(0)
    trained = TransferModel(load_encoder(synthetic_model), [get_task("commonsense_qa")], pooling="mean")
    save_phase_outputs(trained, tmp_path / "model", tokenizer)
    loaded = load_transfer_model(tmp_path / "model", [get_task("xcopa")]).eval()
    assert loaded.head_for("xcopa") == trained.head_for("commonsense_qa")
    for name, tensor in trained.heads[trained.head_for("commonsense_qa")].state_dict().items():
        torch.testing.assert_close(loaded.heads[loaded.head_for("xcopa")].state_dict()[name], tensor)


@pytest.mark.skipif(not shared("xcopa", "data", "it", "val.it.jsonl").is_file(), reason="no ../shared/data/xcopa")
def test_xcopa_is_evaluated_with_a_commonsense_qa_model_as_a_direct_computation(tmp_path, tokenizer, synthetic_model):
    """The evaluation engine's XCOPA predictions are the argmax of the saved head's scores, computed pair by pair."""
    from fastxlt.evaluation.model_eval import evaluate_models
    from fastxlt.models.transfer import save_phase_outputs

    torch.manual_seed(1)
    trained = TransferModel(load_encoder(synthetic_model), [get_task("commonsense_qa")], pooling="mean").eval()
    save_phase_outputs(trained, tmp_path / "model", tokenizer)
    data = str(shared("xcopa"))
    results = evaluate_models({"csqa": tmp_path / "model"}, ["xcopa"], languages=["it"], split="validation",
                              out_root=tmp_path / "out", data_dirs={"xcopa": data}, max_length=64, max_examples=20)
    records = [json.loads(line) for line in shared("xcopa", "data", "it", "val.it.jsonl").read_text().splitlines()[:20]]
    head = trained.heads[trained.head_for("commonsense_qa")]
    predictions = []
    with torch.no_grad():
        for record in records:
            phrase = "What was the cause of this?" if record["question"] == "cause" else "What happened as a result?"
            scores = []
            for choice in (record["choice1"], record["choice2"]):
                ids = torch.tensor([tokenizer(f"{record['premise']} {phrase}", choice, truncation=True, max_length=64)["input_ids"]])
                hidden = trained.encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
                scores.append(float(head.scorer(torch.tanh(head.dense(hidden.mean(dim=0))))[0]))
            predictions.append(max(range(2), key=scores.__getitem__))
    written = json.loads((tmp_path / "out" / "eval" / "csqa" / "xcopa" / "it.json").read_text())
    assert written["predictions"] == predictions
    correct = sum(p == int(r["label"]) for p, r in zip(predictions, records))
    score = results["arms"]["csqa"]["tasks"]["xcopa"]["languages"]["it"]["accuracy"]
    assert score == pytest.approx(100.0 * correct / len(records), abs=1e-6)
