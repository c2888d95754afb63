"""``seqeval_f1`` against the ``seqeval`` library (the oracle) and hand-computed chunkings.

The real-data checks read the UD test files and the PAN-X dev files of ../shared/data, perturb the gold
tags with a seeded generator, and require fastxlt's precision, recall and F1 to be *equal* (==, every
bit) to seqeval's default-mode numbers. The default suite checks a few languages; ``-m slow`` all of them.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from fastxlt.errors import DataNotFoundError
from fastxlt.tasks import metrics
from fastxlt.tasks.base import get_task
from fastxlt.tasks.seqeval_metric import chunk_counts, seqeval_scores

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UD_LANGUAGES = ("ar", "de", "el", "en", "es", "fi", "fr", "he", "hi", "id", "ja", "ko", "mr", "ru", "ta", "te",
                "th", "tl", "tr", "ur", "vi", "yo", "zh")  # fmt: skip
PANX_DEV_LANGUAGES = ("ar", "bn", "de", "en", "es", "fi", "fr", "he", "hi", "id", "ja", "ko", "ru", "sw", "ta",
                      "tr", "ur", "vi", "yo", "zh")  # fmt: skip


def oracle(gold, predicted) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about non-NE tags such as NOUN; that is the point here
        return {"f1": float(f1_score(gold, predicted)), "precision": float(precision_score(gold, predicted)),
                "recall": float(recall_score(gold, predicted))}  # fmt: skip


def perturb(sentences: list[list[str]], seed: int, rate: float) -> list[list[str]]:
    rng = random.Random(seed)
    names = sorted({tag for sentence in sentences for tag in sentence})
    return [[rng.choice(names) if rng.random() < rate else tag for tag in sentence] for sentence in sentences]


# ------------------------------------------------------------------------------------------ by hand


def test_hand_computed_ner_chunks():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"]]
    # PER matches; LOC missing; the ORG is cut short (wrong end) and an I-LOC after O starts a chunk.
    predicted = [["B-PER", "I-PER", "O", "O"], ["I-LOC", "B-ORG", "I-ORG", "O"]]
    assert chunk_counts(gold, predicted) == (1, 3, 3)
    scores = seqeval_scores(gold, predicted)
    assert scores == {"f1": pytest.approx(1 / 3), "precision": pytest.approx(1 / 3), "recall": pytest.approx(1 / 3)}
    assert scores == oracle(gold, predicted)


def test_plain_pos_tags_chunk_as_seqeval_reads_them():
    # NOUN NOUN is one chunk of type "OUN" (first letter = chunk tag); ADJ ADV are two chunks (types DJ, DV);
    # INTJ is an I- tag of type NTJ, SCONJ a singleton S- tag.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_entities(["NOUN", "NOUN", "ADJ", "ADV"]) == [("OUN", 0, 1), ("DJ", 2, 2), ("DV", 3, 3)]
    gold = [["NOUN", "NOUN", "ADJ", "ADV", "INTJ", "SCONJ", "SCONJ"]]
    predicted = [["NOUN", "VERB", "ADJ", "ADV", "INTJ", "SCONJ", "PUNCT"]]
    # gold chunks: OUN[0,1] DJ[2] DV[3] NTJ[4] CONJ[5] CONJ[6] -> 6; predicted: OUN[0] ERB[1] DJ DV NTJ CONJ[5] UNCT[6] -> 7
    # correct: DJ, DV, NTJ, CONJ[5] -> 4 (a per-word tagging accuracy would count 5 of 7)
    assert chunk_counts(gold, predicted) == (4, 7, 6)
    assert seqeval_scores(gold, predicted) == oracle(gold, predicted)


def test_sentence_boundary_and_odd_tags_follow_seqeval():
    # A chunk continued by a '.'-tag survives the sentence separator (seqeval never closes it): the quirks
    # are matched, not fixed. E-/S- tags and tags without a type ("B", "X") are chunked as seqeval does.
    gold = [["B-X", ".X"], ["I-X", "O"], ["S-A", "B", "E-A", "X", "OTHER", "I-Y"]]
    predicted = [["B-X", "I-X"], ["I-X", "O"], ["S-A", "I", "E-A", "X", "O", "I-Y"]]
    assert seqeval_scores(gold, predicted) == oracle(gold, predicted)


def test_random_tag_soup_matches_seqeval():
    rng = random.Random(11)
    alphabet = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "NOUN", "INTJ", "SCONJ", ".A", "B", "I", "X",
                "OTHER", "E-LOC", "S-LOC"]  # fmt: skip
    for _ in range(200):
        gold = [[rng.choice(alphabet) for _ in range(rng.randint(0, 9))] for _ in range(rng.randint(1, 5))]
        predicted = [[rng.choice(alphabet) if rng.random() < 0.5 else tag for tag in sentence] for sentence in gold]
        assert seqeval_scores(gold, predicted) == oracle(gold, predicted), (gold, predicted)


def test_registered_metric_reports_percent_and_refuses_bad_input():
    gold = [["B-PER", "I-PER", "O"], ["B-LOC"]]
    predicted = [["B-PER", "I-PER", "O"], ["O"]]
    assert metrics.compute("seqeval_f1", predicted, gold) == {
        key: 100.0 * value for key, value in oracle(gold, predicted).items()
    }
    assert metrics.primary_score("seqeval_f1", metrics.compute("seqeval_f1", gold, gold)) == 100.0
    assert seqeval_scores([["O", "O"]], [["O", "O"]]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    with pytest.raises(ValueError, match="2 predicted tags for 3 words"):
        seqeval_scores([["O", "O", "O"]], [["O", "O"]])
    with pytest.raises(DataNotFoundError, match="no gold tags"):
        metrics.compute("seqeval_f1", [["O"]], [None])


# ------------------------------------------------------------------------------------------ real files


def _real_sentences(task: str, split: str, language: str) -> list[list[str]]:
    folder = {"udpos": SHARED / "ud", "panx": SHARED / "panx"}[task]
    if not folder.is_dir():
        pytest.skip(f"real data not present: {folder}")
    return [list(example.tags) for example in get_task(task).load(split, language, folder)]


def _assert_equal_to_seqeval(task: str, split: str, language: str) -> None:
    gold = _real_sentences(task, split, language)
    for seed, rate in ((0, 0.05), (1, 0.3)):
        predicted = perturb(gold, seed, rate)
        assert seqeval_scores(gold, predicted) == oracle(gold, predicted), (task, language, seed)
    assert seqeval_scores(gold, gold) == {"f1": 1.0, "precision": 1.0, "recall": 1.0}


@pytest.mark.parametrize("language", ["en", "ja", "yo"])
def test_ud_test_files_equal_seqeval(language):
    _assert_equal_to_seqeval("udpos", "test", language)


@pytest.mark.parametrize("language", ["yo", "sw", "hi"])
def test_panx_dev_files_equal_seqeval(language):
    _assert_equal_to_seqeval("panx", "validation", language)


@pytest.mark.slow
@pytest.mark.parametrize("language", UD_LANGUAGES)
def test_every_ud_test_file_equals_seqeval(language):
    _assert_equal_to_seqeval("udpos", "test", language)


@pytest.mark.slow
@pytest.mark.parametrize("language", PANX_DEV_LANGUAGES)
def test_every_panx_dev_file_equals_seqeval(language):
    _assert_equal_to_seqeval("panx", "validation", language)
