"""Tagging metric speed: fastxlt's ``seqeval_f1`` against the ``seqeval`` library (what XTREME calls).

    python -m benchmarks.seqeval_metric [--quick] [--data DIR] [--repeat N]

For every UD test file (UD-POS) and PAN-X dev file (NER) in DIR (default ../shared/data), the gold tags
are perturbed with a fixed seed (20% of the words get a random tag of the file) and scored with
``seqeval.metrics`` (precision, recall and F1: three calls, as an evaluation script makes them) and with
``fastxlt.tasks.seqeval_metric.seqeval_scores`` (one call returning all three). Each method runs
``--repeat`` times (default 3) and keeps its fastest run: the machine is shared. ``identical`` says
whether all three numbers are equal to the last bit. ``--quick`` scores 3 languages of each task.

A table on the terminal, one CSV row per (task, language, method) in ``benchmarks/results/seqeval_metric.csv``,
and a last line ``RESULT speedup=... identical=true|false ...`` (speedup over the summed times).
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as a file: the repository root replaces this folder at the head of sys.path, where a
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # file named like an installed package would shadow it

from benchmarks._results import SMOKE_HELP, append_rows, machine, results_path, skip  # noqa: E402

from fastxlt.tasks.base import get_task  # noqa: E402
from fastxlt.tasks.seqeval_metric import seqeval_scores  # noqa: E402

RESULTS = results_path("seqeval_metric.csv")
QUICK = {"udpos": ("en", "ja", "yo"), "panx": ("en", "ja", "yo")}


def environment() -> dict:
    import seqeval

    return {**machine(), "numpy": np.__version__, "seqeval": getattr(seqeval, "__version__", "1.2.2")}


def files(data: Path, quick: bool) -> list[tuple[str, str, str, Path]]:
    """(task, split, language, folder) for every labelled file present."""
    found = []
    ud = sorted({p.name.split("_")[0] for p in (data / "ud").glob("UD_*/*-ud-test.conllu")})
    panx = sorted(p.stem.split("-")[1] for p in (data / "panx" / "xtreme_format").glob("dev-*.tsv"))
    for task, split, languages, folder in (("udpos", "test", ud, data / "ud"), ("panx", "validation", panx, data / "panx")):
        for language in languages:
            if not quick or language in QUICK[task]:
                found.append((task, split, language, folder))
    return found


def perturb(sentences: list[list[str]], seed: int = 0, rate: float = 0.2) -> list[list[str]]:
    rng = random.Random(seed)
    names = sorted({tag for sentence in sentences for tag in sentence})
    return [[rng.choice(names) if rng.random() < rate else tag for tag in sentence] for sentence in sentences]


def library(gold, predicted) -> tuple[float, float, float]:
    from seqeval.metrics import f1_score, precision_score, recall_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "NOUN seems not to be NE tag" for every POS tag
        return float(f1_score(gold, predicted)), float(precision_score(gold, predicted)), float(recall_score(gold, predicted))


def ours(gold, predicted) -> tuple[float, float, float]:
    scores = seqeval_scores(gold, predicted)
    return scores["f1"], scores["precision"], scores["recall"]


def fastest(function, repeat: int, *args):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 languages per task instead of every file")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder with ud/ and panx/")
    parser.add_argument("--model", help="unused (the metric needs no model); accepted for the common benchmark interface")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method, fastest kept")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    cases = files(args.data, args.quick or args.smoke)
    if args.smoke:  # one English file per task, one run
        cases, args.repeat = [case for case in cases if case[2] == "en"], 1
        if not cases:
            return skip(f"no English UD / PAN-X files under {args.data}")
    if not cases:
        print(f"no UD / PAN-X files under {args.data}; pass --data DIR")
        return 2
    env = environment()
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    rows, totals, all_identical = [], {"seqeval": 0.0, "fastxlt": 0.0}, True
    print(f"seqeval F1 on perturbed gold tags ({env['device']}, load average {env['load_1min']}; fastest of {args.repeat})")
    print(f"{'task':<7}{'lang':<6}{'words':>9}{'seqeval s':>11}{'fastxlt s':>11}{'speedup':>9}{'identical':>11}{'f1':>10}")
    for task, split, language, folder in cases:
        gold = [list(e.tags) for e in get_task(task).load(split, language, folder)]
        predicted = perturb(gold)
        ref_s, ref = fastest(library, args.repeat, gold, predicted)
        our_s, mine = fastest(ours, args.repeat, gold, predicted)
        identical = ref == mine
        all_identical &= identical
        totals["seqeval"] += ref_s
        totals["fastxlt"] += our_s
        words = sum(map(len, gold))
        print(f"{task:<7}{language:<6}{words:>9}{ref_s:>11.4f}{our_s:>11.4f}{ref_s / our_s:>9.1f}{str(identical).lower():>11}"
              f"{100 * mine[0]:>10.4f}")  # fmt: skip
        case = f"{task} {split} {language} ({words} words)"
        for method, seconds in (("seqeval f1+precision+recall", ref_s), ("fastxlt seqeval_scores", our_s)):
            rows.append({"time": stamp, "benchmark": "seqeval_metric", "case": case, "method": method,
                         "seconds": f"{seconds:.5f}", "speedup": f"{ref_s / seconds:.2f}", "identical": identical,
                         "value": f"{mine[0]:.17g}", **env})  # fmt: skip
    speedup = totals["seqeval"] / totals["fastxlt"]
    print(f"total: seqeval {totals['seqeval']:.2f} s, fastxlt {totals['fastxlt']:.2f} s, {speedup:.1f}x")
    append_rows(RESULTS, list(rows[0]), rows)
    print(f"RESULT speedup={speedup:.2f} identical={str(all_identical).lower()} files={len(cases)} "
          f"seqeval_s={totals['seqeval']:.3f} fastxlt_s={totals['fastxlt']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
