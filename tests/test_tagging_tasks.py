"""Token tagging: readers in every layout, the real UD / PAN-X files, first-subword features, decoding, the head.

Fixtures are written by the tests in each published layout. Alignment is checked against the fast
tokenizer's own ``is_split_into_words`` encoding and ``word_ids()`` (an independent implementation),
and decoding by feeding the gold tag ids back as predictions: every word must get its own tag back.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer

from fastxlt.errors import ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.models.heads import make_head
from fastxlt.tasks import metrics
from fastxlt.tasks.base import Family, get_task
from fastxlt.tasks.features import ops_for
from fastxlt.tasks.tagging import (
    IGNORE,
    PANX_TAGS,
    UPOS_TAGS,
    TaggedExample,
    TokenTaggingHead,
    read_conllu,
    read_token_tag_file,
    tag_names,
    word_windows,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def conllu_row(index: str, form: str, upos: str) -> str:
    return "\t".join([index, form, form.lower(), upos, "_", "_", "0", "root", "_", "_"]) + "\n"


def manifest_counts(pattern: str) -> dict[str, tuple[int, int]]:
    """(sentences, tokens) per file from shared/data/MANIFEST.md, an independent count of the real files."""
    text = (SHARED / "MANIFEST.md").read_text(encoding="utf-8")
    return {m.group(1): (int(m.group(m.lastindex - 1)), int(m.group(m.lastindex)))
            for m in re.finditer(pattern + r" \|[^|]*\|[^|]*\| (\d+) sentences / (\d+) tokens \|", text)}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(synthetic_model):
    return AutoTokenizer.from_pretrained(synthetic_model)


# ------------------------------------------------------------------------------------------ readers


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    text = ("# sent_id = 1\n" + conllu_row("1-2", "Im", "_") + conllu_row("1", "In", "ADP") + conllu_row("2", "dem", "DET")
            + conllu_row("3", "Haus", "NOUN") + conllu_row("3.1", "ist", "AUX") + "\n\n" + conllu_row("1", "Ja", "INTJ"))  # fmt: skip
    path = write(tmp_path / "UD_German-X" / "de_x-ud-test.conllu", text)
    assert read_conllu(path) == [TaggedExample(("In", "dem", "Haus"), ("ADP", "DET", "NOUN")),
                                 TaggedExample(("Ja",), ("INTJ",))]  # fmt: skip
    bad = write(tmp_path / "bad.conllu", "1\tIn\tin\tADP\n")
    with pytest.raises(CorruptDataError, match=r"bad\.conllu:1: expected 10"):
        read_conllu(bad)


def test_token_tag_files_labelled_unlabelled_and_prefixed(tmp_path):
    labelled = write(tmp_path / "dev-en.tsv", "Sioux\tB-ORG\nFalls\tI-ORG\n\n(\tO\n\n\n")
    assert read_token_tag_file(labelled) == [TaggedExample(("Sioux", "Falls"), ("B-ORG", "I-ORG")),
                                             TaggedExample(("(",), ("O",))]  # fmt: skip
    unlabelled = write(tmp_path / "test-en.tsv", "Shortly\nafterward\n")
    assert read_token_tag_file(unlabelled) == [TaggedExample(("Shortly", "afterward"), None)]
    raw = write(tmp_path / "raw", "en:EU\tB-ORG\nen:http://x.org\tO\n")
    assert read_token_tag_file(raw, prefix="en:") == [TaggedExample(("EU", "http://x.org"), ("B-ORG", "O"))]
    mixed = write(tmp_path / "mixed.tsv", "a\tO\nb\n")
    with pytest.raises(CorruptDataError, match=r"mixed\.tsv:2"):
        read_token_tag_file(mixed)


def test_udpos_layouts_merge_treebanks_of_a_language(tmp_path):
    udpos = get_task("udpos")
    write(tmp_path / "UD_English-A" / "en_a-ud-train.conllu", conllu_row("1", "Dogs", "NOUN") + "\n")
    write(tmp_path / "UD_English-B" / "en_b-ud-train.conllu", conllu_row("1", "bark", "VERB") + "\n")
    write(tmp_path / "UD_Benglish-C" / "xen_c-ud-train.conllu", conllu_row("1", "no", "X") + "\n")  # another language
    assert [e.words for e in udpos.load("train", "en", tmp_path)] == [("Dogs",), ("bark",)]
    xtreme = tmp_path / "xtreme"
    write(xtreme / "dev-de.tsv", "Hunde\tNOUN\nbellen\tVERB\n")
    assert udpos.load("validation", "de", xtreme) == [TaggedExample(("Hunde", "bellen"), ("NOUN", "VERB"))]
    export = tmp_path / "export"
    write(export / "fr" / "test.jsonl", json.dumps({"tokens": ["Les", "chiens"], "pos_tags": [5, 7]}) + "\n")
    assert udpos.load("test", "fr", export) == [TaggedExample(("Les", "chiens"), ("DET", "NOUN"))]
    with pytest.raises(DataNotFoundError, match=r"no test file for task 'udpos' language 'de'.*de_\*-ud-test\.conllu"):
        udpos.load("test", "de", tmp_path)


def test_panx_layouts(tmp_path):
    panx = get_task("panx")
    write(tmp_path / "panx_dataset" / "de" / "train", "de:Berlin\tB-LOC\n\nde:ist\tO\n")
    assert panx.load("train", "de", tmp_path) == [TaggedExample(("Berlin",), ("B-LOC",)), TaggedExample(("ist",), ("O",))]
    write(tmp_path / "xtreme_format" / "train-de.tsv", "Paris\tB-LOC\n")  # preferred over the raw release
    assert panx.load("train", "de", tmp_path) == [TaggedExample(("Paris",), ("B-LOC",))]


def test_ccg_labels_come_from_the_training_file(tmp_path):
    ccg = get_task("ccg")
    write(tmp_path / "train.tsv", "Dogs\tN\nbark\tS[dcl]\\NP\n\nCats\tN\n")
    write(tmp_path / "dev.tsv", "Birds\tN\nsing\tS[ng]\\NP\n")
    dev = ccg.load("validation", "en", tmp_path)
    assert dev == [TaggedExample(("Birds", "sing"), ("N", "S[ng]\\NP"))]
    assert tag_names(ccg) == ("N", "S[dcl]\\NP")
    with pytest.raises(DataNotFoundError, match="takes its supertag set from its training file"):
        ccg.load("validation", "en", write(tmp_path / "only-dev" / "dev.tsv", "a\tN\n").parent)
    with pytest.raises(DataNotFoundError, match="has no hub dataset"):
        ccg.load("train", "en")


# ------------------------------------------------------------------------------------------ real files


def test_real_ud_test_files(shared_data):
    udpos = get_task("udpos")
    # XTREME's udpos languages; the manifest also lists treebanks of XTREME-R's extra languages (lt, pl, ...)
    counts = {name: count for name, count in manifest_counts(r"ud/UD_[^/]+/((\w+)_\w+-ud-test\.conllu)").items()
              if name.split("_")[0] in udpos.languages}
    assert len(counts) >= 23
    for name, (sentences, tokens) in counts.items():
        language = name.split("_")[0]
        examples = udpos.load("test", language, shared_data / "ud")
        assert len(examples) == sentences, name
        assert sum(len(e.words) for e in examples) == tokens, name
        assert {tag for e in examples for tag in e.tags} <= set(UPOS_TAGS), name
    english = Counter(tag for e in udpos.load("test", "en", shared_data / "ud") for tag in e.tags)
    assert set(english) == set(UPOS_TAGS)  # English EWT uses all 17 tags


def test_real_panx_files(shared_data):
    counts = manifest_counts(r"panx/xtreme_format/((dev|test)-\w+\.tsv)")
    assert len(counts) == 30
    panx = get_task("panx")
    for name, (sentences, tokens) in counts.items():
        split, language = name[: -len(".tsv")].split("-")
        examples = panx.load({"dev": "validation", "test": "test"}[split], language, shared_data / "panx")
        assert (len(examples), sum(len(e.words) for e in examples)) == (sentences, tokens), name
        if split == "dev":
            assert {tag for e in examples for tag in e.tags} == set(PANX_TAGS), name
        else:
            assert all(e.tags is None for e in examples), name  # XTREME stripped the test tags
    unlabelled = panx.load("test", "yo", shared_data / "panx")
    with pytest.raises(DataNotFoundError, match="no gold tags"):
        metrics.compute("seqeval_f1", [["O"] * len(e.words) for e in unlabelled], [e.tags for e in unlabelled])


# ------------------------------------------------------------------------------------------ features


def gold_ids_as_outputs(features) -> list[list[int]]:
    """A perfect tagger's per-token outputs: each word's gold id at its first subword, 0 elsewhere."""
    return [[label if label != IGNORE else 0 for label in f["labels"]] for f in features]


def check_alignment(tokenizer, examples, features) -> None:
    """Our ids / first-subword labels equal the fast tokenizer's is_split_into_words encoding + word_ids()."""
    for example, feature in zip(examples, features):
        encoded = tokenizer(list(example.words), is_split_into_words=True)
        assert feature["input_ids"] == encoded["input_ids"]
        first = {}
        for position, word in enumerate(encoded.word_ids()):
            if word is not None and word not in first:
                first[word] = position
        assert feature["word_positions"] == [first[w] for w in range(len(example.words))]
        names = feature["tag_names"]
        expected = [IGNORE] * len(encoded["input_ids"])
        for w, position in first.items():
            expected[position] = names.index(example.tags[w])
        assert feature["labels"] == expected


