"""Mewsli-X (fastxlt.retrieval.mewsli) on the layout fixture tests/fixtures/mewsli_x: the readers, the query and
entity strings of XTREME-R's preprocessing (hand-written), and MRR@20 against hand values and a brute force."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.retrieval.mewsli import (
    LANGUAGES,
    evaluate_mewsli,
    locate_mewsli,
    mention_query,
    read_candidates,
    read_mentions,
    read_wikipedia_pairs,
)

FIXTURE = Path(__file__).parent / "fixtures" / "mewsli_x"


class HashEncoder:
    dim = 32
    layer, num_layers, pooling, max_length = 0, 0, "mean", 0

    def encode(self, texts):
        out = np.full((len(texts), self.dim), 0.1, dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.strip(".,:{}").encode()) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class Oracle(HashEncoder):
    """Puts a mention and its entity on the same axis by how their texts start; others get no axis."""

    starts = {"Paris": 1, "Berlin": 2, "Tokio": 3, "東京": 3, "Richter": 4, "Skala Richter": 4, "الولايات": 5, "Earth": 6}

    def encode(self, texts):
        out = np.full((len(texts), 8), 0.01, dtype=np.float32)
        for row, text in enumerate(texts):
            for start, axis in self.starts.items():
                if text.startswith(start):
                    out[row, axis] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def brute_force(encoder, split="test", k=20):
    entities = [json.loads(line) for line in (FIXTURE / "candidate_set_entities.jsonl").read_text(encoding="utf-8").splitlines()]
    ids, texts = read_candidates(FIXTURE / "candidate_set_entities.jsonl")
    assert ids == [e["entity_id"] for e in entities]
    candidates = encoder.encode(texts).astype(np.float64)
    mentions, _ = read_mentions(FIXTURE / f"wikinews_mentions-{split}.jsonl")
    per_language = {}
    for mention in mentions:
        scores = candidates @ encoder.encode([mention.query])[0].astype(np.float64)
        ranked = [ids[j] for j in sorted(range(len(ids)), key=lambda j: (-scores[j], j))][:k]
        rr = next((1.0 / r for r, entity in enumerate(ranked, start=1) if entity == mention.entity_id), 0.0)
        per_language.setdefault(mention.language, []).append(rr)
    return {lang: 100.0 * float(np.mean(v)) for lang, v in per_language.items()}


# ---------------------------------------------------------------------------------- texts


def test_mention_queries_follow_the_baseline_preprocessing():
    mentions, outside = read_mentions(FIXTURE / "wikinews_mentions-test.jsonl")
    queries = {m.example_id: m.query for m in mentions}
    assert outside == 0
    assert queries["en-1-a"] == "Paris: Leaders met in { Paris } on Monday."
    # braces already in the sentence become parentheses; one pass turns double spaces into single
    assert queries["en-1-b"] == "Berlin: The talks (officially) ended in { Berlin } , the German capital."
    assert queries["en-2-a"] == "Richter scale: It measured 6.8 on the { Richter scale } ."
    assert queries["en-2-b"] == "Chile: 26 March 2012 A strong earthquake shook { Chile } ."  # newline -> space
    assert queries["ja-1-a"] == "東京: 首相は { 東京 } で記者会見を行った。"
    assert [m.language for m in mentions] == ["en", "en", "en", "en", "de", "de", "de", "ar", "ja"]


def test_mention_outside_every_sentence_uses_the_whole_text():
    spans = [{"start": 0, "end": 5}, {"start": 6, "end": 11}]
    assert mention_query("ab cd ef gh", spans, 3, 8) == ("cd ef: ab { cd ef } gh", False)


def test_entity_texts():
    ids, texts = read_candidates(FIXTURE / "candidate_set_entities.jsonl")
    entity = dict(zip(ids, texts))
    assert len(ids) == 8
    assert entity["Q90"] == "Paris is the capital and most populous city of France. It lies on the Seine."
    assert entity["Q2"] == "Earth is the third planet from the Sun. It is the only astronomical object known to harbor life."


def test_wikipedia_pairs():
    train = read_wikipedia_pairs(FIXTURE / "wikipedia_pairs-train.jsonl")
    assert len(train) == 4
    assert train[0].query == "Paris: The treaty was signed in { Paris } in 1783."
    assert train[0].candidate.startswith("Paris is the capital") and train[0].candidate_context is None
    assert train[0].candidate_id == "Q90"


# ---------------------------------------------------------------------------------- scores


def test_hand_computed_scores():
    result = evaluate_mewsli(Oracle(), FIXTURE)
    # en: Paris, Berlin, Richter scale right at rank 1; Chile's gold Q298 is not a candidate -> 0
    assert result["languages"] == pytest.approx({"en": 75.0, "de": 100.0, "ar": 100.0, "ja": 100.0})
    assert result["score"] == pytest.approx(93.75)
    assert result["task"] == "mewsli-x" and result["metric"] == "map@20"
    assert set(result["skipped"]) == set(LANGUAGES) - {"en", "de", "ar", "ja"}
    assert result["details"]["gold_not_in_candidates"] == {"en": 1}
    assert result["details"]["mentions"] == {"ar": 1, "de": 3, "en": 4, "ja": 1}


def test_against_brute_force():
    for split in ("test", "dev"):
        result = evaluate_mewsli(HashEncoder(), FIXTURE, split=split)
        assert result["languages"] == pytest.approx(brute_force(HashEncoder(), split), abs=1e-9)
    assert evaluate_mewsli(HashEncoder(), FIXTURE, ["de"])["languages"].keys() == {"de"}


def test_real_encoder_wiring(tiny_encoder):
    from fastxlt.retrieval.embed import TorchSentenceEncoder

    encoder = TorchSentenceEncoder.from_pretrained(str(tiny_encoder), layer=-1, pooling="mean", max_length=64, device="cpu")
    result = evaluate_mewsli(str(tiny_encoder), FIXTURE, max_length=64, device="cpu")
    assert result["languages"] == pytest.approx(brute_force(encoder), abs=1e-6)


# ---------------------------------------------------------------------------------- layouts and errors


def test_layouts(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "download" / "mewslix")
    files, _ = locate_mewsli(tmp_path / "download")
    assert files.mentions.name == "wikinews_mentions-test.jsonl"
    shutil.copytree(FIXTURE, tmp_path / "tool" / "mewsli_x" / "output" / "dataset")
    assert locate_mewsli(tmp_path / "tool", split="validation")[0].mentions.name == "wikinews_mentions-dev.jsonl"


def test_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        locate_mewsli(tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="candidate_set_entities.jsonl"):
        locate_mewsli(tmp_path)
    with pytest.raises(ConfigError, match="no split"):
        locate_mewsli(FIXTURE, split="train")
    assert "no mention language 'fr'" in locate_mewsli(FIXTURE, ["en", "fr"])[1]["fr"]
    shutil.copy(FIXTURE / "candidate_set_entities.jsonl", tmp_path)
    (tmp_path / "wikinews_mentions_no_text-test.jsonl").write_text("")
    with pytest.raises(DataNotFoundError, match="get-mewsli-x.sh"):
        locate_mewsli(tmp_path)


def test_corrupt_files(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "m")
    mentions = tmp_path / "m" / "wikinews_mentions-test.jsonl"
    rows = [json.loads(line) for line in mentions.read_text(encoding="utf-8").splitlines()]
    rows[0]["mentions"][0]["mention_span"]["start"] += 1
    mentions.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match=":1: mention 'en-1-a'"):
        evaluate_mewsli(HashEncoder(), tmp_path / "m")
    rows[0]["mentions"][0]["mention_span"]["start"] -= 1
    rows[0]["context"]["text"] = ""
    mentions.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match="article text is empty"):
        read_mentions(mentions)
    candidates = tmp_path / "m" / "candidate_set_entities.jsonl"
    candidates.write_text(candidates.read_text(encoding="utf-8") + '{"entity_id": "Q90", "description": "x", "sentence_spans": []}\n')
    with pytest.raises(CorruptDataError, match="Q90 appears 2 times"):
        read_candidates(candidates)


# ---------------------------------------------------------------------------------- command line


def test_cli(tiny_encoder, tmp_path, capsys):
    from fastxlt.cli.retrieval import main

    out = tmp_path / "out"
    assert main(["--retrieval", "mewsli-x", "--model", str(tiny_encoder), "--data", str(FIXTURE), "--output", str(out),
                 "--max-length", "64", "--device", "cpu", "--split", "dev"]) == 0
    assert "mentions" in capsys.readouterr().out
    written = json.loads((out / "mewsli-x-layer2-mean-dev.json").read_text())
    assert set(written["languages"]) == {"en", "es"} and written["details"]["split"] == "dev"


@pytest.mark.parametrize("extra,message", [
    ([], "reads local files only; pass --data"),
    (["--data", "/nonexistent/mewslix"], "does not exist"),
    (["--data", "FIXTURE", "--languages", "fr"], "--languages fr: Mewsli-X has no mention language 'fr'"),
    (["--data", "FIXTURE", "--split", "train"], "no split 'train'"),
])  # fmt: skip
def test_cli_errors(capsys, extra, message):
    from fastxlt.cli.retrieval import main

    args = [a.replace("FIXTURE", str(FIXTURE)) for a in extra]
    assert main(["--retrieval", "mewsli-x", "--model", "never-loaded", *args]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
