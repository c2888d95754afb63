"""Data that cannot be right is refused, not trained on or scored (issue 14, item 6)."""

from __future__ import annotations

import json

import pytest

from fastxlt.experiments.preflight import experiment_from_dict
from fastxlt.errors import CorruptDataError
from fastxlt.tasks.base import PairExample, get_task
from fastxlt.tasks.multiple_choice import COPA_QUESTIONS, ChoiceExample
from fastxlt.tasks.sanity import MIN_EXAMPLES_FOR_CONSTANT_CHECK, check_scorable
from fastxlt.tasks.span_qa import QAExample, read_squad_json
from fastxlt.tasks.tagging import read_conllu, read_token_tag_file

# ------------------------------------------------------------------------------------------ SQuAD offsets


def squad_file(path, answer_start):
    context = "The Normans gave their name to Normandy, a region in France."
    document = {"data": [{"title": "Normans", "paragraphs": [{"context": context, "qas": [
        {"id": "q-1", "question": "Where is Normandy?", "answers": [{"text": "France", "answer_start": answer_start}]},
    ]}]}]}  # fmt: skip
    path.write_text(json.dumps(document), encoding="utf-8")
    return path, context


def test_answer_start_must_point_at_the_answer(tmp_path):
    path, context = squad_file(tmp_path / "train-v1.1.json", answer_start=0)
    right = context.index("France")
    with pytest.raises(CorruptDataError) as error:
        read_squad_json(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "'q-1'" in message
    assert f"answer_start 0 does not point at its answer 'France' (the text occurs at {right})" in message
    path, _ = squad_file(tmp_path / "ok.json", answer_start=right)
    (example,) = read_squad_json(path)
    assert example.context[example.answer_starts[0] :].startswith("France")


def test_real_xquad_offsets_are_all_right(shared_data):
    for language in ("de", "zh", "th"):
        assert len(read_squad_json(shared_data / "xquad" / f"xquad.{language}.json", language)) == 1190


# ------------------------------------------------------------------------------------------ constant gold


def pairs(labels):
    return [PairExample(f"a{i}", f"b{i}", label) for i, label in enumerate(labels)]


def test_constant_labels_are_refused_with_an_override():
    spec, n = get_task("xnli"), MIN_EXAMPLES_FOR_CONSTANT_CHECK
    with pytest.raises(CorruptDataError, match=r"all 10 gold labels are 0, the sign of withheld test labels.*"
                                               r"allow_constant_labels: true / fastxlt-eval --allow-constant-labels"):
        check_scorable(spec, pairs([0] * n), "xnli test de")
    check_scorable(spec, pairs([0] * n), "xnli test de", allow_constant_labels=True)
    check_scorable(spec, pairs([0] * (n - 1) + [1]), "xnli test de")
    check_scorable(spec, pairs([0] * (n - 1)), "a hand-made sample")  # too small to tell
    check_scorable(spec, pairs([-1] * n), "unlabelled")  # the metric refuses it and says how to attach labels
    with pytest.raises(CorruptDataError, match="holds no examples"):
        check_scorable(spec, [], "xnli test de", allow_constant_labels=True)


def test_xcopa_with_withheld_labels_is_refused():
    copa = [ChoiceExample("The man broke his toe. " + COPA_QUESTIONS["cause"], ("He dropped a hammer.", "He sang."), 0)]
    with pytest.raises(CorruptDataError, match="all 12 gold labels are 0"):
        check_scorable(get_task("xcopa"), copa * 12, "xcopa test et")


def test_blank_qa_answers_are_refused():
    blank = [QAExample(f"q{i}", "Who?", "Nobody here.", ("",), (0,)) for i in range(12)]
    with pytest.raises(CorruptDataError, match="all 12 gold answers are blank"):
        check_scorable(get_task("squad_v2"), blank, "squad_v2 validation")
    check_scorable(get_task("squad_v2"), blank, "squad_v2 validation", allow_constant_labels=True)
    answered = blank[:-1] + [QAExample("q", "Who?", "Nobody here.", ("Nobody",), (0,))]
    check_scorable(get_task("squad_v2"), answered, "squad_v2 validation")


def test_config_field_for_the_override():
    data = {"phases": {"target": {"tasks": ["xnli"]}, "evaluate": {"allow_constant_labels": True}}}
    assert experiment_from_dict(data).phases.evaluate.allow_constant_labels is True
    assert experiment_from_dict({"phases": {"target": {"tasks": ["xnli"]}, "evaluate": {}}}).phases.evaluate.allow_constant_labels is False


# ------------------------------------------------------------------------------------------ XCOPA, XTREME-R layout


def copa_record(i, label):
    return {"premise": f"premise {i}", "choice1": f"one {i}", "choice2": f"two {i}", "question": "effect",
            "label": label, "idx": i}  # fmt: skip


def test_xcopa_xtreme_r_layout(tmp_path):
    # scripts/download_data.sh of XTREME-R: COPA as {train,val,test}-en.jsonl, XCOPA as {val,test}-<lang>.jsonl
    folder = tmp_path / "xcopa"
    folder.mkdir()
    for name, count in (("val-et", 3), ("test-et", 4), ("train-en", 2), ("val-en", 2)):
        lines = [json.dumps(copa_record(i, i % 2)) for i in range(count)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    xcopa = get_task("xcopa")
    test = xcopa.load("test", "et", tmp_path)  # the folder itself, or its parent (xcopa/)
    assert test == xcopa.load("test", "et", folder)
    assert test == [ChoiceExample(f"premise {i} {COPA_QUESTIONS['effect']}", (f"one {i}", f"two {i}"), i % 2)
                    for i in range(4)]  # fmt: skip
    assert len(xcopa.load("validation", "et", folder)) == 3
    assert [e.label for e in xcopa.load("train", "en", folder)] == [0, 1]
    assert xcopa.data_files("test", "et", folder) == [folder / "test-et.jsonl"]


# ------------------------------------------------------------------------------------------ tagging files


def test_empty_words_are_refused_at_their_line(tmp_path):
    path = tmp_path / "test-de.tsv"
    path.write_text("Der\tDET\nHund\tNOUN\n\nbellt\tVERB\n\tPUNCT\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match=rf"^{path}:5: empty word"):
        read_token_tag_file(path)
    path.write_text("Der\tDET\n \tNOUN\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match=rf"^{path}:2: empty word"):
        read_token_tag_file(path)
    path.write_text("Der\tDET\n\n\n\nHund\tNOUN\n", encoding="utf-8")  # several blank lines: one break
    assert [e.words for e in read_token_tag_file(path)] == [("Der",), ("Hund",)]


def conllu_line(index, form, upos):
    return "\t".join([str(index), form, "_", upos, "_", "_", "0", "root", "_", "_"])


def test_conllu_sentences_without_words_and_empty_forms(tmp_path):
    path = tmp_path / "de_gsd-ud-test.conllu"
    good = f"# sent_id = 1\n{conllu_line(1, 'Hallo', 'INTJ')}\n\n"
    path.write_text(good + "# sent_id = 2\n# text = \n\n" + good, encoding="utf-8")
    with pytest.raises(CorruptDataError, match=rf"^{path}:5: sentence without words"):
        read_conllu(path)
    path.write_text(good + f"{conllu_line(1, '', 'NOUN')}\n", encoding="utf-8")
    with pytest.raises(CorruptDataError, match=rf"^{path}:4: empty word"):
        read_conllu(path)
    path.write_text(good + good, encoding="utf-8")
    assert len(read_conllu(path)) == 2


def test_hub_export_rows_without_tokens(tmp_path):
    folder = tmp_path / "de"
    folder.mkdir()
    rows = [{"tokens": ["Ein", "Hund"], "ner_tags": [0, 0]}, {"tokens": [], "ner_tags": []}]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(CorruptDataError, match="row 1: a sentence without tokens"):
        get_task("panx").load("test", "de", tmp_path)


# ------------------------------------------------------------------------------------------ non-UTF-8 bytes


def with_bad_byte(path, lines, bad_line):
    """``lines`` text lines, line ``bad_line`` (1-based) carrying a Latin-1 byte; far beyond the decoder's block."""
    data = b"".join((b"caf\xe9\tNOUN\n" if i == bad_line else f"word{i}\tNOUN\n".encode()) for i in range(1, lines + 1))
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("bad_line", [3, 4321])
def test_invalid_utf8_is_reported_at_its_true_line(tmp_path, bad_line):
    path = with_bad_byte(tmp_path / "test-de.tsv", 5000, bad_line)
    # reference: the line of the first byte that a strict decode rejects
    raw = path.read_bytes()
    assert raw.count(b"\n", 0, raw.index(b"\xe9")) + 1 == bad_line
    with pytest.raises(CorruptDataError, match=rf"^{path}:{bad_line}: invalid UTF-8 byte"):
        read_token_tag_file(path)
    with pytest.raises(CorruptDataError, match=rf"^{path}:{bad_line}: invalid UTF-8 byte"):
        get_task("xnli").load("test", "de", tmp_path)  # the XTREME tsv reader (fastxlt.tasks.readers)
    jsonl = tmp_path / "test.et.jsonl"
    records = [json.dumps(copa_record(i, 0)).encode() for i in range(1, 5001)]
    records[bad_line - 1] = records[bad_line - 1].replace(b"premise", b"pr\xe9mise")
    jsonl.write_bytes(b"\n".join(records) + b"\n")
    (tmp_path / "data" / "et").mkdir(parents=True)
    jsonl.rename(tmp_path / "data" / "et" / "test.et.jsonl")
    with pytest.raises(CorruptDataError, match=rf"test\.et\.jsonl:{bad_line}: invalid UTF-8 byte"):
        get_task("xcopa").load("test", "et", tmp_path)


def test_invalid_utf8_in_squad_json(tmp_path):
    path, _ = squad_file(tmp_path / "xquad.de.json", answer_start=0)
    text = path.read_text(encoding="utf-8").replace(", ", ",\n")
    path.write_bytes(text.encode().replace(b"Normandy?", b"Normand\xff?"))
    line = text[: text.index("Normandy?")].count("\n") + 1
    with pytest.raises(CorruptDataError, match=rf"^{path}:{line}: invalid UTF-8 byte"):
        read_squad_json(path)
