"""Intermediate and target tasks in any language (issue 12, item 4): the translate-train layouts, read through the
task registry, and a phase that mixes languages at equal total examples.

The fixtures (tests/fixtures/translate_train) hold each layout as published, three parallel items per language:
XNLI-MT 1.0 (``XNLI-MT-1.0/multinli/multinli.train.XX.tsv``), PAWS-X ``x-final/XX/translated_train.tsv`` and
XTREME's SQuAD translations (``translate-train/squad.translate.train.en-XX.json``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fastxlt.config import PhaseConfig
from fastxlt.experiments.preflight import experiment_from_dict
from fastxlt.errors import DataNotFoundError, UnknownLanguageError
from fastxlt.experiments.preflight import check_experiment
from fastxlt.tasks.base import PairExample, get_task
from fastxlt.training.loop import _train_languages, subset_examples

FIXTURES = Path(__file__).parent / "fixtures" / "translate_train"
NLI = {"entailment": 0, "neutral": 1, "contradiction": 2}


def test_xnli_mt_files_give_the_translated_multinli_training_set():
    xnli = get_task("xnli")
    german = xnli.load("train", "de", FIXTURES / "xnli")
    assert german[1] == PairExample("Er kaufte Brot.", "Er kaufte nichts.", NLI["contradiction"])  # 'contradictory'
    assert [e.label for e in german] == [e.label for e in xnli.load("train", "fr", FIXTURES / "xnli")]
    assert xnli.load("train", "en", FIXTURES / "xnli")[0].text_a == "The cat sleeps on the mat."
    with pytest.raises(DataNotFoundError, match=r"multinli\.train\.es\.tsv"):
        xnli.load("train", "es", FIXTURES / "xnli")


def test_pawsx_translated_train_is_the_training_split_of_other_languages():
    pawsx = get_task("pawsx")
    french = pawsx.load("train", "fr", FIXTURES / "pawsx")
    assert [(e.text_a, e.label) for e in french][:2] == [("Paris est en France.", 1), ("Tom a rencontré Ann.", 0)]
    assert pawsx.load("train", "en", FIXTURES / "pawsx")[2].text_b == "The river flows to the north."


def test_squad_translate_train_serves_squad_xquad_and_mlqa(caplog):
    data = FIXTURES / "squad"
    with caplog.at_level(logging.WARNING, logger="fastxlt.tasks.span_qa"):
        german = get_task("squad").load("train", "de", data)
    # q2's translated answer_start misses "Rhein": skipped and counted, as XTREME's run_squad.py skips it
    assert [(e.id, e.answer_texts, e.language) for e in german] == [("q1", ("Berlin",), "de")]
    assert "skipped 1 of 2 questions" in caplog.text
    french = get_task("squad").load("train", "fr", data)
    assert [(e.id, e.answer_texts[0], e.answer_starts[0]) for e in french] == [("q1", "Berlin", 0), ("q2", "Le Rhin", 0)]
    assert get_task("xquad").load("train", "de", data) == german  # XQuAD and MLQA train on SQuAD, in any language
    assert [e.id for e in get_task("mlqa").load("train", "en", data)] == ["q1", "q2"]  # English: SQuAD v1.1 itself
    with pytest.raises(DataNotFoundError, match=r"translate-train/squad\.translate\.train\.en-es\.json"):
        get_task("squad").load("train", "es", data)
    with pytest.raises(DataNotFoundError, match=r"machine-translated data.*squad\.translate\.train\.en-de\.json"):
        get_task("squad").load("train", "de")  # no hub copy of the translations
    with pytest.raises(UnknownLanguageError, match="task 'squad' has no language 'xx'"):
        get_task("squad").load("train", "xx", data)


def test_squad_in_other_languages_is_not_part_of_all():
    squad = get_task("squad")
    assert squad.resolve_languages("all") == ["en"]
    assert squad.resolve_languages(["de", "fr"]) == ["de", "fr"]


@pytest.mark.parametrize("task", ["xnli", "pawsx", "squad"])
def test_a_phase_mixes_languages_at_equal_total_examples(task):
    """train_languages [de, fr] reads each language's translated file; train_examples is the total over languages,
    split equally, with different items per language (the files are parallel)."""
    spec = get_task(task)
    phase = PhaseConfig(tasks=[task], train_languages=["de", "fr"], train_examples=2)
    assert _train_languages(spec, phase) == ["de", "fr"]
    data = FIXTURES / task
    per_language = [spec.load("train", language, data) for language in _train_languages(spec, phase)]
    if task == "squad":  # German lost its misaligned question: no longer parallel, still one item each
        assert [len(rows) for rows in per_language] == [1, 2]
    chosen = subset_examples(per_language, phase)
    assert len(chosen) == 2
    assert sum(example in per_language[0] for example in chosen) == 1
    assert sum(example in per_language[1] for example in chosen) == 1
    if task != "squad":
        positions = [rows.index(example) for rows in per_language for example in chosen if example in rows]
        assert len(set(positions)) == 2  # different items, not one item in two languages


def test_preflight_checks_every_training_language_before_any_work(tmp_path):
    def config(languages: list[str]) -> dict:
        return {
            "model": {"name_or_path": "synthetic"}, "run_dir": str(tmp_path / "run"),
            "optimization": {"max_length": 128},  # the synthetic model's limit (preflight checks it too)
            "data": {name: str(FIXTURES / name) for name in ("xnli", "pawsx", "squad")},
            "phases": {"intermediate": {"tasks": ["xnli", "pawsx", "squad"], "train_languages": languages,
                                        "dev_holdout": 1}},
        }  # fmt: skip

    check_experiment(experiment_from_dict(config(["de", "fr"])))
    with pytest.raises(DataNotFoundError, match=r"tasks\[0\] \(xnli\).*multinli\.train\.es\.tsv"):
        check_experiment(experiment_from_dict(config(["de", "es"])))
