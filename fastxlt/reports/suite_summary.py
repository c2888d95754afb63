"""A task of the XTREME-R suite run over a grid (``fastxlt-eval --suite xtreme-r --model GRID``), as a table in
``summary.csv``'s columns, so that a research page can show it beside the grid's own tasks.

The suite names each column by the grid axes that vary (``seed=1,intermediate=xnli,intermediate_languages=de``)
and keeps one score per language. Rows here are the settings (every axis but ``seed``) x the languages, their
``average`` and each ``--group``'s average and its difference from the other languages. A score is the mean over
seeds (``std`` their standard deviation); ``delta`` is the mean over seeds of (setting - baseline) for equal
seeds: the no-intermediate column by default, or the column with ``--baseline AXIS=VALUE`` and every other axis
equal. ``low``/``high`` stay empty: the suite keeps per-language accuracies, not per-query outcomes, so there is
no paired bootstrap over examples to draw (the grid's own tasks have one); the spread over seeds is what it shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fastxlt.errors import ConfigError
from fastxlt.reports.compare import parse_baseline, parse_groups

NONE = "none"
AVERAGE = "average"


def parse_column(name: str) -> dict[str, str]:
    """``seed=1,intermediate=xnli`` -> {"seed": "1", "intermediate": "xnli"}; a column needs its seed."""
    axes = dict(part.split("=", 1) for part in name.split(",") if "=" in part)
    if "seed" not in axes:
        raise ConfigError(f"suite column '{name}' has no seed axis; run the suite over a grid with a seed axis")
    return axes


def per_seed_scores(suite: Mapping, task: str, groups: Mapping[str, Sequence[str]]) -> dict[tuple, dict[str, dict[str, float]]]:
    """(setting axes as sorted pairs) -> seed -> {language or aggregate: score}."""
    out: dict[tuple, dict[str, dict[str, float]]] = {}
    for name, column in suite["columns"].items():
        if task not in column.get("tasks", {}):
            continue
        axes = parse_column(name)
        seed = axes.pop("seed")
        scores = dict(column["tasks"][task]["languages"])
        languages = sorted(scores)
        values = {**scores, AVERAGE: float(np.mean([scores[lang] for lang in languages]))}
        for group, members in groups.items():
            inside = [scores[lang] for lang in members if lang in scores]
            rest = [scores[lang] for lang in languages if lang not in members]
            if inside:
                values[f"group {group}"] = float(np.mean(inside))
            if inside and rest:
                values[f"group {group} - rest"] = float(np.mean(inside) - np.mean(rest))
        out.setdefault(tuple(sorted(axes.items())), {})[seed] = values
    if not out:
        raise ConfigError(f"the suite result has no '{task}' scores; run it with --task {task}")
    return out


def _baseline_of(setting: tuple, settings: Sequence[tuple], baseline: tuple[str, str] | None) -> tuple | None:
    axes = dict(setting)
    if baseline is None:
        if axes.get("intermediate") == NONE:
            return None
        return next((other for other in settings if dict(other).get("intermediate") == NONE), None)
    axis, value = baseline
    if axes.get(axis) == value:
        return None
    for other in settings:
        theirs = dict(other)
        if theirs.get(axis) == value and all(theirs.get(k) == v for k, v in axes.items() if k != axis):
            return other
    return None


def suite_summary(suite: Mapping, task: str, *, groups: Mapping[str, Sequence[str]] | None = None,
                  baseline: tuple[str, str] | None = None) -> pd.DataFrame:
    """The rows described in the module docstring, in summary.csv's columns."""
    scores = per_seed_scores(suite, task, groups or {})
    settings = list(scores)
    rows = []
    for setting in settings:
        reference = _baseline_of(setting, settings, baseline)
        seeds = sorted(scores[setting], key=int)
        for language in scores[setting][seeds[0]]:
            own = [scores[setting][seed].get(language, np.nan) for seed in seeds]
            paired = [scores[setting][s][language] - scores[reference][s][language] for s in seeds
                      if reference is not None and s in scores[reference] and language in scores[reference][s]]
            is_difference = language.endswith(" - rest")
            rows.append({
                **dict(setting), "setting": ",".join(v for _, v in setting), "task": task, "language": language,
                "score": np.nan if is_difference else float(np.mean(own)),
                "std": np.nan if is_difference or len(own) < 2 else float(np.std(own, ddof=1)),
                "seeds": len(own),
                "delta": float(np.mean(paired)) if paired else np.nan,
                "low": np.nan, "high": np.nan, "significant": False, "paired_seeds": len(paired),
            })  # fmt: skip
    return pd.DataFrame.from_records(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastxlt.reports.suite_summary", description=__doc__.splitlines()[0])
    parser.add_argument("suite_json", type=Path, help="the suite's xtreme-r.json, run over a grid")
    parser.add_argument("output", type=Path, help="the CSV to write (summary.csv's columns)")
    parser.add_argument("--task", required=True, help="the suite task to tabulate (e.g. tatoeba)")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=LANG,...")
    parser.add_argument("--baseline", metavar="AXIS=VALUE", help="default: the no-intermediate column")
    args = parser.parse_args(argv)
    try:
        groups, baseline = parse_groups(args.group), parse_baseline(args.baseline)
        suite = json.loads(args.suite_json.read_text(encoding="utf-8"))
        frame = suite_summary(suite, args.task, groups=groups, baseline=baseline)
    except (ConfigError, OSError, json.JSONDecodeError) as error:
        print(f"suite_summary: {error}", file=sys.stderr)
        return 2
    frame.to_csv(args.output, index=False)
    print(f"wrote {args.output} ({len(frame)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
