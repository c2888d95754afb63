"""The dual-encoder objective (fastxlt.retrieval.dual_encoder): the in-batch softmax loss against a hand-written
reference, the retrieval family's features and dev metric, a few training steps that raise mAP@20 on a toy set,
SQuAD -> retrieval conversion and the sentence breaker, and a real `fastxlt train` phase on XQuAD English."""

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

from fastxlt.retrieval.dual_encoder import (
    DualEncoderHead,
    RetrievalExample,
    RetrievalOps,
    in_batch_softmax_loss,
    infer_sentence_breaks,
    squad_retrieval_examples,
)
from fastxlt.retrieval.map_at_k import retrieval_average_precision

REPO = Path(__file__).resolve().parents[1]


def reference_loss(q: np.ndarray, c: np.ndarray, scale: float = 100.0) -> float:
    """-mean_i log softmax_j(scale * q_i . c_j)[i], in float64 with an explicit log-sum-exp."""
    logits = scale * q.astype(np.float64) @ c.astype(np.float64).T
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_z - np.diag(logits)))


def unit(rows: int, width: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_loss_equals_the_hand_written_reference():
    for seed, rows in ((0, 1), (1, 5), (2, 16)):
        q, c = unit(rows, 8, seed), unit(rows, 8, seed + 100)
        got = in_batch_softmax_loss(torch.from_numpy(q), torch.from_numpy(c))
        assert float(got) == pytest.approx(reference_loss(q, c), rel=1e-5, abs=1e-5)
    q = unit(3, 4, 9)
    assert float(in_batch_softmax_loss(torch.from_numpy(q), torch.from_numpy(q), scale=1.0)) == pytest.approx(
        reference_loss(q, q, 1.0), rel=1e-6)  # fmt: skip


def test_head_pools_normalises_and_scores():
    torch.manual_seed(0)
    batch, width, hidden = 3, 5, 6
    sequence = torch.randn(batch * 2, width, hidden)
    mask = torch.ones(batch, 2, width, dtype=torch.long)
    mask[0, 0, 3:] = 0  # a short question
    loss, embeddings = DualEncoderHead("mean")(sequence, mask, torch.arange(batch))
    flat_mask = mask.reshape(batch * 2, width, 1).float()
    pooled = (sequence * flat_mask).sum(1) / flat_mask.sum(1)
    pooled = (pooled / pooled.norm(dim=1, keepdim=True)).view(batch, 2, hidden).numpy()
    np.testing.assert_allclose(embeddings.numpy(), pooled, atol=1e-6)
    assert float(loss) == pytest.approx(reference_loss(pooled[:, 0], pooled[:, 1]), rel=1e-5)
    assert DualEncoderHead("cls")(sequence, mask)[0] is None
    assert not list(DualEncoderHead().parameters())  # the encoder is the whole dual encoder


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """24 (query, candidate) pairs with no word in common, a BPE tokenizer on them and a tiny random XLM-R."""
    from fastxlt.synthetic.model import build_tiny_encoder
    from fastxlt.synthetic.tokenizer import train_tokenizer

    examples = [RetrievalExample(f"ask about q{i} please", f"c{i} is the answer", None, f"c{i}") for i in range(24)]
    out = tmp_path_factory.mktemp("toy-dual-encoder")
    corpus = [ex.query for ex in examples] + [ex.candidate for ex in examples]
    tokenizer = train_tokenizer(corpus * 4, 200, out)
    build_tiny_encoder(tokenizer, seed=1, out_dir=out, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                       max_length=32, dropout=0.0)
    return examples, out


def test_features_and_collate(toy):
    from fastxlt.models.encoder import load_tokenizer

    examples, model_dir = toy
    tokenizer = load_tokenizer(str(model_dir))
    pair = RetrievalExample("q0", "c0 is the answer", "c0 is the answer . c1 too", "p0:0")
    features = RetrievalOps().featurize(None, [examples[0], pair], tokenizer, max_length=8)
    assert len(features[1]["candidate_ids"]) == 8  # the pair is truncated, longest (the paragraph) first
    assert features[1]["candidate_ids"].count(tokenizer.sep_token_id) >= 2  # <s> A </s></s> B </s>
    batch = RetrievalOps().collate(features, tokenizer)
    width = max(RetrievalOps.length(f) for f in features)
    assert batch["input_ids"].shape == (2, 2, width) and batch["attention_mask"].shape == (2, 2, width)
    assert batch["labels"].tolist() == [0, 1]
    assert batch["attention_mask"][0, 0].sum() == len(features[0]["query_ids"])


def test_dev_metric_ranks_every_distinct_candidate():
    ops = RetrievalOps()
    features = [{"candidate_id": cid} for cid in ("a", "b", "a", "c")]
    axis = np.eye(3, dtype=np.float32)
    outputs = [np.stack([axis[0], axis[0]]), np.stack([axis[0], axis[1]]), np.stack([axis[2], axis[0]]),
               np.stack([axis[1], axis[2]])]  # fmt: skip
    predictions, gold = ops.decode(None, features, outputs)
    # candidates a=e0, b=e1, c=e2 (a's first occurrence); zero scores tie and go in index order:
    # query 1 (e0) ranks a, b, c -> b at 2; query 2 (e2) ranks c, a, b -> a at 2; query 3 (e1) ranks b, a, c -> c at 3
    assert predictions == pytest.approx([1.0, 1 / 2, 1 / 2, 1 / 3])
    assert gold == ["a", "b", "a", "c"]
    from fastxlt.tasks import metrics

    assert metrics.compute("map@20", predictions, gold)["map@20"] == pytest.approx(100 * np.mean(predictions))
    rows = metrics.example_statistics("map@20", predictions, gold)
    assert metrics.metric_from_statistics("map@20", rows)["map@20"] == pytest.approx(100 * np.mean(predictions))


def _toy_map(model, tokenizer, examples) -> float:
    from fastxlt.inference.predict import score_examples
    from fastxlt.tasks.base import get_task

    spec = get_task("squad_retrieval")
    features = RetrievalOps().featurize(spec, examples, tokenizer, 32)
    return score_examples(model, spec, examples, features, tokenizer)[0]["map@20"]


def test_a_few_steps_raise_map(toy):
    """The objective through TransferModel (as a phase trains it): mAP@20 of the toy pairs goes up."""
    from fastxlt.models.encoder import load_encoder, load_tokenizer
    from fastxlt.models.transfer import TransferModel
    from fastxlt.tasks.base import get_task

    examples, model_dir = toy
    tokenizer = load_tokenizer(str(model_dir))
    torch.manual_seed(0)
    model = TransferModel(load_encoder(str(model_dir)), [get_task("squad_retrieval")], pooling="mean")
    before = _toy_map(model, tokenizer, examples)
    ops = RetrievalOps()
    features = ops.featurize(None, examples, tokenizer, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(40):
        rows = rng.choice(len(features), size=12, replace=False)
        loss, _ = model(head="dual_encoder", **ops.collate([features[i] for i in rows], tokenizer))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _toy_map(model, tokenizer, examples)
    assert after > before + 20.0, (before, after)


def test_sentence_breaker():
    text = "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday! Was it late? \"Yes.\" The U.S. agreed (c. 1990)."
    sentences = [text[s:e] for s, e in infer_sentence_breaks(text)]
    assert sentences == ["Mr. Smith went to Washington.", "He arrived at 5 p.m. on Monday!", "Was it late?", "\"Yes.\"",
                         "The U.S. agreed (c. 1990)."]  # fmt: skip
    assert infer_sentence_breaks("  One.  Two.  ") == [(2, 6), (8, 12)]


def test_sentence_breaker_agrees_with_xquad_r(shared_data):
    """Against XQuAD-R's annotated breaks (English): the answer sentence is the same for >= 95% of questions."""
    data = json.loads((shared_data / "xquad_r" / "xquad-r" / "en.json").read_text(encoding="utf-8"))
    same = total = 0
    for paragraph in (p for a in data["data"] for p in a["paragraphs"]):
        context = paragraph["context"]
        inferred = infer_sentence_breaks(context)
        for qa in paragraph["qas"]:
            start = qa["answers"][0]["answer_start"]
            gold = next(context[s:e] for s, e in paragraph["sentence_breaks"] if s <= start < e).strip()
            ours = next((context[s:e] for s, e in inferred if s <= start < e), "").strip()
            same, total = same + (gold == ours), total + 1
    assert same / total >= 0.95


def test_squad_retrieval_examples():
    from fastxlt.tasks.span_qa import QAExample

    context = "Paris is in France. It is large. Berlin is in Germany."
    qas = [QAExample("1", "Where is Paris?", context, ("France",), (12,)),
           QAExample("2", "Is it large?", context, ("large",), (26,)),
           QAExample("3", "Same sentence?", context, ("Paris",), (0,)),
           QAExample("4", "No answer", context, (), (), is_impossible=True)]  # fmt: skip
    examples = squad_retrieval_examples(qas)
    assert [ex.candidate for ex in examples] == ["Paris is in France.", "It is large.", "Paris is in France."]
    assert all(ex.candidate_context == context for ex in examples)
    assert examples[0].candidate_id == examples[2].candidate_id != examples[1].candidate_id


def test_fastxlt_phase_on_xquad_english(shared_data, tiny_encoder, tmp_path):
    """`fastxlt train` runs a squad_retrieval phase (XQuAD English standing in for SQuAD v1.1 train, which is not
    here), writes a Hugging Face encoder, and LAReQA evaluates that encoder."""
    from fastxlt.retrieval.lareqa import evaluate_lareqa

    xquad = json.loads((shared_data / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))
    squad = tmp_path / "squad"
    squad.mkdir()
    (squad / "train-v1.1.json").write_text(json.dumps({"version": "1.1", "data": xquad["data"][:2]}), encoding="utf-8")
    (squad / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": xquad["data"][2:3]}), encoding="utf-8")
    config = {
        "name": "dual", "seed": 3, "run_dir": str(tmp_path / "run"), "model": {"name_or_path": str(tiny_encoder), "pooling": "mean"},
        "kernels": "none", "data": {"squad_retrieval": str(squad)},
        "optimization": {"lr": 1.0e-4, "batch_size": 8, "grad_accum": 1, "max_length": 64, "max_steps": 3,
                         "eval_every": 3, "eval_batch_tokens": 4096},
        "phases": {"target": {"tasks": ["squad_retrieval"]}},
    }  # fmt: skip
    path = tmp_path / "dual.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "fastxlt.cli", "train", "--no-eval", "--config", str(path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    phase = json.loads(next((tmp_path / "run").rglob("phase.json")).read_text())
    assert phase["optimizer_steps"] == 3 and phase["best_dev_score"] is not None
    encoder = next((tmp_path / "run").rglob("model/encoder"))
    xquad_r = tmp_path / "xquad_r" / "xquad-r"
    xquad_r.mkdir(parents=True)
    for lang in ("en", "de"):
        data = json.loads((shared_data / "xquad_r" / "xquad-r" / f"{lang}.json").read_text(encoding="utf-8"))
        (xquad_r / f"{lang}.json").write_text(json.dumps({"data": data["data"][:1]}), encoding="utf-8")
    scores = evaluate_lareqa(str(encoder), xquad_r.parent, max_length=64, device="cpu")
    assert set(scores["languages"]) == {"en", "de"} and 0.0 <= scores["score"] <= 100.0


def test_map_from_embeddings_matches_ops_decode():
    q, c = unit(10, 6, 1), unit(10, 6, 2)
    outputs = [np.stack([q[i], c[i]]) for i in range(10)]
    predictions, _ = RetrievalOps().decode(None, [{"candidate_id": str(i)} for i in range(10)], outputs)
    np.testing.assert_allclose(predictions, retrieval_average_precision(q, c, [[i] for i in range(10)], 20))
