"""Span-QA metrics against the published definitions, on hand-computed cases and real XQuAD.

The oracle below is a straightforward transcription of the official scripts (SQuAD v1.1
``evaluate-v1.1.py``, SQuAD v2.0 ``evaluate-v2.0.py`` without no-answer probabilities, MLQA
``mlqa_evaluation_v1.py``), each walking the SQuAD-format json itself. fastxlt must return the same
numbers, compared with ``==`` (to the last digit), on predictions drawn from the gold answers of all
12 XQuAD languages and perturbed with a fixed seed.
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from fastxlt.errors import ConfigError
from fastxlt.tasks.aggregate import task_score
from fastxlt.tasks import metrics
from fastxlt.tasks.qa_metrics import QAGold
from fastxlt.tasks.span_qa import read_squad_json

XQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xquad"
XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MLQA_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")


# ------------------------------------------------------------------------------------ the oracle


def official_normalize_v1(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def official_v1(dataset, predictions):
    def f1_score(prediction, ground_truth):
        prediction_tokens = official_normalize_v1(prediction).split()
        ground_truth_tokens = official_normalize_v1(ground_truth).split()
        common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    def exact_match_score(prediction, ground_truth):
        return official_normalize_v1(prediction) == official_normalize_v1(ground_truth)

    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                ground_truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(exact_match_score(prediction, gt) for gt in ground_truths)
                f1 += max(f1_score(prediction, gt) for gt in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def official_v2(dataset, predictions):
    def get_tokens(s):
        if not s:
            return []
        return official_normalize_v1(s).split()

    def compute_exact(a_gold, a_pred):
        return int(official_normalize_v1(a_gold) == official_normalize_v1(a_pred))

    def compute_f1(a_gold, a_pred):
        gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
        common = Counter(gold_toks) & Counter(pred_toks)
        num_same = sum(common.values())
        if len(gold_toks) == 0 or len(pred_toks) == 0:
            return int(gold_toks == pred_toks)
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(pred_toks)
        recall = 1.0 * num_same / len(gold_toks)
        return (2 * precision * recall) / (precision + recall)

    exact_scores, f1_scores, has_ans = {}, {}, {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid = qa["id"]
                has_ans[qid] = bool(qa["answers"])
                gold_answers = [a["text"] for a in qa["answers"] if official_normalize_v1(a["text"])]
                if not gold_answers:
                    gold_answers = [""]
                a_pred = predictions[qid]
                exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)

    def make_eval_dict(qid_list):
        total = len(qid_list)
        return {
            "exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
            "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total,
            "total": total,
        }

    result = {"all": make_eval_dict(list(exact_scores))}
    has = [k for k, v in has_ans.items() if v]
    no = [k for k, v in has_ans.items() if not v]
    if has:
        result["HasAns"] = make_eval_dict(has)
    if no:
        result["NoAns"] = make_eval_dict(no)
    return result


PUNCT = {chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")}.union(
    string.punctuation
)
WHITESPACE_LANGS = ["en", "es", "hi", "vi", "de", "ar"]
MIXED_SEGMENTATION_LANGS = ["zh"]


def official_normalize_mlqa(s, lang):
    def whitespace_tokenize(text):
        return text.split()

    def mixed_segmentation(text):
        segs_out = []
        temp_str = ""
        for char in text:
            if re.search(r"[\u4e00-\u9fa5]", char) or char in PUNCT:
                if temp_str != "":
                    segs_out.extend(whitespace_tokenize(temp_str))
                    temp_str = ""
                segs_out.append(char)
            else:
                temp_str += char
        if temp_str != "":
            segs_out.extend(whitespace_tokenize(temp_str))
        return segs_out

    def remove_articles(text, lang):
        if lang == "en":
            return re.sub(r"\b(a|an|the)\b", " ", text)
        elif lang == "es":
            return re.sub(r"\b(un|una|unos|unas|el|la|los|las)\b", " ", text)
        elif lang == "hi":
            return text
        elif lang == "vi":
            return re.sub(r"\b(của|là|cái|chiếc|những)\b", " ", text)
        elif lang == "de":
            return re.sub(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b", " ", text)
        elif lang == "ar":
            return re.sub(r"\sال^|ال", " ", text)
        elif lang == "zh":
            return text
        raise Exception(f"Unknown Language {lang}")

    def white_space_fix(text, lang):
        if lang in WHITESPACE_LANGS:
            tokens = whitespace_tokenize(text)
        elif lang in MIXED_SEGMENTATION_LANGS:
            tokens = mixed_segmentation(text)
        else:
            raise Exception(f"Unknown Language {lang}")
        return " ".join([t for t in tokens if t.strip() != ""])

    def remove_punc(text):
        return "".join(ch for ch in text if ch not in PUNCT)

    return white_space_fix(remove_articles(remove_punc(s.lower()), lang), lang)


def official_mlqa(dataset, predictions, lang):
    def f1_score(prediction, ground_truth):
        prediction_tokens = official_normalize_mlqa(prediction, lang).split()
        ground_truth_tokens = official_normalize_mlqa(ground_truth, lang).split()
        common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                ground_truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(
                    official_normalize_mlqa(prediction, lang) == official_normalize_mlqa(gt, lang) for gt in ground_truths
                )
                f1 += max(f1_score(prediction, gt) for gt in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# ------------------------------------------------------------------------------------ perturbations

EXTRA = ["the ", "a ", "The ", "der ", "la ", "ال", "«", "»", "。", "、", "!", "¿", "—", " ", "  ", "\u3000", "“", "”"]


def perturb(rng: random.Random, answer: str, context: str, other: str) -> str:
    """A prediction near the gold answer: the gold itself, or a typical model error."""
    kind = rng.randrange(10)
    words = answer.split()
    if kind == 0:
        return answer
    if kind == 1:
        return answer.upper() if rng.random() < 0.5 else answer.lower()
    if kind == 2:
        return rng.choice(EXTRA) + answer + rng.choice(EXTRA)
    if kind == 3 and len(words) > 1:
        return " ".join(words[: rng.randrange(1, len(words))])
    if kind == 4:
        start = context.find(answer)
        if start >= 0:
            return context[max(0, start - rng.randrange(1, 15)) : start + len(answer) + rng.randrange(0, 15)]
    if kind == 5:
        return ""
    if kind == 6:
        return other
    if kind == 7 and len(answer) > 1:
        cut = rng.randrange(1, len(answer))
        return answer[:cut] + rng.choice(EXTRA) + answer[cut:]
    if kind == 8:
        return " ".join(words + words[: rng.randrange(0, len(words) + 1)])
    return answer[: max(1, len(answer) // 2)]


def load_xquad(language: str) -> list[dict]:
    path = XQUAD / f"xquad.{language}.json"
    if not path.is_file():
        pytest.skip(f"real data not present: {path}")
    return json.loads(path.read_text(encoding="utf-8"))["data"]


def drawn_predictions(dataset: list[dict], seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    qas = [(qa, p["context"]) for article in dataset for p in article["paragraphs"] for qa in p["qas"]]
    answers = [qa["answers"][0]["text"] if qa["answers"] else "" for qa, _ in qas]
    return {
        qa["id"]: perturb(rng, answers[i], context, answers[rng.randrange(len(answers))])
        for i, (qa, context) in enumerate(qas)
    }


def fastxlt_scores(metric: str, dataset: list[dict], predictions: dict[str, str], language: str) -> dict[str, float]:
    """Score through the public path: fastxlt's reader, QAGold, metrics.compute."""
    path_examples = [
        (qa["id"], tuple(a["text"] for a in qa["answers"]))
        for article in dataset for p in article["paragraphs"] for qa in p["qas"]
    ]  # fmt: skip
    gold = [QAGold(texts, language) for _, texts in path_examples]
    return metrics.compute(metric, [predictions[qid] for qid, _ in path_examples], gold)


