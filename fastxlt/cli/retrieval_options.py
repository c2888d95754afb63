"""The ``fastxlt-eval --retrieval`` options: what ``fastxlt --help`` and ``fastxlt-eval --help`` add to their parsers.

Why a module apart from :mod:`fastxlt.cli.retrieval` (which runs the tasks): building a parser must not load
torch, so this module imports only the option value sets (:mod:`fastxlt.retrieval.options`) and the protocol presets
(:mod:`fastxlt.retrieval.protocols`), and the command lines import it, not the runner, to print their help.
"""

from __future__ import annotations

import argparse

from fastxlt.retrieval.options import (
    CANDIDATE_FORMATS,
    DIRECTIONS,
    ENCODER_PRECISIONS,
    POOLINGS,
    RETRIEVAL_TASKS,
    SEARCH_BACKENDS,
    SEARCH_PRECISIONS,
)
from fastxlt.retrieval.protocols import ALIASES, PROTOCOLS

TASKS = RETRIEVAL_TASKS


def add_retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the retrieval options; options the parser already has (--model, --data...) are kept as they are."""
    add = _adder(parser)
    add("--retrieval", choices=TASKS, help="run a retrieval task on the encoder (no fine-tuning)")
    add("--model", "-m", help="encoder: hub name, Hugging Face directory or fastxlt run")
    add("--data", help="directory of local files (LASER / XTREME / BUCC / hub parquet layout; default: the hub)")
    add("--languages", "-l", default="all", help="'all' or comma-separated ISO 639-1 or LASER codes (de,fr or deu,fra)")
    add(
        "--output",
        "-o",
        help="directory for the JSON scores (default: <model>/eval, or runs/eval/<name> for a hub name)",
    )
    add("--batch-tokens", type=int, help="token budget of a padded batch (default: 2048 on a CPU, 16384 on a GPU)")
    add("--layer", type=int, help="hidden state to pool (0 = embeddings, -1 = last; default: the protocol's, "
        "the last for lareqa and mewsli-x)")
    add("--pooling", choices=POOLINGS, help="token pooling (default: the protocol's)")
    names = sorted(PROTOCOLS) + sorted(ALIASES)
    add(
        "--protocol",
        default="xtreme",
        choices=names,
        help="named preset: " + "; ".join(f"{p.name}: {p.description}" for p in PROTOCOLS.values()),
    )
    add("--direction", default="xx-en", choices=DIRECTIONS, help="Tatoeba: query with xx (XTREME) or with English")
    add(
        "--precision",
        default="fp32",
        choices=ENCODER_PRECISIONS,
        help="encoder precision: fp32 (exact), bf16, or auto (bf16 on an AMX CPU or a bf16 GPU, else fp32)",
    )
    add(
        "--search", default="torch", choices=SEARCH_BACKENDS, help="kNN backend: torch (one pass for both directions) or faiss"
    )
    add(
        "--search-precision",
        default="fp32",
        choices=SEARCH_PRECISIONS,
        help="kNN products: fp32 (exact) or bf16/int8/auto candidates re-scored in fp32",
    )
    add("--device", help="torch device (default: cuda when available, else cpu)")
    add("--max-questions", type=int, help="LAReQA: score the first N questions of each language (the pool stays whole)")
    add(
        "--candidate-format",
        default="pair",
        choices=CANDIDATE_FORMATS,
        help="LAReQA: encode a candidate as (sentence, paragraph) pair (XTREME-R's training input) or sentence+paragraph "
        "as one text (its evaluation script)",
    )
    add("--split", default="test", help="Mewsli-X: the WikiNews split to score, dev or test (default test)")
    add(
        "--bucc-drop-duplicates",
        action="store_true",
        help="BUCC: drop a sentence that occurs under several ids on one side, as XTREME's evaluation does "
        "(default: mine it once and credit every id that carries it)",
    )


def _adder(parser: argparse.ArgumentParser):
    def add(*flags: str, **kwargs) -> None:
        if not any(flag in parser._option_string_actions for flag in flags):
            parser.add_argument(*flags, **kwargs)

    return add


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastxlt-eval --retrieval", description="sentence retrieval: Tatoeba, BUCC 2018, LAReQA and Mewsli-X"
    )
    add_retrieval_arguments(parser)
    parser.add_argument("--max-length", type=int, default=None, help="truncate sentences to this many tokens")
    return parser
