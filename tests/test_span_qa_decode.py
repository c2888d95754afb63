"""The n-best span decoder: C++ == the Python reference exactly, the reference == brute force, and
decoding real XQuAD windows (XLM-R tokenizer of multilingual-e5-small) gives back the gold answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastxlt.tasks import metrics
from fastxlt.tasks import span_decode as sd
from fastxlt.tasks.base import get_task
from fastxlt.tasks.features import ops_for

ROOT = Path(__file__).resolve().parents[1]
XQUAD = ROOT.parent / "shared" / "data" / "xquad"

needs_cpp = pytest.mark.skipif(sd._C is None, reason="fastxlt._C with decode_spans is not built")


def random_windows(rng: np.random.Generator, questions: int, max_windows: int, max_len: int, ties: bool):
    """Random packed windows: some questions without windows, some windows without context tokens."""
    per_question = rng.integers(0, max_windows + 1, size=questions)
    lengths = rng.integers(1, max_len + 1, size=int(per_question.sum()))
    logits, context = [], []
    for n in lengths:
        if ties:
            logits.append(rng.integers(-2, 3, size=(n, 2)).astype(np.float32))
        else:
            logits.append(rng.standard_normal((n, 2)).astype(np.float32))
        begin = int(rng.integers(0, n + 1))
        context.append((begin, int(rng.integers(begin, n + 1))))
    return sd.pack(logits, context, per_question)


@needs_cpp
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(
    "questions,max_windows,max_len,n_best,max_answer_length",
    [(200, 2, 8, 1, 8), (300, 3, 40, 5, 7), (400, 4, 120, 20, 30), (700, 2, 384, 20, 30), (20, 6, 3, 20, 2)],
)
def test_cpp_decoder_equals_python_reference(questions, max_windows, max_len, n_best, max_answer_length, ties):
    rng = np.random.default_rng(questions * 7 + max_len + ties)
    packed = random_windows(rng, questions, max_windows, max_len, ties)
    ours = sd.decode_spans(packed, n_best, max_answer_length)
    reference = sd.decode_spans_reference(packed, n_best, max_answer_length)
    assert ours.equals(reference)
    assert ours.count.sum() > 0  # the draw produced candidates
    assert np.isnan(ours.null_score).sum() == int((np.diff(packed.example_offsets) == 0).sum())


def brute_force_best(packed: sd.PackedLogits, q: int, max_answer_length: int):
    """The best (score, window, start, end) over all valid pairs of all windows: no top-n shortcut."""
    best = None
    for f in range(packed.example_offsets[q], packed.example_offsets[q + 1]):
        a, b = packed.token_offsets[f], packed.token_offsets[f + 1]
        start, end = packed.logits[a:b, 0], packed.logits[a:b, 1]
        begin, stop = packed.context[f]
        for s in range(b - a):
            for e in range(s, min(b - a, s + max_answer_length)):
                if begin <= s and e < stop:
                    key = (-(start[s] + end[e]), f, s, e)
                    if best is None or key < best:
                        best = key
    return best


def test_reference_best_span_equals_brute_force_when_n_best_covers_the_window():
    rng = np.random.default_rng(3)
    for ties in (False, True):
        packed = random_windows(rng, 120, 3, 12, ties)
        nbest = sd.decode_spans_reference(packed, n_best=12, max_answer_length=4)
        for q in range(packed.num_examples):
            best = brute_force_best(packed, q, 4)
            if best is None:
                assert nbest.count[q] == 0
                continue
            got = (-nbest.score[q, 0], nbest.feature[q, 0], nbest.start_token[q, 0], nbest.end_token[q, 0])
            assert got == best
            assert np.all(np.diff(nbest.score[q, : nbest.count[q]]) <= 0)  # sorted by score


def test_select_answers_and_null_threshold_hand_computed():
    # One window "<s> q </s> Paris is big </s>": context tokens 3..5 with characters 0-5, 6-8, 9-12.
    context = "Paris is big"
    logits = np.array([[2.0, 1.0], [0, 0], [0, 0], [3.0, 2.5], [0, 0], [1.0, 0.5], [0, 0]], dtype=np.float32)
    starts, ends = [[0, 6, 9]], [[5, 8, 12]]
    packed = sd.pack([logits], [(3, 6)], [1])
    nbest = sd.decode_spans_reference(packed, n_best=3, max_answer_length=30)
    # Top-3 starts: tokens 3, 0, 5; top-3 ends: 3, 0, 5 (token 4, logit 0, is not among them, although
    # (3,4) would score 3.0). In-context pairs: (3,3) 5.5, (3,5) 3.5, (5,5) 1.5.
    assert nbest.count[0] == 3 and nbest.score[0].tolist() == [5.5, 3.5, 1.5]
    assert nbest.start_token[0].tolist() == [3, 3, 5] and nbest.end_token[0].tolist() == [3, 5, 5]
    assert [sd.candidate_span(nbest, packed, starts, ends, 0, k) for k in range(3)] == [(0, 5), (0, 12), (9, 12)]
    assert nbest.null_score[0] == 3.0
    assert sd.select_answers([context], nbest, packed, starts, ends) == ["Paris"]
    assert sd.select_answers([context], nbest, packed, starts, ends, null_threshold=0.0) == ["Paris"]  # 3 - 5.5 < 0
    logits[0, 0] = 9.0  # null score 10 - 5.5 = 4.5 > 0 -> no answer; > threshold 5 -> answer again
    packed = sd.pack([logits], [(3, 6)], [1])
    nbest = sd.decode_spans_reference(packed, 3, 30)
    assert sd.select_answers([context], nbest, packed, starts, ends, null_threshold=0.0) == [""]
    assert sd.select_answers([context], nbest, packed, starts, ends, null_threshold=5.0) == ["Paris"]
    # max_answer_length 1: only single tokens; the context range excludes token 0 even with the top start.
    nbest = sd.decode_spans_reference(packed, 3, 1)
    assert nbest.start_token[0, : nbest.count[0]].tolist() == [3, 5] and nbest.score[0, 1] == 1.5


def test_decoder_input_errors():
    nan = np.array([[np.nan, 0.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="NaN or infinity"):
        sd.decode_spans(sd.pack([nan], [(0, 1)], [1]))
    with pytest.raises(ValueError, match="windows_per_example sums to 2"):
        sd.pack([np.zeros((1, 2), np.float32)], [(0, 1)], [2])
    with pytest.raises(ValueError, match="0 <= begin <= end <= window length"):
        sd.decode_spans(sd.pack([np.zeros((2, 2), np.float32)], [(1, 3)], [1]))
    with pytest.raises(ValueError, match="n_best and max_answer_length"):
        sd.decode_spans(sd.pack([], [], []), n_best=0)


@needs_cpp
def test_cpp_decoder_checks_its_inputs():
    logits = np.zeros((3, 2), np.float32)
    context = np.array([[0, 3]])
    with pytest.raises(ValueError, match=r"logits must have shape \(tokens, 2\)"):
        sd._C.decode_spans(np.zeros(3, np.float32), context, np.array([0, 3]), np.array([0, 1]), 20, 30)
    with pytest.raises(ValueError, match="token_offsets must start at 0"):
        sd._C.decode_spans(logits, context, np.array([0, 2]), np.array([0, 1]), 20, 30)
    with pytest.raises(ValueError, match="example_offsets decreases"):
        sd._C.decode_spans(logits, np.array([[0, 1], [0, 2]]), np.array([0, 1, 3]), np.array([0, 2, 1, 2]), 20, 30)
    with pytest.raises(ValueError, match="context range of window 0"):
        sd._C.decode_spans(logits, np.array([[2, 4]]), np.array([0, 3]), np.array([0, 1]), 20, 30)


# ------------------------------------------------------------------------------------ real XQuAD


@pytest.fixture(scope="module")
def me5_tokenizer(me5_small):
    if not XQUAD.is_dir():
        pytest.skip(f"real data not present: {XQUAD}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(me5_small))


@pytest.mark.parametrize("language", ["en", "ar", "zh", "th"])
def test_real_xquad_windows_decode_identically_and_back_to_the_gold(me5_tokenizer, language):
    spec = get_task("xquad")
    ops = ops_for(spec)
    examples = spec.load("test", language, XQUAD)
    features = ops.featurize(spec, examples, me5_tokenizer, 384)
    assert len(features) > len(examples)  # long contexts give several windows
    rng = np.random.default_rng(11)
    outputs = [rng.standard_normal((len(f["input_ids"]), 2)).astype(np.float32) for f in features]
    windows = np.bincount([f["example"] for f in features], minlength=len(examples))
    context = [(f["context_start"], f["context_start"] + len(f["char_starts"])) for f in features]
    packed = sd.pack(outputs, context, windows)  # featurize keeps the windows of a question together
    reference = sd.decode_spans_reference(packed)
    if sd._C is not None:
        ours = sd.decode_spans(packed)
        assert ours.equals(reference)
        assert ops.decode(examples, features, outputs)[0] == sd.select_answers(
            [e.context for e in examples], reference, packed,
            [f["char_starts"] for f in features], [f["char_ends"] for f in features],
        )  # fmt: skip

    # Logits peaked on the labelled answer tokens: decoding must give back the gold answers.
    for feature, output in zip(features, outputs):
        if feature["start_position"] > 0:
            output[feature["start_position"], 0] += 20.0
            output[feature["end_position"], 1] += 20.0
    predictions, gold = ops.decode(examples, features, outputs)
    scores = metrics.compute("squad", predictions, gold)
    # Tokens cover whole words, so a few answers that start or end inside a word come back longer.
    assert scores["f1"] > 97.0 and scores["exact_match"] > 93.0, scores
