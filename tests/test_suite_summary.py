"""The suite-over-a-grid table (fastxlt.reports.suite_summary) against hand-computed seed means and paired deltas."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fastxlt.errors import ConfigError
from fastxlt.reports.suite_summary import main, suite_summary


def _suite() -> dict:
    def column(de: float, sw: float, zh: float) -> dict:
        return {"tasks": {"tatoeba": {"languages": {"de": de, "sw": sw, "zh": zh}}}}

    return {"columns": {
        "seed=1,intermediate=none,intermediate_languages=-": column(60, 20, 40),
        "seed=2,intermediate=none,intermediate_languages=-": column(62, 22, 44),
        "seed=1,intermediate=xnli,intermediate_languages=en": column(58, 24, 40),
        "seed=2,intermediate=xnli,intermediate_languages=en": column(60, 20, 41),
        "seed=1,intermediate=xnli,intermediate_languages=de": column(70, 20, 40),
        "seed=2,intermediate=xnli,intermediate_languages=de": column(66, 26, 47),
    }}  # fmt: skip


def _row(frame: pd.DataFrame, languages: str, language: str) -> pd.Series:
    return frame[(frame["intermediate_languages"] == languages) & (frame["language"] == language)].iloc[0]


def test_scores_and_deltas_against_no_intermediate_training():
    frame = suite_summary(_suite(), "tatoeba", groups={"seen": ["de", "zh"]})
    none, de = _row(frame, "-", "average"), _row(frame, "de", "average")
    assert none["score"] == pytest.approx(np.mean([40, 128 / 3]))  # seed averages 40 and 42.67
    assert none["std"] == pytest.approx(np.std([40, 128 / 3], ddof=1)) and np.isnan(none["delta"])
    assert de["score"] == pytest.approx(np.mean([130 / 3, 139 / 3]))
    assert de["delta"] == pytest.approx(np.mean([130 / 3 - 40, 139 / 3 - 128 / 3]))
    assert _row(frame, "de", "de")["delta"] == pytest.approx(np.mean([10, 4]))
    seen = _row(frame, "de", "group seen")  # (de + zh) / 2
    assert seen["score"] == pytest.approx(np.mean([55, 56.5])) and seen["delta"] == pytest.approx(np.mean([5, 3.5]))
    minus = _row(frame, "de", "group seen - rest")  # (seen - sw) of the arm minus that of none, per seed
    assert np.isnan(minus["score"]) and minus["delta"] == pytest.approx(np.mean([(55 - 20) - (50 - 20), (56.5 - 26) - (53 - 22)]))
    assert frame["low"].isna().all() and not frame["significant"].any()  # no per-query outcomes: no bootstrap


def test_against_another_baseline_and_on_the_command_line(tmp_path, capsys):
    frame = suite_summary(_suite(), "tatoeba", baseline=("intermediate_languages", "en"))
    assert np.isnan(_row(frame, "-", "average")["delta"]) and np.isnan(_row(frame, "en", "average")["delta"])
    assert _row(frame, "de", "sw")["delta"] == pytest.approx(np.mean([20 - 24, 26 - 20]))
    path = tmp_path / "xtreme-r.json"
    path.write_text(json.dumps(_suite()))
    assert main([str(path), str(tmp_path / "t.csv"), "--task", "tatoeba", "--baseline", "intermediate_languages=en"]) == 0
    written = pd.read_csv(tmp_path / "t.csv", keep_default_na=False, na_values=[""])
    assert written["delta"].dropna().tolist() == pytest.approx(frame["delta"].dropna().tolist())
    assert main([str(path), str(tmp_path / "x.csv"), "--task", "xnli"]) == 2
    assert "no 'xnli' scores; run it with --task xnli" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="has no seed axis"):
        suite_summary({"columns": {"intermediate=none": _suite()["columns"]["seed=1,intermediate=none,intermediate_languages=-"]}}, "tatoeba")
