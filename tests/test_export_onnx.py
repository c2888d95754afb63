"""ONNX export and the ONNX Runtime backend on tiny models: parity with PyTorch for every registered task
family, batches that mix very different lengths, int8 within its documented tolerance, refusal of an
unfaithful graph, reuse of a graph and refusal of a stale one, and retrieval embeddings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastxlt.errors import CheckpointError, DataNotFoundError
from fastxlt.inference.predict import predict, score_examples
from fastxlt.export import TOLERANCES, OnnxModel, OnnxSentenceEncoder, ParityError, export_onnx
from fastxlt.export import exporter as exporter_module
from fastxlt.models.encoder import load_encoder, load_tokenizer
from fastxlt.models.transfer import TransferModel, load_transfer_model, save_phase_outputs
from fastxlt.retrieval.embed import TorchSentenceEncoder
from fastxlt.tasks.base import Family, get_task
from fastxlt.tasks.features import FAMILY_OPS, ops_for

MAX_LENGTH = 64


def sentences(count: int) -> list[str]:
    """Real text of the synthetic world (the tokenizer knows its words), several languages."""
    rows = []
    for language in get_task("synth-para").languages:
        rows += [example.text_a for example in get_task("synth-para").load("test", language)[: count // 2]]
    return rows[:count]


def family_examples(family: Family) -> tuple[str, list]:
    """A registered task of ``family`` and hand-made examples of that family's type, lengths 2 to ~60 tokens."""
    texts = sentences(40)
    if family is Family.PAIR_CLASSIFICATION:
        return "synth-para", list(get_task("synth-para").load("test", "en"))[:40]
    if family is Family.SPAN_QA:
        from fastxlt.tasks.span_qa import QAExample

        examples = []
        for i in range(12):
            context = " ".join(texts[i : i + 1 + i % 5])
            answer = context.split()[1]
            examples.append(QAExample(f"q{i}", texts[-1 - i], context, (answer,), (context.index(answer),)))
        return "xquad", examples
    if family is Family.TOKEN_TAGGING:
        from fastxlt.tasks.tagging import TaggedExample, tag_names

        names = tag_names(get_task("panx"))
        return "panx", [
            TaggedExample(tuple(words), tuple(names[(i + j) % len(names)] for j in range(len(words))))
            for i, words in enumerate(" ".join(texts[i : i + 1 + i % 4]).split() for i in range(16))
        ]
    if family is Family.MULTIPLE_CHOICE:
        from fastxlt.tasks.multiple_choice import ChoiceExample

        return "xcopa", [ChoiceExample(texts[i], (texts[i + 1], " ".join(texts[i + 2 : i + 4])), i % 2) for i in range(16)]
    raise AssertionError(family)


FAMILIES = [Family.PAIR_CLASSIFICATION, Family.SPAN_QA, Family.TOKEN_TAGGING, Family.MULTIPLE_CHOICE]


def phase_model(root: Path, encoder_dir: Path, task: str, seed: int = 0) -> Path:
    """A phase model directory as training writes it (encoder/ + heads.pt), with a random head."""
    spec = get_task(task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TransferModel(load_encoder(encoder_dir), [spec])
    save_phase_outputs(model, root, load_tokenizer(encoder_dir))
    return root


def registered(family: Family):
    get_task("synth-para")  # imports the built-in task modules, which register their families
    if family not in FAMILY_OPS:
        pytest.skip(f"family '{family.value}' has no FamilyOps registered yet")
    try:
        task, examples = family_examples(family)
        spec = get_task(task)
        from fastxlt.models.heads import make_head

        make_head(spec, load_encoder_config_only(), "cls")
    except (ImportError, NotImplementedError) as error:
        pytest.skip(f"family '{family.value}' is not complete yet: {error}")
    return spec, examples


def load_encoder_config_only():
    """A stand-in encoder with a config, enough for make_head to size a head."""
    from types import SimpleNamespace

    from fastxlt.synthetic.model import tiny_xlmr_config

    config = tiny_xlmr_config(100, hidden_size=8, num_layers=1, num_heads=1, intermediate_size=8)
    return SimpleNamespace(config=config, get_input_embeddings=lambda: torch.nn.Embedding(100, 8))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.value)
