"""LAReQA on XQuAD-R (fastxlt.retrieval.lareqa): the reader on the real files (when ../shared/data has them),
the layouts and their errors, and the whole scoring pipeline against a brute force written from XTREME-R's
definition (every question against the multilingual pool, mAP@20)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.retrieval.lareqa import LANGUAGES, evaluate_lareqa, locate_xquad_r, read_pool

README_CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244, "ru": 1219,
                     "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}  # fmt: skip


class HashEncoder:
    """A deterministic bag-of-words encoder: no model, so the pipeline's arithmetic is what is tested."""

    dim = 64
    layer, num_layers, pooling, max_length = 0, 0, "mean", 0

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.strip(".,?!").encode()) % self.dim] += 1.0
        out[:, 0] += 0.5  # no zero vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_pairs(self, first, second):
        return self.encode([f"{a} {b}" for a, b in zip(first, second)])


def brute_force_lareqa(files: dict[str, Path], encoder, languages, k=20, max_questions=None) -> dict[str, float]:
    """XTREME-R's load_data + mean_avg_prec_at_k, re-done from the JSON: the pool is every file's sentences,
    a question's relevant set is every candidate marked with its id; AP@k by its definition."""
    questions, candidates, relevant = [], [], {}
    for lang, path in files.items():
        paragraphs = [p for a in json.loads(path.read_text(encoding="utf-8"))["data"] for p in a["paragraphs"]]
        for number, paragraph in enumerate(paragraphs):
            context = paragraph["context"]
            sentences = [context[s:e] for s, e in paragraph["sentence_breaks"]]
            base = len(candidates)
            candidates += [(s, context) for s in sentences]
            for qa in paragraph["qas"]:
                start = qa["answers"][0]["answer_start"]
                answer = next(context[s:e] for s, e in paragraph["sentence_breaks"] if s <= start < e)
                questions.append((lang, qa["id"], qa["question"]))
                relevant.setdefault(qa["id"], set()).update(base + i for i, s in enumerate(sentences) if s == answer)
    cand = encoder.encode_pairs([c[0] for c in candidates], [c[1] for c in candidates]).astype(np.float64)
    result = {}
    for lang in languages:
        rows = [q for q in questions if q[0] == lang][:max_questions]
        embedded = encoder.encode([q[2] for q in rows]).astype(np.float64)
        aps = []
        for (_, qid, _), vector in zip(rows, embedded):
            scores = cand @ vector
            ranked = sorted(range(len(candidates)), key=lambda j: (-scores[j], j))[:k]
            hits, total = 0, 0.0
            for r, item in enumerate(ranked, start=1):
                if item in relevant[qid]:
                    hits += 1
                    total += hits / r
            aps.append(total / min(k, len(relevant[qid])))
        result[lang] = 100.0 * float(np.mean(aps))
    return result


