"""``fastxlt-eval --retrieval tatoeba|bucc|lareqa|mewsli-x``: evaluate any encoder on sentence retrieval.

    fastxlt-eval --retrieval tatoeba --model M [--data DIR] [--languages de,fr,...|all] [--layer L]
                 [--pooling mean|cls] [--protocol NAME] [--output DIR] [--batch-tokens N]
    fastxlt-eval --retrieval lareqa --model M --data DIR [--max-questions N] [--candidate-format pair|concat]
    fastxlt-eval --retrieval mewsli-x --model M --data DIR [--split dev|test]

LAReQA and Mewsli-X (XTREME-R, mAP@20) are dual-encoder tasks: they read local files only, the last
hidden layer and mean pooling unless ``--layer`` / ``--pooling`` say otherwise, and ignore ``--protocol``
(``fastxlt.retrieval.lareqa``, ``fastxlt.retrieval.mewsli``).

The model is loaded once and every language runs through it; a per-language table is printed and
the scores are written as JSON (atomically) into the output directory. ``python -m fastxlt.cli.retrieval``
(``python -m fastxlt.retrieval.cli`` before the command lines moved into ``fastxlt/cli/``) is the same command. ``fastxlt.cli`` adds these
options to its own ``fastxlt-eval`` parser with ``add_retrieval_arguments`` and calls ``run_retrieval``.

Building the parser imports no torch or transformers (``--help`` stays fast): the options live in
``fastxlt.cli.retrieval_options``, which the command lines import; this module, which runs the tasks, is
imported only when one runs.
Every entry point embeds sentences of at most ``RETRIEVAL_MAX_LENGTH`` tokens unless ``--max-length``
says otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from functools import partial
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastxlt.cli.retrieval_options import TASKS, add_retrieval_arguments, build_parser  # noqa: F401 (this command's parser)
from fastxlt.errors import ConfigError, DataNotFoundError, FastXLTError
from fastxlt.retrieval.bucc import evaluate_bucc, locate_bucc
from fastxlt.retrieval.dual_encoder import load_dual_encoder
from fastxlt.retrieval.embed import load_sentence_encoder
from fastxlt.retrieval.languages import BUCC_DEFAULT, TATOEBA_DEFAULT, split_languages
from fastxlt.retrieval.lareqa import evaluate_lareqa, locate_xquad_r
from fastxlt.retrieval.mewsli import evaluate_mewsli, locate_mewsli
from fastxlt.retrieval.options import DUAL_ENCODER_TASKS, RETRIEVAL_MAX_LENGTH
from fastxlt.retrieval.protocols import RetrievalProtocol, get_protocol
from fastxlt.retrieval.tatoeba import locate_tatoeba, read_tatoeba, tatoeba_accuracy
from fastxlt.utils.io import write_json_atomic
from fastxlt.utils.run_layout import default_output_dir

if TYPE_CHECKING:
    from fastxlt.retrieval.embed import TorchSentenceEncoder

DUAL_ENCODER_MAX_LENGTH = 256  # evaluate_lareqa / evaluate_mewsli's default (a LAReQA candidate is a whole paragraph)


# ----------------------------------------------------------------------------------------------
# Running


def run_retrieval(args: argparse.Namespace) -> dict:
    """Evaluate ``args.model`` on ``args.retrieval``; print the table, write the JSON, return the scores."""
    from tqdm.auto import tqdm

    task = getattr(args, "retrieval", None)
    if task not in TASKS:
        raise ConfigError(f"unknown retrieval task '{task}'; choose {' or '.join(TASKS)}")
    if not getattr(args, "model", None):
        raise ConfigError("--retrieval needs --model (a hub name, a Hugging Face directory or a fastxlt run)")
    if task in DUAL_ENCODER_TASKS:
        return run_dual_encoder_task(args)
    protocol = get_protocol(getattr(args, "protocol", None) or "xtreme").with_overrides(
        layer=getattr(args, "layer", None), pooling=getattr(args, "pooling", None)
    )
    data_dir = Path(args.data) if getattr(args, "data", None) else None
    default = TATOEBA_DEFAULT if task == "tatoeba" else BUCC_DEFAULT
    locate = locate_tatoeba if task == "tatoeba" else locate_bucc
    sources = [locate(code, data_dir) for code in split_languages(getattr(args, "languages", None), default)]
    encoder = _load_encoder(args, protocol)
    per_language = {}
    for source in tqdm(sources, desc=f"{task} languages", unit="lang"):
        per_language[source.language] = _evaluate_one(task, source, encoder, protocol, args)
    result = _summary(task, args, protocol, encoder, per_language)
    result["output_file"] = str(_write(result, args, protocol, encoder.layer))
    print(format_table(result))
    return result


def run_dual_encoder_task(args: argparse.Namespace) -> dict:
    """LAReQA or Mewsli-X (XTREME-R, mAP@20): check the data, load the encoder once, score, print, write JSON."""
    task, data = args.retrieval, getattr(args, "data", None)
    if not data:
        raise ConfigError(f"--retrieval {task} reads local files only; pass --data DIR "
                          f"({'xquad-r/XX.json from LAReQA' if task == 'lareqa' else 'XTREME-R download_data.sh mewslix/'})")
    if (getattr(args, "backend", None) or "torch") != "torch":
        raise ConfigError(f"--retrieval {task} embeds with the torch backend only (LAReQA encodes text pairs); drop --backend")
    languages = None if getattr(args, "languages", None) in (None, "", "all") else split_languages(args.languages, ())
    if task == "lareqa":
        _refuse_skipped(task, languages, locate_xquad_r(data, languages)[1])
        max_questions = getattr(args, "max_questions", None)
        if max_questions is not None and max_questions < 1:
            raise ConfigError(f"--max-questions must be a positive number, got {max_questions}; leave it out to score all")
        run = partial(evaluate_lareqa, data_dir=data, languages=languages, max_questions=max_questions,
                      candidate_format=getattr(args, "candidate_format", None) or "pair")
    else:
        split = getattr(args, "split", None) or "test"
        _refuse_skipped(task, languages, locate_mewsli(data, languages, split=split)[1])
        run = partial(evaluate_mewsli, data_dir=data, languages=languages, split=split)
    encoder = _load_dual_encoder(args)
    result = run(encoder)
    result["details"]["model"] = str(args.model)
    result["output_file"] = str(_write_dual_encoder_result(result, args))
    print(format_dual_encoder_table(result))
    return result


def _refuse_skipped(task: str, languages: list[str] | None, skipped: dict[str, str]) -> None:
    """Languages the user named but the data lacks: one line, before any model is loaded ("all" skips them)."""
    named = {lang: why for lang, why in skipped.items() if languages is not None and lang in languages}
    if named:
        lang, why = next(iter(named.items()))
        raise DataNotFoundError(f"--retrieval {task} --languages {lang}: {why}; drop it or pass --languages all")


def _load_dual_encoder(args: argparse.Namespace):
    max_length = getattr(args, "max_length", None)
    if max_length is not None and max_length < 1:
        raise ConfigError(f"--max-length must be a positive number of tokens, got {max_length}")
    return load_dual_encoder(
        args.model, max_length=max_length or DUAL_ENCODER_MAX_LENGTH, pooling=getattr(args, "pooling", None) or "mean",
        layer=getattr(args, "layer", None), device=getattr(args, "device", None),
        batch_tokens=getattr(args, "batch_tokens", None), precision=getattr(args, "precision", None) or "fp32",
    )


def _write_dual_encoder_result(result: dict, args: argparse.Namespace) -> Path:
    details = result["details"]
    output = Path(args.output) if getattr(args, "output", None) else default_output_dir(str(args.model))
    name = f"{result['task']}-layer{details['layer']}-{details['pooling']}"
    if result["task"] == "lareqa":
        name += f"-{details['candidate_format']}" + (f"-q{details['max_questions']}" if details["max_questions"] else "")
    else:
        name += f"-{details['split']}"
    return write_json_atomic(output / f"{name}.json", result)


def format_dual_encoder_table(result: dict) -> str:
    """Per-language mAP@20, the mean, and what was skipped."""
    details = result["details"]
    header = (f"{result['task']}  model={details['model']}  layer={details['layer']}/{details['num_layers']}  "
              f"pooling={details['pooling']}  candidates={details['candidates']}")
    count = "questions" if result["task"] == "lareqa" else "mentions"
    lines = [f"{'language':<10}{result['metric']:>10}{count:>11}"]
    lines += [f"{lang:<10}{score:>10.2f}{details[count].get(lang, 0):>11}" for lang, score in result["languages"].items()]
    lines.append(f"{'mean':<10}{_num(result['score']):>10}")
    lines += [f"skipped {lang}: {why}" for lang, why in result["skipped"].items()]
    return "\n".join([header, *lines, f"scores written to {result.get('output_file', '-')}"])


def _load_encoder(args: argparse.Namespace, protocol: RetrievalProtocol) -> TorchSentenceEncoder:
    max_length = getattr(args, "max_length", None)
    if max_length is not None and max_length < 1:
        raise ConfigError(f"--max-length must be a positive number of tokens, got {max_length}; "
                          f"leave it out for the retrieval default ({RETRIEVAL_MAX_LENGTH})")
    return load_sentence_encoder(
        args.model,
        backend=getattr(args, "backend", None) or "torch",
        layer=protocol.layer,
        pooling=protocol.pooling,
        batch_tokens=getattr(args, "batch_tokens", None),
        max_length=max_length,  # None: RETRIEVAL_MAX_LENGTH, capped by the model's positions
        precision=getattr(args, "precision", None) or "fp32",
        device=getattr(args, "device", None),
    )


def _evaluate_one(task: str, source, encoder: TorchSentenceEncoder, protocol: RetrievalProtocol, args) -> dict:
    precision = getattr(args, "search_precision", None) or "fp32"
    backend = getattr(args, "search", None) or "torch"
    if task == "bucc":
        return evaluate_bucc(
            source, encoder, k=protocol.k, margin=protocol.margin, precision=precision, backend=backend,
            drop_duplicates=bool(getattr(args, "bucc_drop_duplicates", False)),
        )
    pair = read_tatoeba(source)
    accuracy = tatoeba_accuracy(
        encoder.encode(pair.source),
        encoder.encode(pair.english),
        pair.gold,
        scoring=protocol.tatoeba_scoring,
        direction=getattr(args, "direction", None) or "xx-en",
        k=protocol.k,
        margin=protocol.margin,
        backend=backend,
    )
    return {"accuracy": accuracy, "sentences": len(pair.source), "layout": pair.layout}


def _summary(task: str, args, protocol: RetrievalProtocol, encoder: TorchSentenceEncoder, per_language: dict) -> dict:
    metric = "accuracy" if task == "tatoeba" else "f1"
    values = [scores[metric] for scores in per_language.values() if scores.get(metric) is not None]
    return {
        "task": task,
        "model": str(args.model),
        "protocol": protocol.name,
        "layer": encoder.layer,
        "num_layers": encoder.num_layers,
        "pooling": encoder.pooling,
        "scoring": protocol.tatoeba_scoring if task == "tatoeba" else f"{protocol.margin} margin, k={protocol.k}, max",
        "direction": (getattr(args, "direction", None) or "xx-en") if task == "tatoeba" else "xx-en",
        "metric": metric,
        "languages": per_language,
        "mean": float(statistics.fmean(values)) if values else None,
    }


def _write(result: dict, args, protocol: RetrievalProtocol, layer: int) -> Path:
    output = Path(args.output) if getattr(args, "output", None) else default_output_dir(str(args.model))
    name = f"{result['task']}-{protocol.name}-layer{layer}-{result['pooling']}"
    if result["task"] == "tatoeba" and result["direction"] != "xx-en":
        name += f"-{result['direction']}"

    return write_json_atomic(output / f"{name}.json", result)


def format_table(result: dict) -> str:
    """Plain per-language table (readable in logs and CI output alike)."""
    header = (
        f"{result['task']}  model={result['model']}  protocol={result['protocol']}  "
        f"layer={result['layer']}/{result['num_layers']}  pooling={result['pooling']}  scoring={result['scoring']}"
    )
    if result["task"] == "tatoeba":
        lines = [f"{'language':<10}{'accuracy':>10}{'sentences':>11}"]
        lines += [f"{lang:<10}{s['accuracy']:>10.2f}{s['sentences']:>11}" for lang, s in result["languages"].items()]
    else:
        lines = [f"{'language':<10}{'F1':>8}{'P':>8}{'R':>8}{'dev F1':>8}{'threshold':>11}{'mined':>8}"]
        lines += [
            f"{lang:<10}{_num(s['f1']):>8}{_num(s['precision']):>8}{_num(s['recall']):>8}{_num(s['dev_f1']):>8}"
            f"{s['threshold']:>11.4f}{s['predicted']:>8}"
            for lang, s in result["languages"].items()
        ]
    mean = _num(result["mean"])
    lines.append(f"{'mean':<10}{mean:>10}")
    return "\n".join([header, *lines, f"scores written to {result.get('output_file', '-')}"])


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ----------------------------------------------------------------------------------------------
# python -m fastxlt.cli.retrieval


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if not args.retrieval:
        print(f"fastxlt-eval: error: pass --retrieval {'|'.join(TASKS)}", file=sys.stderr)
        return 2
    try:
        run_retrieval(args)
    except FastXLTError as error:
        print(f"fastxlt-eval: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