# ------------------------------------------------------------------------------------ real XQuAD


@pytest.mark.parametrize("language", XQUAD_LANGUAGES)
def test_squad_v1_and_v2_equal_the_official_scripts_on_xquad(language):
    dataset = load_xquad(language)
    predictions = drawn_predictions(dataset, seed=sum(map(ord, language)))
    assert len(predictions) == 1190
    ours = fastxlt_scores("squad", dataset, predictions, language)
    assert ours == official_v1(dataset, predictions)
    assert 5.0 < ours["exact_match"] < ours["f1"] < 95.0  # the perturbations are neither all right nor all wrong

    # SQuAD v2.0: make every fifth question unanswerable (gold []), and predict "" for some of them.
    rng = random.Random(len(language))
    for i, qa in enumerate(qa for article in dataset for p in article["paragraphs"] for qa in p["qas"]):
        if i % 5 == 0:
            qa["answers"] = []
            if rng.random() < 0.5:
                predictions[qa["id"]] = ""
    official = official_v2(dataset, predictions)
    ours = fastxlt_scores("squad_v2", dataset, predictions, language)
    assert ours["exact_match"] == official["all"]["exact"] and ours["f1"] == official["all"]["f1"]
    assert ours["has_ans_exact_match"] == official["HasAns"]["exact"] and ours["has_ans_f1"] == official["HasAns"]["f1"]
    assert ours["no_ans_exact_match"] == official["NoAns"]["exact"] and ours["no_ans_f1"] == official["NoAns"]["f1"]
    assert ours["no_ans_total"] == official["NoAns"]["total"] == 238