def write_xquad_r(folder: Path, lang: str, paragraphs: list[tuple[str, list[tuple[str, str, str]]]]) -> Path:
    """A tiny XQuAD-R file: paragraphs of (context, [(qid, question, answer text)]); sentences split on '. '."""
    data = []
    for context, qas in paragraphs:
        breaks, start = [], 0
        for piece in context.split(". "):
            end = start + len(piece) + (1 if start + len(piece) < len(context) else 0)
            breaks.append([start, min(end, len(context))])
            start = end + 1
        data.append({
            "context": context, "sentence_breaks": breaks, "sentences": [context[s:e] for s, e in breaks],
            "qas": [{"id": qid, "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]} for qid, q, a in qas],
        })  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lang}.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": data}]}), encoding="utf-8")
    return path


@pytest.fixture
def tiny_xquad_r(tmp_path) -> Path:
    en = [("The cat sat on the mat. Dogs bark loudly at night. Birds sing at dawn.",
           [("q1", "Where did the cat sit?", "the mat"), ("q2", "When do birds sing?", "at dawn")]),
          ("Rivers flow to the sea. Mountains are tall.", [("q3", "Where do rivers flow?", "the sea")])]
    de = [("Die Katze sass auf der Matte. Hunde bellen nachts laut. Voegel singen im Morgengrauen.",
           [("q1", "Wo sass die Katze?", "der Matte"), ("q2", "Wann singen Voegel?", "Morgengrauen")]),
          ("Fluesse fliessen ins Meer. Berge sind hoch.", [("q3", "Wohin fliessen Fluesse?", "Meer")])]
    write_xquad_r(tmp_path / "xquad-r", "en", en)
    write_xquad_r(tmp_path / "xquad-r", "de", de)
    return tmp_path


# ---------------------------------------------------------------------------------- real files


def test_real_xquad_r_pool(shared_data):
    files, skipped = locate_xquad_r(shared_data / "xquad_r")
    assert sorted(files) == sorted(LANGUAGES) and not skipped
    pool = read_pool(files)
    counts = {lang: sum(c.language == lang for c in pool.candidates) for lang in LANGUAGES}
    assert counts == README_CANDIDATES  # the sizes LAReQA's README publishes
    assert all(sum(q.language == lang for q in pool.questions) == 1190 for lang in LANGUAGES)
    assert not any(pool.skipped_questions.values())
    for qid, indices in pool.relevant.items():  # 11 parallel answers: one per language (two equal sentences once)
        languages = [pool.candidates[i].language for i in indices]
        assert sorted(set(languages)) == sorted(LANGUAGES), qid
        assert len(indices) <= 12


def test_real_answer_sentences_hold_the_answer(shared_data):
    files, _ = locate_xquad_r(shared_data / "xquad_r", ["en"])
    pool = read_pool({"en": files["en"]})
    raw = json.loads(files["en"].read_text(encoding="utf-8"))
    answers = {qa["id"]: qa["answers"][0]["text"] for a in raw["data"] for p in a["paragraphs"] for qa in p["qas"]}
    missing = [qid for qid, idx in pool.relevant.items() if answers[qid] not in pool.candidates[idx[0]].sentence]
    assert len(missing) <= 10  # an answer may cross a sentence break; its start is inside the sentence


def test_real_pipeline_against_brute_force(shared_data):
    files, _ = locate_xquad_r(shared_data / "xquad_r")
    encoder = HashEncoder()
    result = evaluate_lareqa(encoder, shared_data / "xquad_r", ["en", "de", "zh"], max_questions=25)
    expected = brute_force_lareqa(files, encoder, ["en", "de", "zh"], max_questions=25)
    assert result["languages"] == pytest.approx(expected, abs=1e-9)
    assert result["details"]["candidates"] == sum(README_CANDIDATES.values())
    assert result["details"]["questions"] == {"en": 25, "de": 25, "zh": 25}


# ---------------------------------------------------------------------------------- layouts and errors


def test_tiny_pipeline_against_brute_force(tiny_xquad_r):
    files, _ = locate_xquad_r(tiny_xquad_r)
    result = evaluate_lareqa(HashEncoder(), tiny_xquad_r)
    assert result["task"] == "lareqa" and result["metric"] == "map@20"
    assert result["languages"] == pytest.approx(brute_force_lareqa(files, HashEncoder(), ["de", "en"]), abs=1e-9)
    assert result["score"] == pytest.approx(np.mean(list(result["languages"].values())))
    assert set(result["skipped"]) == set(LANGUAGES) - {"en", "de"}  # the other nine files are missing here
    assert result["details"]["pool_languages"] == ["de", "en"]


def test_hand_computed_scores(tiny_xquad_r):
    # an oracle that puts every question next to its answers: mAP@20 = 100
    class Oracle(HashEncoder):
        keys = {"cat": 1, "katze": 1, "birds": 2, "voegel": 2, "rivers": 3, "fluesse": 3}

        def encode(self, texts):
            out = np.full((len(texts), 4), 0.01, dtype=np.float32)
            for row, text in enumerate(texts):
                first = text.split(" </> ")[0].lower()
                for word, slot in self.keys.items():
                    if word in first.replace("?", "").replace(".", "").split():
                        out[row, slot] = 1.0
            return out / np.linalg.norm(out, axis=1, keepdims=True)

        def encode_pairs(self, first, second):
            return self.encode([f"{a} </> {b}" for a, b in zip(first, second)])

    result = evaluate_lareqa(Oracle(), tiny_xquad_r, ["en", "de"])
    assert result["languages"] == pytest.approx({"en": 100.0, "de": 100.0})


def test_layouts(tiny_xquad_r, tmp_path):
    assert sorted(locate_xquad_r(tiny_xquad_r / "xquad-r")[0]) == ["de", "en"]  # the xquad-r folder itself
    download = tmp_path / "download"
    (download / "lareqa").mkdir(parents=True)
    (tiny_xquad_r / "xquad-r").rename(download / "lareqa" / "xquad-r")  # XTREME-R's download_data.sh layout
    assert sorted(locate_xquad_r(download)[0]) == ["de", "en"]


def test_errors(tiny_xquad_r, tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        locate_xquad_r(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no XQuAD-R files"):
        locate_xquad_r(tmp_path / "empty")
    _, skipped = locate_xquad_r(tiny_xquad_r, ["en", "ro", "fr"])
    assert "no language 'ro'" in skipped["ro"] and "fr" in skipped
    with pytest.raises(ConfigError, match="candidate format"):
        evaluate_lareqa(HashEncoder(), tiny_xquad_r, candidate_format="sentence")
    with pytest.raises(ConfigError, match="max_questions"):
        evaluate_lareqa(HashEncoder(), tiny_xquad_r, max_questions=0)


def test_hub_copy_is_refused(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "validation-00000-of-00001.parquet").write_bytes(b"PAR1")
    with pytest.raises(CorruptDataError, match="no sentence breaks"):
        locate_xquad_r(tmp_path)


def test_plain_xquad_is_refused(tmp_path):
    (tmp_path / "en.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "A b.", "qas": []}]}]}))
    with pytest.raises(CorruptDataError, match="sentence_breaks"):
        read_pool(locate_xquad_r(tmp_path)[0])


def test_concat_candidates(tiny_xquad_r):
    seen = []

    class Recorder(HashEncoder):
        def encode(self, texts):
            seen.extend(texts)
            return super().encode(texts)

    evaluate_lareqa(Recorder(), tiny_xquad_r, ["en"], candidate_format="concat")
    assert "The cat sat on the mat.The cat sat on the mat. Dogs bark loudly at night. Birds sing at dawn." in seen


def test_real_encoder_wiring(tiny_xquad_r, tiny_encoder):
    """A tiny random XLM-R through the retrieval embedding code equals the brute force on its own embeddings."""
    from fastxlt.retrieval.embed import TorchSentenceEncoder

    encoder = TorchSentenceEncoder.from_pretrained(str(tiny_encoder), layer=-1, pooling="mean", max_length=64, device="cpu")
    files, _ = locate_xquad_r(tiny_xquad_r)
    by_path = evaluate_lareqa(str(tiny_encoder), tiny_xquad_r, max_length=64, device="cpu")
    assert by_path["languages"] == pytest.approx(brute_force_lareqa(files, encoder, ["de", "en"]), abs=1e-6)
    assert by_path["details"]["layer"] == 2 and by_path["details"]["pooling"] == "mean"


@pytest.mark.slow
def test_me5_small_all_languages(shared_data, me5_small):
    """The real measurement (README): multilingual-e5-small, all 11 languages, the full pool (~40 min on one core)."""
    result = evaluate_lareqa(str(me5_small), shared_data / "xquad_r")
    assert sorted(result["languages"]) == sorted(LANGUAGES) and not result["skipped"]
    assert 5.0 < result["score"] < 100.0


# ---------------------------------------------------------------------------------- command line


def test_cli(tiny_xquad_r, tiny_encoder, tmp_path, capsys):
    from fastxlt.cli import eval_main

    out = tmp_path / "out"
    code = eval_main(["--retrieval", "lareqa", "--model", str(tiny_encoder), "--data", str(tiny_xquad_r),
                      "--output", str(out), "--max-length", "64", "--device", "cpu", "--max-questions", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "map@20" in printed and "skipped ar:" in printed
    written = json.loads((out / "lareqa-layer2-mean-pair-q2.json").read_text())
    assert written["details"]["questions"] == {"de": 2, "en": 2} and written["details"]["model"] == str(tiny_encoder)
    direct = evaluate_lareqa(str(tiny_encoder), tiny_xquad_r, max_length=64, device="cpu", max_questions=2)
    assert written["languages"] == pytest.approx(direct["languages"])


@pytest.mark.parametrize("extra,message", [
    ([], "reads local files only; pass --data"),
    (["--data", "/nonexistent/xquad_r"], "does not exist"),
    (["--data", "DATA", "--languages", "en,ro"], "--languages ro: XQuAD-R has no language 'ro'"),
    (["--data", "DATA", "--languages", "zh"], "--languages zh:"),
    (["--data", "DATA", "--max-questions", "0"], "--max-questions must be a positive number"),
    (["--data", "DATA", "--backend", "onnx"], "torch backend only"),
])  # fmt: skip
def test_cli_errors(tiny_xquad_r, capsys, extra, message):
    from fastxlt.cli import eval_main

    args = [a.replace("DATA", str(tiny_xquad_r)) for a in extra]
    assert eval_main(["--retrieval", "lareqa", "--model", "never-loaded", *args]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
