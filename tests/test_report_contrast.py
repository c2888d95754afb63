"""``fastxlt report --contrast AXIS=A,B``: a setting's gain at A minus its gain at B, with the paired-bootstrap
interval of that difference, against a brute-force bootstrap written from the documented draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reports_build import make_grid

from fastxlt.errors import ConfigError
from fastxlt.reports.build import build_report
from fastxlt.reports.collect import collect, results_frame
from fastxlt.reports import compare
from fastxlt.reports.compare import DeltaCache, parse_contrast, summarise
from fastxlt.reports.contrast import CONTRAST_CSV, contrasts
from fastxlt.reports.stats import percentile_interval

REPLICATES = 200


def _hits(root: Path, cell_id: str, arm: str, language: str) -> np.ndarray:
    path = root / "cells" / cell_id / "eval" / arm / "xnli" / f"{language}.json"
    return np.array([row[0] for row in json.loads(path.read_text())["example_scores"]])


def _brute_force_gain_replicates(root: Path, size: str, languages: list[str]) -> dict[str, np.ndarray]:
    """Per language, replicate r's seed-averaged delta (snli - none) at one target size, drawing indices as the
    stats module documents: one default_rng(0), then per language in order rng.integers(0, n, (replicates, n))."""
    rng = np.random.default_rng(0)
    out = {}
    for language in languages:
        hits = {(arm, seed): _hits(root, f"i={arm},snap={'best' if arm == 'snli' else '-'},size={size},seed={seed}",
                                   "snli" if arm == "snli" else "baseline", language)
                for arm in ("snli", "none") for seed in (1, 2)}  # fmt: skip
        draws = rng.integers(0, len(hits["snli", 1]), size=(REPLICATES, len(hits["snli", 1])))
        out[language] = np.array([np.mean([100 * (hits["snli", s][d].mean() - hits["none", s][d].mean()) for s in (1, 2)])
                                  for d in draws])  # fmt: skip
    return out


def test_a_contrast_is_the_difference_of_two_gains_with_a_paired_interval(tmp_path):
    """By construction snli gains 10 points in fr and sw at 250 target pairs and 6 at 'all', and 2 in English at
    both: the contrast 250 - all is +4 in fr and sw, 0 in English, +4 on the non-English average; its interval is
    the percentile interval of the replicate-by-replicate difference of the two sizes' bootstraps."""
    make_grid(tmp_path, pending=0)
    collection = collect(tmp_path)
    found = contrasts(collection, results_frame(collection), [("target_size", "250", "all")], replicates=REPLICATES)
    assert set(found["target_size"]) == {"250 - all"} and set(found["setting"]) == {"snli"}
    rows = found.set_index("language")
    assert rows.loc["fr", "delta"] == pytest.approx(4.0) and rows.loc["sw", "delta"] == pytest.approx(4.0)
    assert rows.loc["en", "delta"] == pytest.approx(0.0)
    assert rows.loc["average (non-English)", "delta"] == pytest.approx(4.0)
    languages = ["en", "fr", "sw"]
    small = _brute_force_gain_replicates(tmp_path, "250", languages)
    large = _brute_force_gain_replicates(tmp_path, "all", languages)
    for language in languages:
        assert (rows.loc[language, "low"], rows.loc[language, "high"]) == pytest.approx(
            percentile_interval(small[language] - large[language]))
    non_english = np.mean([small[lang] - large[lang] for lang in ("fr", "sw")], axis=0)
    assert (rows.loc["average (non-English)", "low"], rows.loc["average (non-English)", "high"]) == pytest.approx(
        percentile_interval(non_english))
    assert rows.loc["average (non-English)", "paired_seeds"] == 2


def test_report_writes_the_contrast_csv_and_section(tmp_path):
    make_grid(tmp_path, pending=0)
    text = build_report(tmp_path, replicates=100, contrasts=[parse_contrast("target_size=250,all")]).read_text()
    assert "## Contrasts" in text and "+4.00" in text
    table = pd.read_csv(tmp_path / CONTRAST_CSV)
    assert set(table["target_size"]) == {"250 - all"} and table["score"].isna().all()


