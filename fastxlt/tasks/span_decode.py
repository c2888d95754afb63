"""N-best answer-span decoding for extractive QA: per-token start/end logits -> answer text.

Why this module exists: a long context is split into overlapping windows (features), the model
scores every token of every window as answer start and end, and the answer of a question is the best
span over all its windows. The common Hugging Face post-processing does this in a Python loop over
the top-n start x top-n end tokens of every window, which dominates evaluation time on CPU. The same
algorithm runs here in C++ (``fastxlt._C.decode_spans``, csrc/span_decode.cpp) over all questions at
once; :func:`decode_spans_reference` is that loop written plainly, and the tests hold the two equal.

The algorithm (both implementations):

1. In every window, take the ``n_best`` highest start logits and the ``n_best`` highest end logits
   (over all tokens; equal logits: the lower token index first).
2. Every pair (s, e) of them with ``s <= e``, ``e - s + 1 <= max_answer_length`` and both tokens inside
   the window's context tokens ``[context_begin, context_end)`` (the question, special and padding
   tokens are outside) is a candidate, scored ``start_logit[s] + end_logit[e]`` in float32.
3. Over all windows of a question keep the ``n_best`` best candidates, ordered by score (descending),
   then window, start token, end token (ascending): a total order, so ties are deterministic.
4. The null score of a question (SQuAD v2.0) is the smallest ``start_logit[0] + end_logit[0]`` over
   its windows, as in the Hugging Face example.

:func:`select_answers` turns the best candidates into answer texts (the context characters that the
start and end tokens cover), predicting "no answer" when ``null_score - best_score > null_threshold``
(SQuAD v2.0).

Packed layout (what both implementations take, built by :func:`pack`): ``logits`` float32
(tokens, 2) holds every window's (start, end) logits back to back; window ``f`` is rows
``token_offsets[f]:token_offsets[f+1]`` and its context tokens are ``context[f] = (begin, end)``
(indices inside the window); question ``q`` owns windows ``example_offsets[q]:example_offsets[q+1]``.
Only logits and two integers per window are packed: character offsets are looked up for the answers
alone, which keeps packing far cheaper than decoding.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

N_BEST = 20
MAX_ANSWER_LENGTH = 30


try:  # the C++ extension is optional (a source tree without a build): the Python path below stands in
    from fastxlt import _C
except ImportError:
    _C = None
if not hasattr(_C, "decode_spans"):  # an extension built before the span decoder existed
    _C = None
_warned_fallback = False


@dataclass(frozen=True)
class PackedLogits:
    """Every window's logits and context token range, packed back to back (see the module doc)."""

    logits: np.ndarray  # float32 (tokens, 2): start, end
    context: np.ndarray  # int64 (windows, 2): [begin, end) token indices inside the window
    token_offsets: np.ndarray  # int64 (windows + 1,)
    example_offsets: np.ndarray  # int64 (questions + 1,)

    @property
    def num_examples(self) -> int:
        return len(self.example_offsets) - 1


@dataclass(frozen=True)
class NBest:
    """The n-best candidate spans of every question; row q, columns 0..count[q]-1 are valid."""

    count: np.ndarray  # int64 (questions,)
    score: np.ndarray  # float32 (questions, n_best), NaN where unused
    feature: np.ndarray  # int64 (questions, n_best): packed window index, -1 where unused
    start_token: np.ndarray  # int64: token index inside the window
    end_token: np.ndarray
    null_score: np.ndarray  # float32 (questions,), NaN for a question without windows

    FIELDS = ("count", "score", "feature", "start_token", "end_token", "null_score")

    def equals(self, other: "NBest") -> bool:
        """Exact equality of every field (NaN equals NaN): how the two implementations are compared."""
        return all(
            np.array_equal(getattr(self, name), getattr(other, name), equal_nan=getattr(self, name).dtype.kind == "f")
            for name in self.FIELDS
        )