def test_fp32_graph_matches_pytorch_for_every_family(family, tiny_encoder, tmp_path):
    spec, examples = registered(family)
    tokenizer = load_tokenizer(tiny_encoder)
    ops = ops_for(spec)
    features = ops.featurize(spec, examples, tokenizer, MAX_LENGTH)
    model_dir = phase_model(tmp_path / "phase", tiny_encoder, spec.name)
    result = export_onnx(model_dir, tmp_path / "graph", task=spec, parity_features=features, threads=1)
    assert result.manifest["parity"]["max_abs"] <= 1e-4 and result.manifest["family"] == family.value

    reference = load_transfer_model(model_dir, [spec]).eval()
    runner = OnnxModel({spec.head_key: result.out_dir}, {spec.name: spec.head_key}, threads=1)
    head = runner.head_for(spec.name)
    # One batch holding the shortest and the longest features (heavy padding), outside the export's batches.
    lengths = [ops.length(f) if family is not Family.MULTIPLE_CHOICE else max(map(len, f["input_ids"])) for f in features]
    order = np.argsort(lengths)
    batch = ops.collate([features[i] for i in (*order[:3], *order[-3:])], tokenizer)
    batch.pop("labels", None)
    with torch.no_grad():
        _, expected = reference(head=head, **batch)
    _, actual = runner(head=head, **batch)
    assert actual.shape == expected.shape
    assert torch.max(torch.abs(actual - expected)).item() <= 1e-4

    # The evaluation path: same predictions through predict() and the family's decoding.
    torch_scores, torch_predictions = score_examples(reference, spec, examples, features, tokenizer, batch_tokens=512)
    onnx_scores, onnx_predictions = score_examples(runner, spec, examples, features, tokenizer, batch_tokens=512)
    assert onnx_predictions == torch_predictions
    assert onnx_scores == pytest.approx(torch_scores)


@pytest.fixture(scope="module")
def pair_graph(tiny_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    spec = get_task("synth-para")
    model_dir = phase_model(root / "phase", tiny_encoder, spec.name)
    return spec, model_dir, export_onnx(model_dir, task=spec, threads=1)


def test_mixed_lengths_in_one_batch_predict_as_one_at_a_time(pair_graph, tiny_encoder):
    spec, _, result = pair_graph
    tokenizer = load_tokenizer(tiny_encoder)
    ops = ops_for(spec)
    short = [e for e in spec.load("test", "en") if e.text_b is not None][:3]
    long_text = " ".join(sentences(12))
    examples = short + [type(short[0])(long_text, long_text, 0), type(short[0])("a", None, 1)]
    features = ops.featurize(spec, examples, tokenizer, 120)
    lengths = [len(f["input_ids"]) for f in features]
    assert max(lengths) >= 10 * min(lengths)
    runner = OnnxModel({spec.head_key: result.out_dir}, {spec.name: spec.head_key}, threads=1)
    head = runner.head_for(spec.name)
    together = ops.collate(features, tokenizer)
    together.pop("labels")
    _, batched = runner(head=head, **together)
    for row, feature in enumerate(features):
        alone = ops.collate([feature], tokenizer)
        alone.pop("labels")
        _, single = runner(head=head, **alone)  # batch axis of 1, no padding: the dynamic axes at their edge
        assert torch.allclose(batched[row], single[0], atol=1e-5)
    # ... and the packed evaluation path returns them in input order, equal to PyTorch's
    torch_model = load_transfer_model(result.manifest["source_path"], [spec]).eval()
    assert predict(runner, head, ops, features, tokenizer, batch_tokens=128) == predict(
        torch_model, head, ops, features, tokenizer, batch_tokens=128
    )


def test_graph_is_reused_and_a_stale_one_refused(pair_graph, tiny_encoder, tmp_path):
    spec, model_dir, result = pair_graph
    again = export_onnx(model_dir, task=spec, threads=1)
    assert again.reused and again.out_dir == result.out_dir
    other = phase_model(tmp_path / "other", tiny_encoder, spec.name, seed=7)
    from fastxlt.export.manifest import source_fingerprint

    wanted = {spec.head_key: source_fingerprint([other / "encoder", other / "heads.pt"])}
    with pytest.raises(CheckpointError, match="another checkpoint"):
        OnnxModel({spec.head_key: result.out_dir}, {spec.name: spec.head_key}, expected_sources=wanted)
    # Exporting the other checkpoint into the same directory replaces the graph instead of reusing it.
    replaced = export_onnx(other, result.out_dir.parent / "replaced", task=spec, threads=1)
    assert not replaced.reused and replaced.manifest["source"] == wanted[spec.head_key]


def test_parity_failure_refuses_to_save(pair_graph, tmp_path, monkeypatch):
    spec, model_dir, _ = pair_graph
    real_run = exporter_module.run_session

    def corrupted(session, inputs):  # a graph whose logits are off by 1e-3: beyond fp32's 1e-4
        return [output + np.float32(1e-3) for output in real_run(session, inputs)]

    monkeypatch.setattr(exporter_module, "run_session", corrupted)
    out = tmp_path / "refused"
    with pytest.raises(ParityError, match=r"max abs difference 0\.001 > 0\.0001.*not saved"):
        export_onnx(model_dir, out, task=spec, threads=1)
    assert not (out / "model.onnx").exists() and not (out / "manifest.json").exists()
    assert not list(tmp_path.glob(".refused.staging-*"))


_TRAINED: dict[str, dict[str, torch.Tensor]] = {}  # encoder weights' digest -> trained state (two modules use it)


def trained_paraphrase_model(encoder_dir: Path) -> TransferModel:
    """``encoder_dir`` with a synth-para head trained 100 steps to confident predictions (eval mode): a model
    whose margins reduced precision must keep, unlike a random head's near-ties. Trained once per distinct
    encoder in a test session (the int8 and bf16 tests share it)."""
    digest = hashlib.sha256((Path(encoder_dir) / "model.safetensors").read_bytes()).hexdigest()
    if digest not in _TRAINED:
        _TRAINED[digest] = _train_paraphrase_model(encoder_dir).state_dict()
    model = TransferModel(load_encoder(encoder_dir), [get_task("synth-para")])
    model.load_state_dict(_TRAINED[digest])
    return model.eval()


def _train_paraphrase_model(encoder_dir: Path) -> TransferModel:
    spec = get_task("synth-para")
    tokenizer = load_tokenizer(encoder_dir)
    ops = ops_for(spec)
    train = ops.featurize(spec, spec.load("train", "en")[:256], tokenizer, MAX_LENGTH)
    torch.manual_seed(0)
    model = TransferModel(load_encoder(encoder_dir), [spec])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(100):
        rows = [(step * 32 + i) % len(train) for i in range(32)]
        loss, _ = model(head=spec.head_key, **ops.collate([train[i] for i in rows], tokenizer))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_int8_keeps_predictions_of_a_trained_head(tiny_encoder, tmp_path):
    """Dynamic int8 on a head trained to confident predictions: within the documented tolerance."""
    spec = get_task("synth-para")
    tokenizer = load_tokenizer(tiny_encoder)
    ops = ops_for(spec)
    model = trained_paraphrase_model(tiny_encoder)
    model_dir = tmp_path / "trained"
    save_phase_outputs(model, model_dir, tokenizer)
    test = spec.load("test", "en")[:200]
    features = ops.featurize(spec, test, tokenizer, MAX_LENGTH)
    int8 = export_onnx(model_dir, task=spec, quantize="int8", parity_features=features, threads=1)
    assert int8.manifest["precision"] == "int8" and int8.manifest["parity"]["agreement"] >= TOLERANCES["int8"].min_agreement
    import onnx

    graph = onnx.load(str(int8.graph))
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.graph.node)
    runner = OnnxModel({spec.head_key: int8.out_dir}, {spec.name: spec.head_key}, threads=1)
    int8_accuracy = score_examples(runner, spec, test, features, tokenizer)[0]["accuracy"]
    reference = score_examples(model, spec, test, features, tokenizer)[0]["accuracy"]
    assert reference > 55.0  # above chance (two balanced classes): the head learnt margins worth keeping
    assert abs(int8_accuracy - reference) <= 2.0  # points; 200 examples (agreement >= 0.95 alone would allow 5)


