"""Pair-classification tasks: readers, adapters in every layout, the hub path, and the real files.

Fixtures are written into tmp_path in each published layout; the real files in ../shared/data are
read when present (symlinked under their original names where the shared copy renamed them).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError, UnknownLanguageError, UnknownTaskError
from fastxlt.tasks import languages as langs
from fastxlt.tasks import pair_classification as pc
from fastxlt.tasks.base import Family, PairExample
from fastxlt.tasks.readers import (
    attach_labels,
    read_jsonl,
    read_label_file,
    read_parquet,
    read_tsv_columns,
    read_tsv_with_header,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NLI_ID = {"entailment": 0, "neutral": 1, "contradiction": 2}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tsv(rows: list[list[str]]) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


def link(target: Path, link_path: Path) -> None:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    link_path.symlink_to(target)


def as_tuples(examples: list[PairExample]) -> list[tuple]:
    return [(e.text_a, e.text_b, e.label) for e in examples]


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


def test_read_tsv_columns_keeps_quotes_and_splits_on_newline_only(tmp_path):
    path = write(tmp_path / "dev-en.tsv", 'He said "hi\tok\tentailment\r\nA\u2028B\tC\tneutral\n\n')
    assert read_tsv_columns(path, (2, 3)) == [['He said "hi', "ok", "entailment"], ["A\u2028B", "C", "neutral"]]


def test_read_tsv_columns_errors_name_file_and_line(tmp_path):
    mixed = write(tmp_path / "mixed.tsv", "a\tb\tc\na\tb\n")
    with pytest.raises(CorruptDataError, match=r"mixed\.tsv:2: expected 3 .*found 2"):
        read_tsv_columns(mixed, (2, 3))
    wide = write(tmp_path / "wide.tsv", "a\tb\tc\td\n")
    with pytest.raises(CorruptDataError, match=r"wide\.tsv:1: expected 2 or 3"):
        read_tsv_columns(wide, (2, 3))
    with pytest.raises(DataNotFoundError, match="nope.tsv"):
        read_tsv_columns(tmp_path / "nope.tsv", (2, 3))
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes(b"ok\tok\n\xe9t\xe9\tx\n")
    with pytest.raises(CorruptDataError, match="UTF-8"):
        read_tsv_columns(bad, (2,))


def test_read_tsv_with_header_selects_named_columns(tmp_path):
    header = ["index", "sentence1", "sentence2", "label1", "gold_label"]
    path = write(tmp_path / "dev.tsv", tsv([header, ["0", "p", "h", "x", "neutral"], ["1", "p2", "h2", "y", "entailment"]]))
    rows = read_tsv_with_header(path, ["sentence1", "sentence2", "gold_label"])
    assert rows == [
        {"sentence1": "p", "sentence2": "h", "gold_label": "neutral"},
        {"sentence1": "p2", "sentence2": "h2", "gold_label": "entailment"},
    ]
    test = write(tmp_path / "test.tsv", tsv([["index", "sentence1", "sentence2"], ["0", "p", "h"]]))
    assert read_tsv_with_header(test, ["sentence1", "gold_label"], optional=["gold_label"]) == [
        {"sentence1": "p", "gold_label": None}
    ]
    with pytest.raises(CorruptDataError, match="lacks column.*gold_label"):
        read_tsv_with_header(test, ["sentence1", "gold_label"])


def test_read_tsv_with_header_wrong_width_is_corrupt_unless_skipped(tmp_path, caplog):
    rows = [["id", "question1", "question2", "is_duplicate"], ["1", "q", "r", "0"], ["2", "broken"], ["3", "s", "t", "1"]]
    path = write(tmp_path / "train.tsv", tsv(rows))
    with pytest.raises(CorruptDataError, match=r"train\.tsv:3: expected 4"):
        read_tsv_with_header(path, ["question1"])
    kept = read_tsv_with_header(path, ["question1", "is_duplicate"], skip_malformed=True)
    assert kept == [{"question1": "q", "is_duplicate": "0"}, {"question1": "s", "is_duplicate": "1"}]
    assert "skipped 1 malformed" in caplog.text
    with pytest.raises(CorruptDataError, match="empty"):
        read_tsv_with_header(write(tmp_path / "empty.tsv", ""), ["a"])


def test_read_jsonl_and_parquet(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl([{"premise": "p", "hypothesis": "h", "label": 2, "x": 1}]) + "\n")
    assert read_jsonl(path, ["premise", "hypothesis", "label"]) == [{"premise": "p", "hypothesis": "h", "label": 2}]
    assert read_jsonl(path, ["premise", "gold"], optional=["gold"]) == [{"premise": "p", "gold": None}]
    with pytest.raises(CorruptDataError, match=r"d\.jsonl:1: record lacks key.*gold"):
        read_jsonl(path, ["gold"])
    truncated = write(tmp_path / "t.jsonl", jsonl([{"a": 1}]) + '{"a": 2\n')
    with pytest.raises(CorruptDataError, match=r"t\.jsonl:2: not valid JSON"):
        read_jsonl(truncated, ["a"])

    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"premise": ["p", "q"], "label": [0, 1]}), parquet)
    assert read_parquet(parquet, ["premise", "label", "hypothesis"], optional=["hypothesis"]) == [
        {"premise": "p", "label": 0, "hypothesis": None},
        {"premise": "q", "label": 1, "hypothesis": None},
    ]
    with pytest.raises(CorruptDataError, match="lacks column.*hypothesis"):
        read_parquet(parquet, ["hypothesis"])
    with pytest.raises(CorruptDataError, match="not a readable parquet"):
        read_parquet(write(tmp_path / "junk.parquet", "not parquet"), ["a"])


def test_label_file_and_attach(tmp_path):
    labels = write(tmp_path / "labels.txt", "neutral\ncontradiction\n\n")
    assert read_label_file(labels) == ["neutral", "contradiction"]
    rows = [["a", "b"], ["c", "d"]]
    assert attach_labels(rows, ["neutral", "entailment"], rows_path=Path("r"), labels_path=labels) == [
        ["a", "b", "neutral"],
        ["c", "d", "entailment"],
    ]
    with pytest.raises(CorruptDataError, match="has 1 labels but r has 2 rows"):
        attach_labels(rows, ["neutral"], rows_path=Path("r"), labels_path=Path("labels.txt"))
    holed = write(tmp_path / "holed.txt", "neutral\n\ncontradiction\n")
    with pytest.raises(CorruptDataError, match=r"holed\.txt:2: empty label"):
        read_label_file(holed)


# ---------------------------------------------------------------------------------------------
# Registry and languages
# ---------------------------------------------------------------------------------------------


def test_registry_records():
    tasks = pc.TASKS
    assert set(tasks) == {"mnli", "qqp", "snli", "anli_r1", "anli_r2", "anli_r3", "anli", "anli_plus", "sst2", "xnli", "pawsx"}
    for spec in tasks.values():
        assert spec.family is Family.PAIR_CLASSIFICATION
        assert spec.dev_split in spec.splits and spec.test_split in spec.splits
    nli = [name for name, spec in tasks.items() if spec.head_key == "nli"]
    assert sorted(nli) == ["anli", "anli_plus", "anli_r1", "anli_r2", "anli_r3", "mnli", "snli", "xnli"]
    assert all(tasks[name].labels == ("entailment", "neutral", "contradiction") for name in nli)
    assert tasks["qqp"].metric == "accuracy_f1"
    assert {tasks[name].metric for name in tasks if name != "qqp"} == {"accuracy"}
    assert tasks["xnli"].languages == langs.XNLI and tasks["pawsx"].languages == langs.PAWSX
    assert tasks["mnli"].languages == ("en",)


def test_language_lists_match_xtreme():
    sizes = {"XNLI": 15, "PAWSX": 7, "PANX": 40, "UDPOS": 33, "XQUAD": 11, "MLQA": 7, "TYDIQA": 9, "TATOEBA": 36, "BUCC": 4}
    for name, size in sizes.items():
        values = getattr(langs, name)
        assert len(values) == len(set(values)) == size, name
        assert list(values) == sorted(values), name
    assert set(langs.XNLI) == set("ar bg de el en es fr hi ru sw th tr ur vi zh".split())
    assert set(langs.PAWSX) == set("de en es fr ja ko zh".split())
    assert "en" not in langs.TATOEBA and "en" not in langs.BUCC
    assert set(langs.TATOEBA) <= set(langs.PANX) and set(langs.UDPOS) <= set(langs.PANX)
    assert len(langs.XTREME_ALL) == 40
    for iso in langs.TATOEBA:
        assert langs.tatoeba_iso_code(langs.tatoeba_laser_code(iso)) == iso
    assert (langs.tatoeba_laser_code("zh"), langs.tatoeba_laser_code("fa"), langs.tatoeba_laser_code("sw")) == (
        "cmn", "pes", "swh",
    )
    with pytest.raises(UnknownLanguageError, match="Tatoeba has no XTREME language 'xx'"):
        langs.tatoeba_laser_code("xx")
    with pytest.raises(UnknownLanguageError):
        langs.tatoeba_iso_code("eng")


def test_tatoeba_codes_name_real_laser_files():
    folder = shared("tatoeba")
    for code in langs.TATOEBA_LASER_CODES.values():
        assert (folder / f"tatoeba.{code}-eng.{code}").is_file(), code


# ---------------------------------------------------------------------------------------------
# XNLI
# ---------------------------------------------------------------------------------------------

XNLI_DEV = [["p1", "h1", "entailment"], ["p2", "h2", "contradictory"], ["p3", "h3", "neutral"]]


def test_xnli_xtreme_layout(tmp_path):
    write(tmp_path / "xtreme_format" / "dev-de.tsv", tsv(XNLI_DEV))
    write(tmp_path / "xtreme_format" / "test-de.tsv", tsv([r[:2] for r in XNLI_DEV]))
    xnli = pc.TASKS["xnli"]
    assert as_tuples(xnli.load("validation", "de", tmp_path)) == [("p1", "h1", 0), ("p2", "h2", 2), ("p3", "h3", 1)]
    assert [e.label for e in xnli.load("test", "de", tmp_path)] == [-1, -1, -1]
    # the flat layout (files directly in data_dir) reads the same
    write(tmp_path / "flat" / "dev-fr.tsv", tsv(XNLI_DEV))
    assert len(xnli.load("validation", "fr", tmp_path / "flat")) == 3


def test_xnli_gold_label_file(tmp_path):
    write(tmp_path / "xtreme_format" / "test-de.tsv", tsv([r[:2] for r in XNLI_DEV]))
    write(tmp_path / "xtreme_format" / "dev-de.tsv", tsv(XNLI_DEV))
    write(tmp_path / "DERIVED_test_labels.txt", "neutral\ncontradiction\nentailment\n")
    xnli = pc.TASKS["xnli"]
    assert [e.label for e in xnli.load("test", "de", tmp_path)] == [1, 2, 0]  # attached automatically
    write(tmp_path / "mine.txt", "entailment\nentailment\nneutral\n")
    assert [e.label for e in pc.load_pair_examples("xnli", "test", "de", tmp_path, labels_file="mine.txt")] == [0, 0, 1]
    absolute = tmp_path / "mine.txt"
    assert [e.label for e in pc.load_pair_examples(xnli, "test", "de", tmp_path, labels_file=absolute)] == [0, 0, 1]
    with pytest.raises(ConfigError, match="already has a label column"):
        pc.load_pair_examples(xnli, "validation", "de", tmp_path, labels_file="mine.txt")
    with pytest.raises(DataNotFoundError, match="labels_file not found"):
        pc.load_pair_examples(xnli, "test", "de", tmp_path, labels_file="absent.txt")
    with pytest.raises(ConfigError, match="pass --data DIR"):
        pc.load_pair_examples(xnli, "test", "de", None, labels_file="mine.txt")
    write(tmp_path / "DERIVED_test_labels.txt", "neutral\n")
    with pytest.raises(CorruptDataError, match="has 1 labels but .*test-de.tsv has 3 rows"):
        xnli.load("test", "de", tmp_path)


def test_xnli_original_releases(tmp_path):
    header = ["language", "gold_label", "sentence1_binary_parse", "sentence1", "sentence2", "pairID"]
    rows = [["de", "neutral", "(x)", "dp", "dh", "1"], ["en", "entailment", "(x)", "ep", "eh", "1"],
            ["de", "contradiction", "(y)", "dp2", "dh2", "2"]]  # fmt: skip
    write(tmp_path / "XNLI-1.0" / "xnli.dev.tsv", tsv([header, *rows]))
    write(tmp_path / "XNLI-MT-1.0" / "multinli" / "multinli.train.de.tsv",
          tsv([["premise", "hypo", "label"], ["tp", "th", "contradictory"]]))  # fmt: skip
    xnli = pc.TASKS["xnli"]
    assert as_tuples(xnli.load("validation", "de", tmp_path)) == [("dp", "dh", 1), ("dp2", "dh2", 2)]
    assert as_tuples(xnli.load("validation", "en", tmp_path)) == [("ep", "eh", 0)]
    assert as_tuples(xnli.load("train", "de", tmp_path)) == [("tp", "th", 2)]


def test_xnli_hub_exports(tmp_path):
    records = [{"premise": "p", "hypothesis": "h", "label": 2}, {"premise": "q", "hypothesis": "i", "label": 0}]
    write(tmp_path / "jsonl" / "validation-sw.jsonl", jsonl(records))
    shard = tmp_path / "parquet" / "sw" / "test-00000-of-00002.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records[:1]), shard)
    pq.write_table(pa.Table.from_pylist(records[1:]), shard.with_name("test-00001-of-00002.parquet"))
    xnli = pc.TASKS["xnli"]
    assert as_tuples(xnli.load("validation", "sw", tmp_path / "jsonl")) == [("p", "h", 2), ("q", "i", 0)]
    assert as_tuples(xnli.load("test", "sw", tmp_path / "parquet")) == [("p", "h", 2), ("q", "i", 0)]


# ---------------------------------------------------------------------------------------------
# PAWS-X
# ---------------------------------------------------------------------------------------------

PAWS_HEADER = ["id", "sentence1", "sentence2", "label"]


def test_pawsx_layouts_and_precedence(tmp_path):
    write(tmp_path / "x-final" / "en" / "train.tsv", tsv([PAWS_HEADER, ["1", "a", "b", "1"], ["2", "c", "d", "0"]]))
    write(tmp_path / "x-final" / "de" / "translated_train.tsv", tsv([PAWS_HEADER, ["1", "ä", "b", "0"]]))
    write(tmp_path / "x-final" / "de" / "dev_2k.tsv", tsv([PAWS_HEADER, ["1", "x", "y", "1"]]))
    write(tmp_path / "x-final" / "de" / "test_2k.tsv", tsv([PAWS_HEADER, ["1", "s", "t", "0"]]))
    # the XTREME copy of the same test file has no labels: the labelled original wins
    write(tmp_path / "test-de.tsv", tsv([["s", "t"]]))
    pawsx = pc.TASKS["pawsx"]
    assert as_tuples(pawsx.load("train", "en", tmp_path)) == [("a", "b", 1), ("c", "d", 0)]
    assert as_tuples(pawsx.load("train", "de", tmp_path)) == [("ä", "b", 0)]
    assert as_tuples(pawsx.load("validation", "de", tmp_path)) == [("x", "y", 1)]
    assert as_tuples(pawsx.load("test", "de", tmp_path)) == [("s", "t", 0)]

    other = tmp_path / "other"
    write(other / "hf_format_labeled" / "test-zh.tsv", tsv([PAWS_HEADER, ["7", "u", "v", "1"]]))
    write(other / "xtreme_format" / "dev-ko.tsv", tsv([["k", "l", "0"]]))
    write(other / "xtreme_format" / "test-ko.tsv", tsv([["k", "l"]]))
    assert as_tuples(pawsx.load("test", "zh", other)) == [("u", "v", 1)]
    assert as_tuples(pawsx.load("validation", "ko", other)) == [("k", "l", 0)]
    assert as_tuples(pawsx.load("test", "ko", other)) == [("k", "l", -1)]


def test_pawsx_bad_label_names_file_and_row(tmp_path):
    write(tmp_path / "xtreme_format" / "dev-ja.tsv", tsv([["a", "b", "1"], ["c", "d", "2"]]))
    with pytest.raises(CorruptDataError, match=r"dev-ja\.tsv, data row 2: label 2 is out of range 0\.\.1"):
        pc.TASKS["pawsx"].load("validation", "ja", tmp_path)


# ---------------------------------------------------------------------------------------------
# English tasks
# ---------------------------------------------------------------------------------------------

MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"]


def test_mnli_glue_tsv(tmp_path):
    write(tmp_path / "MNLI" / "dev_matched.tsv",
          tsv([MNLI_HEADER, ["0", "1", "1n", "slate", 'a "q', "b", "neutral", "neutral"],
               ["1", "2", "2c", "gov", "c", "d", "contradiction", "contradiction"]]))
    write(tmp_path / "MNLI" / "dev_mismatched.tsv", tsv([MNLI_HEADER, ["0", "1", "1e", "x", "e", "f", "entailment", "entailment"]]))
    write(tmp_path / "MNLI" / "test_matched.tsv", tsv([MNLI_HEADER[:6], ["0", "1", "1", "x", "g", "h"]]))
    mnli = pc.TASKS["mnli"]
    assert as_tuples(mnli.load("validation", "en", tmp_path)) == [('a "q', "b", 1), ("c", "d", 2)]
    assert as_tuples(mnli.load("validation_mismatched", "en", tmp_path)) == [("e", "f", 0)]
    assert as_tuples(mnli.load("test", "en", tmp_path)) == [("g", "h", -1)]


def test_mnli_and_snli_original_releases_drop_no_consensus(tmp_path):
    records = [{"sentence1": "a", "sentence2": "b", "gold_label": "entailment"},
               {"sentence1": "c", "sentence2": "d", "gold_label": "-"},
               {"sentence1": "e", "sentence2": "f", "gold_label": "contradiction"}]  # fmt: skip
    write(tmp_path / "multinli_1.0" / "multinli_1.0_dev_matched.jsonl", jsonl(records))
    write(tmp_path / "snli_1.0" / "snli_1.0_test.jsonl", jsonl(records))
    txt_rows = [["gold_label", "sentence1_parse", "sentence1", "sentence2"], ["neutral", "(S)", "g", "h"], ["-", "(S)", "i", "j"]]
    write(tmp_path / "snli_1.0" / "snli_1.0_dev.txt", tsv(txt_rows))
    write(tmp_path / "multinli_1.0_train.txt", tsv(txt_rows))
    expected = [("a", "b", 0), ("e", "f", 2)]
    assert as_tuples(pc.TASKS["mnli"].load("validation", "en", tmp_path)) == expected
    assert as_tuples(pc.TASKS["snli"].load("test", "en", tmp_path)) == expected
    assert as_tuples(pc.TASKS["snli"].load("validation", "en", tmp_path)) == [("g", "h", 1)]
    assert as_tuples(pc.TASKS["mnli"].load("train", "en", tmp_path)) == [("g", "h", 1)]


def test_mnli_hub_parquet_export(tmp_path):
    shard = tmp_path / "mnli" / "validation_matched-00000-of-00001.parquet"
    shard.parent.mkdir()
    pq.write_table(pa.table({"premise": ["p"], "hypothesis": ["h"], "label": [1], "idx": [0]}), shard)
    assert as_tuples(pc.TASKS["mnli"].load("validation", "en", tmp_path)) == [("p", "h", 1)]


def anli_records(labels: str) -> list[dict]:
    return [{"uid": str(i), "context": f"c{i}", "hypothesis": f"h{i}", "label": lab} for i, lab in enumerate(labels)]


def test_anli_rounds_concatenation_and_anli_plus(tmp_path):
    for r, labels in ((1, "enc"), (2, "c"), (3, "nn")):
        write(tmp_path / "anli" / "anli_v1.0" / f"R{r}" / "dev.jsonl", jsonl(anli_records(labels)))
    assert [e.label for e in pc.TASKS["anli_r1"].load("validation", "en", tmp_path / "anli")] == [0, 1, 2]
    assert [e.label for e in pc.TASKS["anli"].load("validation", "en", tmp_path / "anli")] == [0, 1, 2, 2, 1, 1]
    assert pc.TASKS["anli_r1"].load("validation", "en", tmp_path / "anli")[0].text_a == "c0"
    # ANLI+: SNLI, MNLI and ANLI side by side, each in its own folder
    write(tmp_path / "snli" / "snli_1.0_dev.jsonl", jsonl([{"sentence1": "s", "sentence2": "t", "gold_label": "neutral"}]))
    write(tmp_path / "mnli" / "dev_matched.tsv", tsv([MNLI_HEADER, ["0", "1", "1", "g", "m", "n", "x", "entailment"]]))
    combined = pc.TASKS["anli_plus"].load("validation", "en", tmp_path)
    assert [(e.text_a, e.label) for e in combined] == [("s", 1), ("m", 0), ("c0", 0), ("c1", 1), ("c2", 2),
                                                       ("c0", 2), ("c0", 1), ("c1", 1)]  # fmt: skip
    assert pc.TASKS["anli_plus"].head_key == pc.TASKS["xnli"].head_key == "nli"


def test_qqp_skips_known_broken_rows_and_sst2_is_single_sentence(tmp_path):
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    write(tmp_path / "QQP" / "train.tsv", tsv([header, ["1", "1", "2", "q1", "q2", "1"], ["2", "How do"], ["3", "3", "4", "q3", "q4", "0"]]))
    write(tmp_path / "QQP" / "test.tsv", tsv([["id", "question1", "question2"], ["0", "u", "v"]]))
    assert as_tuples(pc.TASKS["qqp"].load("train", "en", tmp_path)) == [("q1", "q2", 1), ("q3", "q4", 0)]
    assert as_tuples(pc.TASKS["qqp"].load("test", "en", tmp_path)) == [("u", "v", -1)]
    write(tmp_path / "SST-2" / "dev.tsv", tsv([["sentence", "label"], ["good film", "1"], ["bad", "0"]]))
    write(tmp_path / "SST-2" / "test.tsv", tsv([["index", "sentence"], ["0", "meh"]]))
    assert as_tuples(pc.TASKS["sst2"].load("validation", "en", tmp_path)) == [("good film", None, 1), ("bad", None, 0)]
    assert as_tuples(pc.TASKS["sst2"].load("test", "en", tmp_path)) == [("meh", None, -1)]


# ---------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------


def test_unknown_language_split_and_task(tmp_path):
    with pytest.raises(UnknownLanguageError, match="task 'xnli' has no language 'xx'"):
        pc.TASKS["xnli"].load("validation", "xx", tmp_path)
    with pytest.raises(UnknownLanguageError):
        pc.TASKS["mnli"].load("validation", "de", tmp_path)
    with pytest.raises(UnknownTaskError, match="no split 'dev'"):
        pc.TASKS["pawsx"].load("dev", "en", tmp_path)
    pytest.importorskip("fastxlt.synthetic.tasks")  # get_task imports every family's registry
    from fastxlt.tasks.base import get_task

    with pytest.raises(UnknownTaskError, match="unknown task 'mnlii'"):
        get_task("mnlii")
    assert get_task("xnli") is pc.TASKS["xnli"]
    with pytest.raises(UnknownTaskError):
        pc.load_pair_examples("mnlii", "validation", "en", tmp_path)


def test_missing_files_name_the_paths_and_layouts(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        pc.TASKS["xnli"].load("validation", "de", tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "dev-de.tsv" in message and "xtreme_format/dev-de.tsv" in message and "XTREME tsv" in message
    with pytest.raises(DataNotFoundError, match="does not exist; pass the folder that holds its files"):
        pc.TASKS["xnli"].load("validation", "de", tmp_path / "absent")
    write(tmp_path / "plus" / "snli" / "snli_1.0_dev.jsonl", "")
    write(tmp_path / "plus" / "mnli" / "dev_matched.tsv", tsv([MNLI_HEADER]))
    with pytest.raises(DataNotFoundError, match="no validation file for task 'anli_r1' language 'en'"):
        pc.TASKS["anli_plus"].load("validation", "en", tmp_path / "plus")


def test_corrupt_files_name_file_and_line(tmp_path):
    write(tmp_path / "dev-de.tsv", tsv([["a", "b", "neutral"], ["c", "d", "maybe"]]))
    with pytest.raises(CorruptDataError, match=r"dev-de\.tsv, data row 2: unknown label 'maybe'"):
        pc.TASKS["xnli"].load("validation", "de", tmp_path)
    write(tmp_path / "dev-fr.tsv", "a\tb\tneutral\nc\td\n")
    with pytest.raises(CorruptDataError, match=r"dev-fr\.tsv:2"):
        pc.TASKS["xnli"].load("validation", "fr", tmp_path)
    write(tmp_path / "validation-es.jsonl", jsonl([{"premise": None, "hypothesis": "h", "label": 0}]))
    with pytest.raises(CorruptDataError, match="a sentence is missing"):
        pc.TASKS["xnli"].load("validation", "es", tmp_path)


# ---------------------------------------------------------------------------------------------
# The hub (datasets.load_dataset mocked: no network)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    import datasets

    calls: list[tuple] = []
    tables: dict[tuple, dict] = {}

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if (path, name, split) not in tables:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)\nmore detail")
        return datasets.Dataset.from_dict(tables[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return tables, calls


def test_hub_maps_columns_labels_and_splits(fake_hub):
    tables, calls = fake_hub
    tables[("facebook/xnli", "de", "validation")] = {"premise": ["p", "q"], "hypothesis": ["h", "i"], "label": [2, 0]}
    tables[("stanfordnlp/snli", "plain_text", "train")] = {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"],
                                                           "label": [0, -1, 1]}  # fmt: skip
    tables[("nyu-mll/glue", "mnli", "test_matched")] = {"premise": ["t"], "hypothesis": ["u"], "label": [-1], "idx": [0]}
    tables[("nyu-mll/glue", "sst2", "validation")] = {"sentence": ["fine"], "label": [1], "idx": [0]}
    tables[("facebook/anli", "plain_text", "dev_r2")] = {"uid": ["0"], "premise": ["w"], "hypothesis": ["v"],
                                                        "label": [1], "reason": [""]}  # fmt: skip
    tables[("google-research-datasets/paws-x", "ko", "train")] = {"id": [1, 2], "sentence1": ["k", "l"],
                                                                 "sentence2": ["m", "n"], "label": [1, -1]}  # fmt: skip
    tables[("nyu-mll/glue", "qqp", "validation")] = {"question1": ["a"], "question2": ["b"], "label": [1], "idx": [0]}

    assert as_tuples(pc.TASKS["xnli"].load("validation", "de")) == [("p", "h", 2), ("q", "i", 0)]
    assert as_tuples(pc.TASKS["snli"].load("train", "en")) == [("a", "x", 0), ("c", "z", 1)]  # -1 = no gold: dropped
    assert as_tuples(pc.TASKS["mnli"].load("test", "en")) == [("t", "u", -1)]  # hidden GLUE test label: kept
    assert as_tuples(pc.TASKS["sst2"].load("validation", "en")) == [("fine", None, 1)]
    assert as_tuples(pc.TASKS["anli_r2"].load("validation", "en")) == [("w", "v", 1)]
    assert as_tuples(pc.TASKS["pawsx"].load("train", "ko")) == [("k", "m", 1)]
    assert as_tuples(pc.TASKS["qqp"].load("validation", "en")) == [("a", "b", 1)]
    assert ("nyu-mll/glue", "mnli", "test_matched") in calls


def test_hub_failures_are_one_line_errors(fake_hub):
    tables, _ = fake_hub
    with pytest.raises(DataNotFoundError, match=r"cannot load facebook/xnli \(fr, test\) .*Couldn't reach.*--data DIR") as error:
        pc.TASKS["xnli"].load("test", "fr")
    assert "\n" not in str(error.value)
    tables[("facebook/xnli", "fr", "test")] = {"sentence1": ["p"], "label": [0]}
    with pytest.raises(CorruptDataError, match="lacks column.*premise"):
        pc.TASKS["xnli"].load("test", "fr")
    tables[("facebook/xnli", "fr", "test")] = {"premise": ["p"], "hypothesis": ["h"], "label": [3]}
    with pytest.raises(CorruptDataError, match=r"facebook/xnli \(fr, test\) row index 0: label 3 is out of range"):
        pc.TASKS["xnli"].load("test", "fr")


# ---------------------------------------------------------------------------------------------
# Real files (../shared/data)
# ---------------------------------------------------------------------------------------------


def raw_column(path: Path, index: int, skip_header: bool = False) -> list[str]:
    """An independent reading of one tab column (the reference for the adapters' labels).

    Lines end at '\n' only: some PAWS-X sentences contain characters that str.splitlines breaks on.
    """
    lines = path.read_text(encoding="utf-8").removesuffix("\n").split("\n")[1 if skip_header else 0 :]
    return [line.split("\t")[index] for line in lines]


def test_real_xnli_all_languages():
    root = shared("xnli")
    xnli = pc.TASKS["xnli"]
    gold_test = [NLI_ID[label] for label in raw_column(root / "xglue_de" / "test.txt", 2)]
    dev_labels = None
    for language in langs.XNLI:
        dev = xnli.load("validation", language, root)
        test = xnli.load("test", language, root)
        assert len(dev) == 2490 and len(test) == 5010, language
        raw = raw_column(root / "xtreme_format" / f"dev-{language}.tsv", 2)
        assert [e.label for e in dev] == [NLI_ID[label] for label in raw], language
        assert [e.label for e in test] == gold_test, language  # DERIVED_test_labels.txt attached
        assert all(e.text_a and e.text_b for e in dev + test), language
        # XNLI is parallel: the same label sequence in every language
        dev_labels = dev_labels or [e.label for e in dev]
        assert [e.label for e in dev] == dev_labels, language
    assert Counter(dev_labels) == {0: 830, 1: 830, 2: 830}
    assert Counter(gold_test) == {0: 1670, 1: 1670, 2: 1670}
    de_test = xnli.load("test", "de", root)
    xglue_premises = raw_column(root / "xglue_de" / "test.txt", 0)
    same = sum(e.text_a.strip() == premise.strip() for e, premise in zip(de_test, xglue_premises))
    assert same == 5010  # the label file lines up with the test file (3 rows differ only by spaces)


def test_real_pawsx_all_languages():
    root = shared("pawsx")
    pawsx = pc.TASKS["pawsx"]
    for language in langs.PAWSX:
        dev = pawsx.load("validation", language, root)
        raw = raw_column(root / "xtreme_format" / f"dev-{language}.tsv", 2)
        assert [e.label for e in dev] == [int(label) for label in raw], language
        assert len(dev) == 2000 and set(Counter(e.label for e in dev)) == {0, 1}
        test = pawsx.load("test", language, root)
        assert len(test) == 2000
        if language in ("de", "zh"):  # labelled in hf_format_labeled, row-aligned with the XTREME file
            raw = raw_column(root / "hf_format_labeled" / f"test-{language}.tsv", 3, skip_header=True)
            assert [e.label for e in test] == [int(label) for label in raw]
            xtreme = raw_column(root / "xtreme_format" / f"test-{language}.tsv", 1)
            assert [e.text_b for e in test] == xtreme
        else:
            assert {e.label for e in test} == {-1}


def test_real_mnli_qqp_anli_samples(tmp_path):
    mnli_dir = shared("mnli", "hf_dummy_sample")
    link(mnli_dir / "MNLI_dev_matched.tsv", tmp_path / "mnli" / "MNLI" / "dev_matched.tsv")
    link(mnli_dir / "multinli_1.0_dev_mismatched.jsonl", tmp_path / "mnli" / "multinli_1.0" / "multinli_1.0_dev_mismatched.jsonl")
    mnli = pc.TASKS["mnli"]
    matched = mnli.load("validation", "en", tmp_path / "mnli")
    assert [e.label for e in matched] == [NLI_ID[g] for g in raw_column(mnli_dir / "MNLI_dev_matched.tsv", 15, True)]
    assert matched[0].text_a == "The new rights are nice enough"
    mismatched = mnli.load("validation_mismatched", "en", tmp_path / "mnli")
    gold = [json.loads(line)["gold_label"] for line in (mnli_dir / "multinli_1.0_dev_mismatched.jsonl").open()]
    assert [e.label for e in mismatched] == [NLI_ID[g] for g in gold] and len(mismatched) == 5

    qqp_file = shared("qqp", "glue_dev_first10", "dev.tsv")
    link(qqp_file, tmp_path / "qqp" / "dev.tsv")
    qqp = pc.TASKS["qqp"].load("validation", "en", tmp_path / "qqp")
    assert len(qqp) == 9
    assert [e.label for e in qqp] == [int(x) for x in raw_column(qqp_file, 5, skip_header=True)]

    anli_dir = shared("anli", "hf_dummy_sample")
    for r in (1, 2, 3):
        for split in ("dev", "test"):
            link(anli_dir / f"R{r}_{split}.jsonl", tmp_path / "anli" / "anli_v1.0" / f"R{r}" / f"{split}.jsonl")
    letters = {"e": 0, "n": 1, "c": 2}
    for split, own in (("validation", "dev"), ("test", "test")):
        combined = pc.TASKS["anli"].load(split, "en", tmp_path / "anli")
        expected = [letters[json.loads(line)["label"]] for r in (1, 2, 3) for line in (anli_dir / f"R{r}_{own}.jsonl").open()]
        assert len(combined) == 9 and [e.label for e in combined] == expected