def pack(
    logits: Sequence[np.ndarray], context: Sequence[Sequence[int]], windows_per_example: Sequence[int]
) -> PackedLogits:
    """Pack per-window (tokens, 2) logits and (begin, end) context ranges; a question's windows are consecutive."""
    lengths = np.fromiter((len(row) for row in logits), dtype=np.int64, count=len(logits))
    token_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=token_offsets[1:])
    example_offsets = np.zeros(len(windows_per_example) + 1, dtype=np.int64)
    np.cumsum(np.asarray(windows_per_example, dtype=np.int64), out=example_offsets[1:])
    if example_offsets[-1] != len(lengths):
        raise ValueError(f"windows_per_example sums to {example_offsets[-1]} but there are {len(lengths)} windows")
    if len(context) != len(lengths):
        raise ValueError(f"{len(context)} context ranges for {len(lengths)} windows")
    flat = np.concatenate(logits).astype(np.float32, copy=False) if len(logits) else np.zeros((0, 2), np.float32)
    if flat.ndim != 2 or flat.shape[1] != 2:
        raise ValueError(f"each window's logits must have shape (tokens, 2), got rows of shape {flat.shape[1:]}")
    ranges = np.asarray(context, dtype=np.int64).reshape(len(lengths), 2)
    return PackedLogits(np.ascontiguousarray(flat), np.ascontiguousarray(ranges), token_offsets, example_offsets)


def _validate(packed: PackedLogits, n_best: int, max_answer_length: int) -> None:
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(f"n_best and max_answer_length must be >= 1, got {n_best} and {max_answer_length}")
    tokens, windows = len(packed.logits), len(packed.token_offsets) - 1
    offsets = packed.token_offsets
    if offsets[0] != 0 or offsets[-1] != tokens or np.any(np.diff(offsets) < 0):
        raise ValueError("token_offsets must rise from 0 to the number of tokens; build them with pack()")
    examples = packed.example_offsets
    if examples[0] != 0 or examples[-1] != windows or np.any(np.diff(examples) < 0):
        raise ValueError("example_offsets must rise from 0 to the number of windows; build them with pack()")
    begin, end = packed.context[:, 0], packed.context[:, 1]
    if np.any(begin < 0) or np.any(end < begin) or np.any(end > np.diff(offsets)):
        raise ValueError("every context range must satisfy 0 <= begin <= end <= window length")
    # A float64 sum of finite float32 values cannot overflow: it is finite exactly when all are.
    if not np.isfinite(packed.logits.sum(dtype=np.float64)):
        raise ValueError("logits contain NaN or infinity; the model diverged or the outputs are corrupt")


def decode_spans(packed: PackedLogits, n_best: int = N_BEST, max_answer_length: int = MAX_ANSWER_LENGTH) -> NBest:
    """The n-best spans of every question, with the C++ decoder (the Python reference if it is not built)."""
    _validate(packed, n_best, max_answer_length)
    if _C is None:
        _warn_fallback()
        return decode_spans_reference(packed, n_best, max_answer_length)
    out = _C.decode_spans(
        packed.logits, packed.context, packed.token_offsets, packed.example_offsets, int(n_best), int(max_answer_length)
    )
    return NBest(**out)


def _warn_fallback() -> None:
    global _warned_fallback
    if not _warned_fallback:
        warnings.warn(
            "fastxlt._C has no decode_spans (extension not built); using the slow Python span decoder. "
            "Build it with `pip install -e .`",
            RuntimeWarning,
            stacklevel=3,
        )
        _warned_fallback = True