def test_contrasts_reuse_the_summarys_bootstraps(tmp_path, monkeypatch):
    """With the cache the summary filled, a contrast bootstraps nothing again and gives the same rows as a
    contrast computed from scratch."""
    make_grid(tmp_path, pending=0)
    collection = collect(tmp_path)
    frame = results_frame(collection)
    spec = [("target_size", "250", "all")]
    fresh = contrasts(collection, frame, spec, replicates=REPLICATES)
    cache = DeltaCache()
    summarise(collection, frame, replicates=REPLICATES, cache=cache)
    calls = []
    original = compare.bootstrap_deltas
    monkeypatch.setattr(compare, "bootstrap_deltas", lambda *args, **kwargs: calls.append(args) or original(*args, **kwargs))
    reused = contrasts(collection, frame, spec, replicates=REPLICATES, cache=cache)
    assert calls == []
    pd.testing.assert_frame_equal(reused, fresh)


@pytest.mark.parametrize("spec", ["target_size=250", "target_size=250,250", "=250,all", "target_size"])
def test_a_malformed_contrast_names_the_fix(spec):
    with pytest.raises(ConfigError, match="AXIS=FIRST,SECOND"):
        parse_contrast(spec)


def test_a_contrast_on_an_unknown_axis_or_value_is_refused(tmp_path):
    make_grid(tmp_path, pending=0)
    collection = collect(tmp_path)
    frame = results_frame(collection)
    with pytest.raises(ConfigError, match="known: model, target_size"):
        contrasts(collection, frame, [("seed", "1", "2")])
    with pytest.raises(ConfigError, match="no cell has target_size=1000; this run has 250, all"):
        contrasts(collection, frame, [("target_size", "250", "1000")])


def test_a_contrast_over_other_test_examples_is_refused(tmp_path):
    """The two sides must share the bootstrap's draws: scored on 200 test examples at one size and 150 at the
    other, a replicate-by-replicate difference would pair unrelated draws."""
    make_grid(tmp_path, pending=0)
    for path in (tmp_path / "cells").glob("*size=all*/eval/*/xnli/fr.json"):
        data = json.loads(path.read_text())
        data["example_scores"], data["examples"] = data["example_scores"][:150], 150
        path.write_text(json.dumps(data))
    collection = collect(tmp_path)
    with pytest.raises(ConfigError, match="scored on other test examples"):
        contrasts(collection, results_frame(collection), [("target_size", "250", "all")], replicates=50)


def test_a_contrast_takes_the_chosen_baseline(tmp_path):
    """Two snapshots: s1 gains 10 (fr, sw) at 250 and 6 at 'all', s2 two points more at both sizes. Against no
    intermediate training each snapshot's contrast 250 - all is +4; against s1 (``--baseline snapshot=s1``) s2's
    edge is +2 at both sizes, so its contrast is 0 -- the shape of question 4's (multilingual - English) x size."""
    make_grid(tmp_path, pending=0, snapshots=("s1", "s2"))
    collection = collect(tmp_path)
    frame = results_frame(collection)
    spec = [("target_size", "250", "all")]
    against_none = contrasts(collection, frame, spec, replicates=50).set_index(["setting", "language"])
    assert against_none.loc[("snli [s2]", "fr"), "delta"] == pytest.approx(4.0)
    against_s1 = contrasts(collection, frame, spec, baseline=("snapshot", "s1"), replicates=50)
    rows = against_s1.set_index(["setting", "language"])
    assert set(against_s1["setting"]) == {"snli [s2]"}  # s1 is the baseline, none has no s1 cell to pair with
    assert rows.loc[("snli [s2]", "average (non-English)"), "delta"] == pytest.approx(0.0)
    assert rows.loc[("snli [s2]", "average (non-English)"), "low"] <= 0.0 <= rows.loc[("snli [s2]", "average (non-English)"), "high"]


def test_report_refuses_a_wrong_contrast_before_any_work(tmp_path):
    make_grid(tmp_path, pending=0)
    with pytest.raises(ConfigError, match="no cell has target_size=1000"):
        build_report(tmp_path, replicates=10, contrasts=[("target_size", "250", "1000")])
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "report.md").exists()
