"""Reports built from run directories alone: a tidy results.csv, seeds and paired-bootstrap intervals,
tables in report.md and PNG figures (``build_report``)."""

from fastxlt.reports.build import build_report

__all__ = ["build_report"]
