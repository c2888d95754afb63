"""Span precision / recall / F1 with the exact semantics of ``seqeval``'s default (conlleval) mode.

XTREME scores both UD-POS and PAN-X with ``seqeval.metrics.f1_score(gold, predicted)``: sentences are
joined into one sequence with an ``O`` after each, tags are cut into chunks by conlleval's rules, and a
predicted chunk counts when a gold chunk has the same type, start and end (micro average over all chunks
of all sentences of a language). This module reproduces that number, quirks included, and is the metric
``seqeval_f1`` that the tagging tasks name.

How seqeval reads a tag (and so how this module reads it): the *first character* is the chunk tag and
the rest after an optional ``-`` is the type, ``"_"`` when empty. ``B-PER`` is (B, PER) and ``O`` is
(O, _), as expected for IOB2 NER; but a plain POS tag is read the same way: ``NOUN`` is (N, OUN),
``ADJ`` is (A, DJ), ``INTJ`` is an inside tag (I, NTJ) and ``SCONJ`` a singleton (S, CONJ). Two
``NOUN`` in a row therefore make *one* chunk of type ``OUN`` spanning both words, and ``ADJ ADV`` two
chunks, because the types differ. XTREME's POS numbers carry exactly this definition, so it is
matched here and not "fixed".

Why not call seqeval: it walks every tag in Python, twice per call (gold and predicted), with
per-token function calls and warnings; on a 300k-word PAN-X language that dominates evaluation. Here
each distinct tag string is parsed once, the conlleval end/start rules become two small lookup
tables indexed by (previous tag id, tag id), and chunking the whole language is a few numpy array
operations. ``seqeval`` stays the test oracle (tests/test_tagging_metric.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from fastxlt.errors import DataNotFoundError
from fastxlt.tasks.metric_registry import Metric, register_metric

OUTSIDE = "O"


def _parse(tag: str) -> tuple[str, str]:
    """(chunk tag, type) exactly as seqeval's get_entities reads a tag in prefix mode."""
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag {tag!r} is not a non-empty string; tags are strings such as 'B-PER', 'O' or 'NOUN'")
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's rule for "a chunk ended between the previous and this word" (as seqeval writes it)."""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's rule for "a chunk started at this word" (as seqeval writes it)."""
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


class _Chunker:
    """Chunks tag sequences with lookup tables built from the distinct tags seen.

    State 0 is the state before the first word (tag O, type ''), state 1 the ``O`` that seqeval puts
    after every sentence; the distinct tags follow.
    """

    def __init__(self, tags: Sequence[str]) -> None:
        self.names = [OUTSIDE, OUTSIDE, *tags]
        parsed = [("O", ""), ("O", "_"), *(_parse(tag) for tag in tags)]
        types = sorted({type_ for _, type_ in parsed})
        self.type_of = np.array([types.index(type_) for _, type_ in parsed], dtype=np.int64)
        self.num_types = len(types)
        size = len(parsed)
        self.ends = np.zeros((size, size), dtype=bool)
        self.starts = np.zeros((size, size), dtype=bool)
        for p, (prev_tag, prev_type) in enumerate(parsed):
            for c, (tag, type_) in enumerate(parsed):
                self.ends[p, c] = _end_of_chunk(prev_tag, tag, prev_type, type_)
                self.starts[p, c] = _start_of_chunk(prev_tag, tag, prev_type, type_)

    def chunk_keys(self, states: np.ndarray) -> np.ndarray:
        """Sorted int64 keys encoding (type, start, end) of every chunk of a state sequence.

        ``states`` is the whole language as one sequence (sentence separators and the final ``O``
        included). seqeval appends a chunk (type of word i-1, last start before i, i-1) at every i
        where a chunk ends; the last start is found with a running maximum.
        """
        previous = np.concatenate(([0], states[:-1]))
        ends = self.ends[previous, states]
        starts = self.starts[previous, states]
        positions = np.arange(len(states), dtype=np.int64)
        last_start = np.maximum.accumulate(np.where(starts, positions, 0))
        end_at = np.flatnonzero(ends)  # never 0: nothing ends before the first word
        chunk_end = end_at - 1
        chunk_start = last_start[chunk_end]
        chunk_type = self.type_of[states[chunk_end]]
        length = len(states) + 1
        return (chunk_start * length + chunk_end) * self.num_types + chunk_type


def _flatten(sentences: Sequence[Sequence[str]], index: dict[str, int]) -> np.ndarray:
    """Tag ids of all sentences, each followed by the separator state (1), then a final ``O``.

    The per-word work is ``map(dict.__getitem__, ...)``, which runs in C; the separators are placed
    with array arithmetic.
    """
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    words = np.fromiter(map(index.__getitem__, itertools.chain.from_iterable(sentences)), dtype=np.int64,
                        count=int(lengths.sum()))  # fmt: skip
    states = np.ones(int(lengths.sum()) + len(sentences) + 1, dtype=np.int64)
    is_word = np.ones(len(states), dtype=bool)
    is_word[np.cumsum(lengths + 1) - 1] = False  # the separator after each sentence
    is_word[-1] = False
    states[is_word] = words
    return states


def _check(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted sentences but {len(gold)} gold sentences; score the same sentences")
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if g is None:
            raise DataNotFoundError(
                "a sentence has no gold tags (unlabelled test file); score a labelled split or attach the gold tags"
            )
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(g)} words; predict one tag per word")


def chunk_counts(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> tuple[int, int, int]:
    """(correct chunks, predicted chunks, gold chunks) over all sentences, micro-averaged as seqeval does."""
    _check(gold, predicted)
    distinct = sorted(set(itertools.chain.from_iterable(gold)).union(itertools.chain.from_iterable(predicted)))
    chunker = _Chunker(distinct)
    index = {tag: i + 2 for i, tag in enumerate(distinct)}
    gold_keys = chunker.chunk_keys(_flatten(gold, index))
    predicted_keys = chunker.chunk_keys(_flatten(predicted, index))
    correct = np.intersect1d(gold_keys, predicted_keys, assume_unique=True).size
    return int(correct), int(predicted_keys.size), int(gold_keys.size)


def seqeval_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 as fractions, computed with seqeval's own float operations.

    An undefined ratio (no predicted or no gold chunk) is 0, seqeval's ``zero_division`` default.
    """
    correct, num_predicted, num_gold = chunk_counts(gold, predicted)
    precision = correct / num_predicted if num_predicted else 0.0
    recall = correct / num_gold if num_gold else 0.0
    denominator = precision + recall
    f1 = 2.0 * precision * recall / denominator if denominator else 0.0
    return {"f1": float(f1), "precision": float(precision), "recall": float(recall)}


register_metric(Metric("seqeval_f1", lambda predicted, gold: seqeval_scores(gold, predicted), primary="f1"))
