"""Reports built from run directories alone: a tidy results.csv, seeds and paired-bootstrap intervals,
tables in report.md and PNG figures (``fastxlt.reports.build.build_report``); and the tables printed on the
terminal: a run's results (``run_tables``), a grid's (``grid_table``), ``fastxlt-eval --perturb``'s
(``perturbation_table``).

The package imports nothing itself: a terminal table (rich) does not load pandas and matplotlib, which
the report builder needs, so ``fastxlt-eval`` and a single ``fastxlt run`` print their tables without them.
"""