def test_embedding_graph_matches_torch_encoder(tiny_encoder, tmp_path):
    torch_encoder = TorchSentenceEncoder.from_pretrained(str(tiny_encoder), layer=1, batch_tokens=256)
    result = export_onnx(tiny_encoder, tmp_path / "emb", layers=[1, 2], threads=1)
    assert result.manifest["kind"] == "embeddings" and result.manifest["layers"] == [1, 2]
    onnx_encoder = OnnxSentenceEncoder(result.out_dir, load_tokenizer(tiny_encoder), layer=1, batch_tokens=256, threads=1)
    texts = sentences(30) + ["x", " ".join(sentences(6))]
    expected = torch_encoder.encode_layers(texts, [1, 2])
    actual = onnx_encoder.encode_layers(texts, [1, 2])
    for layer in (1, 2):
        assert actual[layer].shape == expected[layer].shape
        assert np.max(np.abs(actual[layer] - expected[layer])) <= 1e-5
    assert onnx_encoder.dim == torch_encoder.dim and onnx_encoder.num_layers == torch_encoder.num_layers


def test_bad_models_give_one_line_errors(tiny_encoder, tmp_path):
    spec = get_task("synth-para")
    with pytest.raises(CheckpointError, match="not a fastxlt phase model") as error:
        export_onnx(tiny_encoder, tmp_path / "x", task=spec)
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        export_onnx(tmp_path / "missing", tmp_path / "y")
    with pytest.raises(CheckpointError, match="no exported head graph"):
        OnnxModel({spec.head_key: tmp_path}, {spec.name: spec.head_key})
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not a graph")
    (broken / "manifest.json").write_text(json.dumps({"format": 1, "kind": "head", "graph": "model.onnx", "precision": "fp32"}))
    runner = OnnxModel({spec.head_key: broken}, {spec.name: spec.head_key})
    with pytest.raises(CheckpointError, match="cannot load ONNX graph"):
        runner.session(spec.head_key)
    with pytest.raises(DataNotFoundError, match="pass some real examples"):
        exporter_module.parity_batches(ops_for(spec), [], load_tokenizer(tiny_encoder))