@pytest.mark.parametrize("language", MLQA_LANGUAGES)
def test_mlqa_metric_equals_the_official_script_on_xquad(language):
    dataset = load_xquad(language)
    predictions = drawn_predictions(dataset, seed=100 + sum(map(ord, language)))
    ours = fastxlt_scores("mlqa", dataset, predictions, language)
    assert ours == official_mlqa(dataset, predictions, language)
    assert 5.0 < ours["exact_match"] < ours["f1"] < 95.0


def test_reader_gold_scores_100_on_every_xquad_language():
    if not XQUAD.is_dir():
        pytest.skip(f"real data not present: {XQUAD}")
    for language in XQUAD_LANGUAGES:
        examples = read_squad_json(XQUAD / f"xquad.{language}.json", language)
        assert len(examples) == 1190 and all(ex.language == language and len(ex.answer_texts) == 1 for ex in examples)
        gold = [QAGold(ex.answer_texts, ex.language) for ex in examples]
        scores = metrics.compute("squad", [ex.answer_texts[0] for ex in examples], gold)
        assert scores == {"exact_match": 100.0, "f1": 100.0}


# ------------------------------------------------------------------------------------ hand-computed


def test_squad_hand_computed():
    # "The Eiffel tower!" vs "eiffel tower": normalised equal -> EM 1, F1 1.
    # "tower in Paris" vs "Eiffel tower": common {tower} -> P 1/3, R 1/2, F1 0.4.
    # "" vs "x": EM 0, F1 0. Max over gold answers: second question matches its second answer.
    predictions = ["The Eiffel tower!", "tower in Paris", ""]
    gold = [["eiffel tower"], ["Eiffel tower", "tower in paris."], ["x"]]
    scores = metrics.compute("squad", predictions, gold)
    assert scores["exact_match"] == 100.0 * 2 / 3
    assert scores["f1"] == 100.0 * 2 / 3
    scores = metrics.compute("squad", ["tower in Paris"], [["Eiffel tower"]])
    assert scores["f1"] == pytest.approx(40.0, abs=1e-12) and scores["exact_match"] == 0.0
    assert metrics.primary_score("squad", scores) == scores["f1"]
    assert task_score("squad", {"f1": 40.0, "exact_match": 10.0}) == 25.0


def test_squad_v2_empty_answers_hand_computed():
    # no answer + "" -> 1/1; no answer + "Paris" -> 0/0; answer + "" -> 0/0; answer "a" (normalises to
    # nothing, so the gold becomes "") + "" -> 1/1.
    scores = metrics.compute("squad_v2", ["", "Paris", "", ""], [[], [], ["Paris"], ["a"]])
    assert scores["exact_match"] == 50.0 and scores["f1"] == 50.0
    assert scores["no_ans_exact_match"] == 50.0 and scores["has_ans_exact_match"] == 50.0
    assert metrics.primary_score("squad_v2", scores) == 50.0


def test_mlqa_language_aware_normalisation_hand_computed():
    # German articles go, English ones stay in German text; Chinese splits into characters.
    assert metrics.compute("mlqa", ["der Hund"], [QAGold(("Hund",), "de")])["exact_match"] == 100.0
    assert metrics.compute("mlqa", ["the Hund"], [QAGold(("Hund",), "de")])["exact_match"] == 0.0
    assert metrics.compute("squad", ["der Hund"], [QAGold(("Hund",), "de")])["exact_match"] == 0.0
    # 北京大学 vs 北京: 2 of 4 predicted characters match 2 of 2 gold -> P 1/2, R 1 -> F1 2/3.
    scores = metrics.compute("mlqa", ["北京大学。"], [QAGold(("北京",), "zh")])
    assert scores["f1"] == pytest.approx(100 * 2 / 3, abs=1e-12) and scores["exact_match"] == 0.0
    # SQuAD's whitespace tokenisation sees one token each: F1 0.
    assert metrics.compute("squad", ["北京大学。"], [QAGold(("北京",), "zh")])["f1"] == 0.0
    # Unicode punctuation (« ») is removed by MLQA, not by SQuAD v1.1.
    assert metrics.compute("mlqa", ["«Hund»"], [QAGold(("Hund",), "de")])["exact_match"] == 100.0
    assert metrics.compute("squad", ["«Hund»"], [QAGold(("Hund",), "de")])["exact_match"] == 0.0


def test_metric_input_errors():
    with pytest.raises(ConfigError, match="no normalisation for language 'th'"):
        metrics.compute("mlqa", ["x"], [QAGold(("x",), "th")])
    with pytest.raises(ValueError, match="2 predictions but 1 gold"):
        metrics.compute("squad", ["x", "y"], [["x"]])
    with pytest.raises(ValueError, match="no gold answer; the 'squad' metric needs answers"):
        metrics.compute("squad", ["x"], [[]])
