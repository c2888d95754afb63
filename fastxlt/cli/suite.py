"""``fastxlt-eval --suite xtreme-r``: the command line's reading of its options; the suite itself is
``fastxlt.experiments.xtreme_r`` (what it scores, how, and the XTREME-R score), which takes typed options."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastxlt.errors import ConfigError
from fastxlt.experiments.xtreme_r import SUITE, SuiteOptions, format_suite, run_suite
from fastxlt.retrieval.languages import split_languages
from fastxlt.utils.run_layout import default_output_dir


def run_suite_cli(args: argparse.Namespace) -> dict:
    """``fastxlt-eval --suite xtreme-r --model M --data-root DIR [--max-examples N] [--task tatoeba,...] [--output DIR]``."""
    if getattr(args, "suite", None) != SUITE:
        raise ConfigError(f"unknown suite '{args.suite}'; the one suite is {SUITE}")
    if not getattr(args, "model", None):
        raise ConfigError("--suite xtreme-r needs --model (a run, grid or phase directory, or any encoder)")
    data_root = getattr(args, "data_root", None) or getattr(args, "data", None)
    if not data_root:
        raise ConfigError("--suite xtreme-r reads local files: pass --data-root DIR (the folder holding xnli/, ud/, "
                          "panx/, xquad/, tatoeba/, xquad_r/ ...; e.g. ../shared/data)")
    chosen = split_languages(getattr(args, "languages", None), ())
    options = SuiteOptions(
        max_examples=getattr(args, "max_examples", None), max_length=getattr(args, "max_length", None),
        batch_tokens=getattr(args, "batch_tokens", None), precision=getattr(args, "precision", None) or "fp32",
        layer=getattr(args, "layer", None), pooling=getattr(args, "pooling", None),
        languages=tuple(chosen) if chosen else None,
        tasks=tuple(key.strip() for key in args.task.split(",") if key.strip()) if getattr(args, "task", None) else None,
    )  # fmt: skip
    output = Path(args.output) if getattr(args, "output", None) else default_output_dir(str(args.model)) / SUITE
    result = run_suite(args.model, data_root, output, options)
    print(format_suite(result))
    return result
