"""Reports built from run directories alone: a tidy results.csv, seeds and paired-bootstrap intervals,
tables in report.md and PNG figures (``build_report``); and the tables printed on the terminal: a run's
results (``run_tables``), a grid's (``grid_table``), ``fastxlt-eval --perturb``'s (``perturbation_table``)."""

from fastxlt.reports.build import build_report

__all__ = ["build_report"]