def test_first_subword_alignment_and_round_trip(tokenizer):
    panx = get_task("panx")
    examples = [TaggedExample(("Marco", "visited", "Ostrovaniastadt", "yesterday"), ("B-PER", "O", "B-LOC", "O")),
                TaggedExample(("Nobody",), ("O",))]  # fmt: skip
    ops = ops_for(panx)
    features = ops.featurize(panx, examples, tokenizer, max_length=64)
    assert len(features) == 2 and any(len(f["input_ids"]) > len(e.words) + 2 for f, e in zip(features, examples))
    check_alignment(tokenizer, examples, features)
    predicted, gold = ops.decode(examples, features, gold_ids_as_outputs(features))
    assert predicted == gold == [list(e.tags) for e in examples]
    assert ops.gold(features) == [list(e.tags) for e in examples]
    batch = ops.collate(features, tokenizer)
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_long_sentences_are_split_into_word_windows(tokenizer):
    assert word_windows([2, 2, 2], budget=4) == [(0, 2), (2, 3)]
    assert word_windows([5, 1], budget=4) == [(0, 1), (1, 2)]  # an over-long word gets a window of its own
    assert word_windows([], budget=4) == [(0, 0)]
    udpos = get_task("udpos")
    words = tuple(f"Ostrovaniastadt{i}" for i in range(40))
    tags = tuple(UPOS_TAGS[i % len(UPOS_TAGS)] for i in range(40))
    examples = [TaggedExample(words, tags), TaggedExample(("kurz",), ("ADJ",))]
    ops = ops_for(udpos)
    features = ops.featurize(udpos, examples, tokenizer, max_length=24)
    assert len(features) > 3 and all(len(f["input_ids"]) <= 24 for f in features)
    assert sum(len(f["word_positions"]) for f in features) == 41  # every word exactly once
    predicted, gold = ops.decode(examples, features, gold_ids_as_outputs(features))
    assert predicted == gold
    assert metrics.compute("seqeval_f1", predicted, gold)["f1"] == 100.0


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data absent")
def test_alignment_with_the_xlmr_tokenizer_on_real_sentences(me5_small):
    tokenizer = AutoTokenizer.from_pretrained(me5_small)
    for task, folder, split, language in (("udpos", "ud", "test", "vi"), ("udpos", "ud", "test", "zh"),
                                          ("panx", "panx", "validation", "ar")):  # fmt: skip
        spec = get_task(task)
        examples = spec.load(split, language, SHARED / folder)[:300]
        ops = ops_for(spec)
        features = ops.featurize(spec, examples, tokenizer, max_length=512)
        assert len(features) == len(examples)
        kept = [(e, f) for e, f in zip(examples, features) if all(tokenizer(list(e.words), add_special_tokens=False)["input_ids"])]
        assert len(kept) > 250
        check_alignment(tokenizer, *zip(*kept))
        predicted, gold = ops.decode(examples, features, gold_ids_as_outputs(features))
        assert predicted == gold


