"""Scores in the CSV files rounded to their metric's precision: 57.6, not 57.599999999999994.

Only what is written is rounded; means, deltas and bootstrap intervals are computed from the full floats
first, so rounding never moves a table's number or a significance mark.
"""

from __future__ import annotations

import pandas as pd

from fastxlt.errors import ConfigError
from fastxlt.tasks.metrics import get_metric

DEFAULT_DECIMALS = 2  # rows whose metric is not a registered one (the XTREME mean of task scores)
SCORE_COLUMNS = ("score", "std", "delta", "low", "high")  # in the row's metric
DEV_COLUMNS = ("dev_score", "majority_share")  # English dev scores and answer shares, in percent


def metric_decimals(name: object) -> int:
    """The decimals a report keeps for a metric (``Metric.decimals``), the default for anything else."""
    try:
        return get_metric(str(name)).decimals
    except ConfigError:
        return DEFAULT_DECIMALS


def round_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every score column rounded, row by row, to its metric's decimals."""
    out = frame.copy()
    decimals = out["metric"].map(metric_decimals) if "metric" in out else pd.Series(DEFAULT_DECIMALS, index=out.index)
    for column in SCORE_COLUMNS:
        if column in out and pd.api.types.is_numeric_dtype(out[column]):
            out[column] = [_round(value, places) for value, places in zip(out[column], decimals)]
    for column in DEV_COLUMNS:
        if column in out and pd.api.types.is_numeric_dtype(out[column]):
            out[column] = [_round(value, DEFAULT_DECIMALS) for value in out[column]]
    return out


def _round(value: float, places: int) -> float:
    return value if pd.isna(value) else round(float(value), int(places))