def decode_spans_reference(
    packed: PackedLogits, n_best: int = N_BEST, max_answer_length: int = MAX_ANSWER_LENGTH
) -> NBest:
    """The algorithm as the Hugging Face example writes it: a Python loop per window over top-n x top-n."""
    _validate(packed, n_best, max_answer_length)
    questions = packed.num_examples
    result = _empty_nbest(questions, n_best)
    for q in range(questions):
        candidates = []
        null_score = None
        for f in range(packed.example_offsets[q], packed.example_offsets[q + 1]):
            a, b = packed.token_offsets[f], packed.token_offsets[f + 1]
            if a == b:
                continue
            start, end = packed.logits[a:b, 0], packed.logits[a:b, 1]
            begin, stop = packed.context[f]
            window_null = start[0] + end[0]
            if null_score is None or window_null < null_score:
                null_score = window_null
            start_indexes = np.argsort(-start, kind="stable")[:n_best].tolist()
            end_indexes = np.argsort(-end, kind="stable")[:n_best].tolist()
            for s in start_indexes:
                for e in end_indexes:
                    if not (begin <= s < stop and begin <= e < stop):  # outside the context
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    candidates.append((start[s] + end[e], int(f), s, e))
        candidates.sort(key=lambda c: (-c[0], c[1], c[2], c[3]))
        kept = candidates[:n_best]
        result.count[q] = len(kept)
        for k, (score, f, s, e) in enumerate(kept):
            result.score[q, k] = score
            result.feature[q, k] = f
            result.start_token[q, k] = s
            result.end_token[q, k] = e
        if null_score is not None:
            result.null_score[q] = null_score
    return result


def _empty_nbest(questions: int, n_best: int) -> NBest:
    def ints() -> np.ndarray:
        return np.full((questions, n_best), -1, dtype=np.int64)

    return NBest(
        count=np.zeros(questions, dtype=np.int64),
        score=np.full((questions, n_best), np.nan, dtype=np.float32),
        feature=ints(), start_token=ints(), end_token=ints(),
        null_score=np.full(questions, np.nan, dtype=np.float32),
    )  # fmt: skip


def candidate_span(
    nbest: NBest, packed: PackedLogits, char_starts: Sequence[Sequence[int]], char_ends: Sequence[Sequence[int]],
    q: int, k: int = 0,
) -> tuple[int, int]:
    """Character span [start, end) of candidate k of question q.

    ``char_starts[f]`` / ``char_ends[f]`` are the character offsets of window f's context tokens
    (token ``context[f][0] + i`` has offsets ``char_starts[f][i]``, ``char_ends[f][i]``).
    """
    f = int(nbest.feature[q, k])
    begin = int(packed.context[f, 0])
    return char_starts[f][int(nbest.start_token[q, k]) - begin], char_ends[f][int(nbest.end_token[q, k]) - begin]


def select_answers(
    contexts: Sequence[str],
    nbest: NBest,
    packed: PackedLogits,
    char_starts: Sequence[Sequence[int]],
    char_ends: Sequence[Sequence[int]],
    null_threshold: float | None = None,
) -> list[str]:
    """The answer text of every question: its best span, or "" for no answer.

    ``null_threshold=None`` (SQuAD v1.1, XQuAD, MLQA, TyDiQA): always answer when a span exists.
    A number (SQuAD v2.0, default 0.0): answer "" when ``null_score - best_score > null_threshold``.
    """
    if len(contexts) != len(nbest.count):
        raise ValueError(f"{len(contexts)} contexts but {len(nbest.count)} decoded questions")
    # Plain lists: indexing numpy arrays element by element would cost more than the decoding.
    count, score, null_score = nbest.count.tolist(), nbest.score[:, 0].tolist(), nbest.null_score.tolist()
    feature, start_token, end_token = nbest.feature[:, 0].tolist(), nbest.start_token[:, 0].tolist(), nbest.end_token[:, 0].tolist()
    begins = packed.context[:, 0].tolist()
    answers = []
    for q, context in enumerate(contexts):
        if count[q] == 0 or (null_threshold is not None and null_score[q] - score[q] > null_threshold):
            answers.append("")
            continue
        f, begin = feature[q], begins[feature[q]]
        answers.append(context[char_starts[f][start_token[q] - begin] : char_ends[f][end_token[q] - begin]])
    return answers