def test_unknown_tags_and_missing_labels(tokenizer):
    udpos = get_task("udpos")
    with pytest.raises(CorruptDataError, match="tag 'NN' is not one of its labels"):
        ops_for(udpos).featurize(udpos, [TaggedExample(("x",), ("NN",))], tokenizer, 32)
    features = ops_for(udpos).featurize(udpos, [TaggedExample(("x", "y"), None)], tokenizer, 32)
    assert set(features[0]["labels"]) == {IGNORE}
    fresh = dataclasses.replace(get_task("ccg"), extra={})  # a CCG task whose training file was never read
    with pytest.raises(ConfigError, match="load its train split first"):
        tag_names(fresh)


# ------------------------------------------------------------------------------------------ head


def test_tagging_head_loss_is_cross_entropy_over_first_subwords(synthetic_model):
    from fastxlt.models.encoder import load_encoder

    encoder = load_encoder(synthetic_model)
    head = make_head(get_task("panx"), encoder)
    assert isinstance(head, TokenTaggingHead) and head.classifier.out_features == len(PANX_TAGS)
    head.eval()
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, encoder.config.hidden_size)
    labels = torch.tensor([[IGNORE, 3, IGNORE, 0, IGNORE], [IGNORE, 6, 1, IGNORE, IGNORE]])
    loss, logits = head(hidden, torch.ones(2, 5, dtype=torch.long), labels)
    assert logits.shape == (2, 5, len(PANX_TAGS))
    direct = hidden @ head.classifier.weight.T + head.classifier.bias
    picked = [(0, 1, 3), (0, 3, 0), (1, 1, 6), (1, 2, 1)]
    expected = torch.stack([-F.log_softmax(direct[b, t], dim=-1)[y] for b, t, y in picked]).mean()
    torch.testing.assert_close(loss, expected)
    assert get_task("panx").family is Family.TOKEN_TAGGING


