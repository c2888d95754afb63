"""The evaluation cache knows what it computed (issue 14, item 5): a cached language is reused only when every
input that changes its numbers is the same (model, backend/precision, split, max_length, data directory and
the data files themselves)."""

from __future__ import annotations

import json
import os

import pytest

import fastxlt.evaluation.zero_shot as zero_shot
from fastxlt.evaluation.model_eval import evaluate_model

ROWS = [("the cat sat", "a cat sat down"), ("dogs bark", "nothing barks"), ("it rains", "the weather is wet"),
        ("she reads", "she is reading"), ("we ran home", "we walked"), ("red apples", "green apples"),
        ("the sun rose", "night fell"), ("he sings", "he is singing"), ("cold water", "hot water"),
        ("a long road", "a short road"), ("birds fly", "birds can fly"), ("old books", "new books")]  # fmt: skip
LABELS = ["entailment", "neutral", "contradiction"]


@pytest.fixture(scope="module")
def xnli_model(tmp_path_factory, synthetic_model):
    """A tiny encoder with an (untrained) NLI head, saved as a fastxlt run's target model."""
    import torch

    from fastxlt.models.encoder import load_encoder, load_tokenizer
    from fastxlt.models.transfer import TransferModel, save_phase_outputs
    from fastxlt.synthetic.model import build_tiny_encoder
    from fastxlt.tasks.base import get_task

    root = tmp_path_factory.mktemp("xnli-run")
    tokenizer = load_tokenizer(synthetic_model)
    build_tiny_encoder(tokenizer, seed=7, out_dir=root / "encoder", hidden_size=32, num_layers=2, num_heads=2,
                       intermediate_size=64, max_length=128, dropout=0.0)  # fmt: skip
    torch.manual_seed(1)
    model = TransferModel(load_encoder(root / "encoder"), [get_task("xnli")])
    save_phase_outputs(model, root / "run" / "target" / "baseline" / "model", tokenizer)
    return root / "run"


def write_xnli(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{a}\t{b}\t{label}\n" for (a, b), label in zip(ROWS, labels))
    (folder / "test-de.tsv").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def counted(monkeypatch):
    """Counts the languages actually predicted (a cache hit predicts nothing)."""
    calls = []
    original = zero_shot.predict_examples

    def predict(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(zero_shot, "predict_examples", predict)
    return calls


def run(model, data, out, max_length=64):
    results = evaluate_model(str(model), ["xnli"], languages="de", split="test", data_dir=str(data), output=str(out),
                             batch_tokens=None, max_length=max_length)  # fmt: skip
    saved = json.loads((out / "eval" / "baseline" / "xnli" / "de.json").read_text(encoding="utf-8"))
    return results["arms"]["baseline"]["tasks"]["xnli"]["languages"]["de"], saved


def accuracy(predictions, labels):
    """The reference: the share of predicted label ids equal to the file's gold ids."""
    gold = [LABELS.index(label) for label in labels]
    return 100.0 * sum(p == g for p, g in zip(predictions, gold)) / len(gold)


def test_cache_is_reused_only_for_the_same_inputs(xnli_model, tmp_path, counted):
    labels = [LABELS[i % 3] for i in range(len(ROWS))]
    data, out = write_xnli(tmp_path / "data", labels), tmp_path / "out"
    scores, saved = run(xnli_model, data, out)
    assert len(counted) == 1 and saved["cache_key"]["max_length"] == 64
    assert scores["accuracy"] == pytest.approx(accuracy(saved["predictions"], labels))

    run(xnli_model, data, out)
    assert len(counted) == 1, "same inputs: the cached result is reused"

    # the data file changes (other gold labels): recomputed, and scored against the new labels
    flipped = [LABELS[(i + 1) % 3] for i in range(len(ROWS))]
    write_xnli(data, flipped)
    stat = (data / "test-de.tsv").stat()
    os.utime(data / "test-de.tsv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    scores, saved = run(xnli_model, data, out)
    assert len(counted) == 2
    assert scores["accuracy"] == pytest.approx(accuracy(saved["predictions"], flipped))

    run(xnli_model, data, out, max_length=32)  # another max_length
    assert len(counted) == 3
    other = write_xnli(tmp_path / "copy", flipped)  # the same content in another --data directory
    run(xnli_model, other, out, max_length=32)
    assert len(counted) == 4
    run(xnli_model, other, out, max_length=32)
    assert len(counted) == 4


def test_results_without_a_key_are_recomputed(xnli_model, tmp_path, counted):
    labels = [LABELS[i % 3] for i in range(len(ROWS))]
    data, out = write_xnli(tmp_path / "data", labels), tmp_path / "out"
    _, saved = run(xnli_model, data, out)
    path = out / "eval" / "baseline" / "xnli" / "de.json"
    del saved["cache_key"]  # as written by a version that keyed on model and split only
    saved["scores"] = {"accuracy": 99.0}
    path.write_text(json.dumps(saved), encoding="utf-8")
    scores, _ = run(xnli_model, data, out)
    assert len(counted) == 2 and scores["accuracy"] != 99.0


def test_key_fingerprints_the_gold_label_file(tmp_path):
    """XNLI test reads DERIVED_test_labels.txt beside the unlabelled files: it is part of the key."""
    from fastxlt.tasks.base import get_task

    folder = tmp_path / "xnli"
    folder.mkdir()
    (folder / "test-de.tsv").write_text("a\tb\nc\td\n", encoding="utf-8")
    (folder / "DERIVED_test_labels.txt").write_text("neutral\nentailment\n", encoding="utf-8")
    key = zero_shot.cache_key(get_task("xnli"), model_id="m", split="test", language="de", data_dir=folder, max_length=8)
    assert [entry[0] for entry in key["data_files"]] == [str((folder / "test-de.tsv").resolve()),
                                                         str((folder / "DERIVED_test_labels.txt").resolve())]
    labels = folder / "DERIVED_test_labels.txt"
    labels.write_text("contradiction\nentailment\n", encoding="utf-8")  # 2 bytes more
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 1_000_000_000))
    changed = zero_shot.cache_key(get_task("xnli"), model_id="m", split="test", language="de", data_dir=folder,
                                  max_length=8)  # fmt: skip
    assert changed["data_files"][0] == key["data_files"][0] and changed["data_files"][1] != key["data_files"][1]