# ------------------------------------------------------------------------------------------ the hub (mocked)


@pytest.fixture
def fake_hub(monkeypatch):
    import datasets

    tables: dict[tuple, datasets.Dataset] = {}

    def load_dataset(path, name=None, split=None, **kwargs):
        if (path, name, split) not in tables:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)\nmore detail")
        return tables[(path, name, split)]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return tables


def test_hub_configs_and_class_label_names(fake_hub):
    import datasets

    def table(column: str, names: list[str], tags: list[list[int]]) -> datasets.Dataset:
        features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                      column: datasets.Sequence(datasets.ClassLabel(names=names))})  # fmt: skip
        return datasets.Dataset.from_dict({"tokens": [["Hunde", "bellen"]] * len(tags), column: tags}, features=features)

    fake_hub[("google/xtreme", "udpos.German", "validation")] = table("pos_tags", list(UPOS_TAGS), [[7, 15]])
    # ids are read through the dataset's own ClassLabel names, whatever their order
    fake_hub[("unimelb-nlp/wikiann", "de", "train")] = table("ner_tags", ["O", "B-LOC", "I-LOC"], [[1, 0]])
    assert get_task("udpos").load("validation", "de") == [TaggedExample(("Hunde", "bellen"), ("NOUN", "VERB"))]
    assert get_task("panx").load("train", "de") == [TaggedExample(("Hunde", "bellen"), ("B-LOC", "O"))]
    with pytest.raises(DataNotFoundError, match=r"cannot load google/xtreme \(udpos\.Greek, test\).*--data DIR") as error:
        get_task("udpos").load("test", "el")
    assert "\n" not in str(error.value)
