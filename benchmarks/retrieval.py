"""BUCC mining speed: fastxlt's one-pass two-way kNN against the BUCC scripts' pipeline.

    python -m benchmarks.retrieval [--quick] [--data DIR] [--model DIR] [--repeat N]

Mining (kNN k=4 both ways + ratio margin + "max" retrieval) on the same synthetic, L2-normalised
embeddings (100k x 100k, d=384; --quick: 20k x 20k), with planted parallel pairs among random
sentences:

* reference: the pipeline of the BUCC scripts (LASER / XTREME): a FAISS ``IndexFlatIP`` search in
  each direction, then every kNN candidate scored in a Python double loop from recomputed dot
  products, then "max" retrieval;
* fastxlt: ``fastxlt.retrieval.bucc.mine_embeddings`` with the products in fp32 (exact), int8
  (AVX-512 VNNI) and bf16 (AMX), the reduced precisions choosing candidates that fp32 re-scores.

Each method runs ``--repeat`` times, interleaved (3 with ``--quick``, else 1), and keeps its fastest
run: the machine is shared. The mined pairs must be identical to the reference's. ``speedup=`` is the fastest precision whose
pairs are identical (named by ``precision=``); each precision's own speedup follows.

With ``--model DIR --data DIR`` it also evaluates the encoder on the 36 XTREME Tatoeba languages in
DIR, at the paper's layer and at the last layer (one forward pass for both).

A table on the terminal, one CSV row per measurement in ``benchmarks/results/retrieval.csv``, and a
last line ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

if not __package__:  # run as a file: the repository root replaces this folder at the head of sys.path, where a
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # file named like an installed package would shadow it

from benchmarks._results import SMOKE_HELP, append_rows, machine, results_path  # noqa: E402

from fastxlt.retrieval.bucc import mine_embeddings  # noqa: E402
from fastxlt.retrieval.margin import MinedPairs  # noqa: E402
from fastxlt.retrieval.search import resolve_precision  # noqa: E402
from fastxlt.utils.hardware import cpu_has_amx, cpu_has_vnni  # noqa: E402

RESULTS = results_path("retrieval.csv")
K = 4


def synthetic_embeddings(n: int, dim: int, planted: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors, with a fraction of y being noisy copies of x (the planted translations)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    y = rng.standard_normal((n, dim), dtype=np.float32)
    n_planted = int(planted * n)
    source, target = rng.permutation(n)[:n_planted], rng.permutation(n)[:n_planted]
    y[target] = x[source] + 0.8 * rng.standard_normal((n_planted, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x, y


# ----------------------------------------------------------------------------------------------
# The reference pipeline (BUCC scripts), written out plainly


def reference_mine(x: np.ndarray, y: np.ndarray, timings: dict) -> MinedPairs:
    start = time.perf_counter()
    x2y_sim, x2y_ind = _faiss_knn(x, y, K)
    y2x_sim, y2x_ind = _faiss_knn(y, x, K)
    _keep_min(timings, "reference_search", time.perf_counter() - start)
    start = time.perf_counter()
    x2y_mean, y2x_mean = x2y_sim.mean(axis=1), y2x_sim.mean(axis=1)
    fwd_scores = _score_candidates_loop(x, y, x2y_ind, x2y_mean, y2x_mean)
    bwd_scores = _score_candidates_loop(y, x, y2x_ind, y2x_mean, x2y_mean)
    fwd_best = x2y_ind[np.arange(len(x)), fwd_scores.argmax(axis=1)]
    bwd_best = y2x_ind[np.arange(len(y)), bwd_scores.argmax(axis=1)]
    indices = np.stack(
        [np.concatenate([np.arange(len(x)), bwd_best]), np.concatenate([fwd_best, np.arange(len(y))])], axis=1
    )
    scores = np.concatenate([fwd_scores.max(axis=1), bwd_scores.max(axis=1)])
    seen_source, seen_target, kept = set(), set(), []
    for i in np.argsort(-scores, kind="stable"):
        source, target = indices[i]
        if source not in seen_source and target not in seen_target:
            seen_source.add(source)
            seen_target.add(target)
            kept.append(i)
    _keep_min(timings, "reference_loop", time.perf_counter() - start)
    return MinedPairs(source=indices[kept, 0], target=indices[kept, 1], score=scores[kept])


def _faiss_knn(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    return index.search(queries, k)


def _score_candidates_loop(x, y, candidates, fwd_mean, bwd_mean) -> np.ndarray:
    scores = np.zeros(candidates.shape)
    for i in range(candidates.shape[0]):
        for j in range(candidates.shape[1]):
            other = candidates[i, j]
            scores[i, j] = x[i].dot(y[other]) / ((fwd_mean[i] + bwd_mean[other]) / 2)
    return scores


# ----------------------------------------------------------------------------------------------


def _keep_min(timings: dict, key: str, seconds: float) -> None:
    timings[key] = min(seconds, timings.get(key, float("inf")))


def pair_set(mined: MinedPairs) -> set[tuple[int, int]]:
    return set(zip(mined.source.tolist(), mined.target.tolist()))


def environment() -> dict:
    return {
        **machine(),
        "threads": torch.get_num_threads(),
        "amx": cpu_has_amx(),
        "vnni": cpu_has_vnni(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
    }


def write_rows(rows: list[dict]) -> None:
    fields = ["time", "benchmark", "case", "method", "seconds", "speedup", "identical", "value"] + list(environment())
    append_rows(RESULTS, fields, rows)


PRECISIONS = ("fp32", "int8", "bf16")


def bench_mining(n: int, dim: int, repeat: int) -> tuple[list[dict], dict]:
    """Each method ``repeat`` times, interleaved, keeping each one's fastest run: the machine is
    shared, and interleaving exposes every method to the same background load."""
    x, y = synthetic_embeddings(n, dim, planted=0.2)
    timings: dict = {}
    mined, identical = {}, {}
    for _ in range(repeat):
        start = time.perf_counter()
        reference = reference_mine(x, y, timings)
        _keep_min(timings, "reference", time.perf_counter() - start)
        for precision in PRECISIONS:
            start = time.perf_counter()
            mined[precision] = mine_embeddings(x, y, k=K, precision=precision)
            _keep_min(timings, precision, time.perf_counter() - start)
            identical[precision] = identical.get(precision, True) and pair_set(mined[precision]) == pair_set(reference)
    speedup = {precision: timings["reference"] / timings[precision] for precision in PRECISIONS}
    exact_and_fastest = max((p for p in PRECISIONS if identical[p]), key=lambda p: speedup[p], default="fp32")
    summary = {
        "n": n,
        "timings": timings,
        "speedup": speedup,
        "identical": identical,
        "best": exact_and_fastest,
        "auto": resolve_precision("auto", torch.device("cpu")),
        "max_score_diff": float(np.abs(np.sort(reference.score) - np.sort(mined["fp32"].score)).max()),
        "pairs": len(mined["fp32"]),
    }
    case = f"mine {n}x{n} d={dim} k={K}"
    env, now = environment(), datetime.datetime.now().isoformat(timespec="seconds")
    rows = [
        {
            "time": now,
            "benchmark": "retrieval",
            "case": case,
            "method": "reference faiss x2 + python loop",
            "seconds": f"{timings['reference']:.3f}",
            "speedup": "1.00",
            "identical": True,
            **env,
        }
    ]
    rows += [
        {
            "time": now,
            "benchmark": "retrieval",
            "case": case,
            "method": f"fastxlt one pass {precision}",
            "seconds": f"{timings[precision]:.3f}",
            "speedup": f"{speedup[precision]:.2f}",
            "identical": identical[precision],
            **env,
        }
        for precision in PRECISIONS
    ]
    return rows, summary


def bench_tatoeba(model: str, data: Path) -> tuple[list[dict], dict]:
    """Tatoeba accuracy (xx -> en) per language at the paper's layer and the last, cosine and margin."""
    from fastxlt.retrieval.embed import TorchSentenceEncoder, default_layer
    from fastxlt.retrieval.languages import TATOEBA_DEFAULT
    from fastxlt.retrieval.tatoeba import locate_tatoeba, read_tatoeba, tatoeba_accuracy

    encoder = TorchSentenceEncoder.from_pretrained(model)
    layers = [default_layer(encoder.num_layers), encoder.num_layers]
    settings = [(layer, scoring) for layer in layers for scoring in ("cosine", "margin")]
    accuracy: dict[tuple[int, str], dict[str, float]] = {setting: {} for setting in settings}
    print(f"  {'lang':<6}" + "".join(f"{f'L{layer} {scoring}':>14}" for layer, scoring in settings))
    start = time.perf_counter()
    for code in TATOEBA_DEFAULT:
        pair = read_tatoeba(locate_tatoeba(code, data))
        source = encoder.encode_layers(pair.source, layers)
        english = encoder.encode_layers(pair.english, layers)
        for layer, scoring in settings:
            value = tatoeba_accuracy(source[layer], english[layer], pair.gold, scoring=scoring)
            accuracy[(layer, scoring)][pair.language] = value
        print(f"  {pair.language:<6}" + "".join(f"{accuracy[s][pair.language]:>14.2f}" for s in settings), flush=True)
    elapsed = time.perf_counter() - start
    env, now = environment(), datetime.datetime.now().isoformat(timespec="seconds")
    rows = [
        {
            "time": now,
            "benchmark": "retrieval",
            "case": f"tatoeba {Path(model).name} layer {layer} {scoring}",
            "method": language,
            "seconds": "",
            "value": f"{value:.2f}",
            **env,
        }
        for (layer, scoring), values in accuracy.items()
        for language, value in values.items()
    ]
    means = {setting: float(np.mean(list(values.values()))) for setting, values in accuracy.items()}
    return rows, {"means": means, "seconds": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k x 20k instead of 100k x 100k")
    parser.add_argument("--data", type=Path, help="Tatoeba directory (LASER layout) for the real-model run")
    parser.add_argument("--model", help="encoder directory for the real-model Tatoeba run")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--size", type=int, help="sentences per side (overrides the 100k / 20k default)")
    parser.add_argument("--repeat", type=int, help="runs per method, fastest kept (default: 3 with --quick, else 1)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.size, args.repeat, args.model = args.size or 1000, 1, None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    n = args.size or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (3 if args.quick else 1)
    rows, summary = bench_mining(n, args.dim, repeat)
    print(
        f"\nBUCC mining, {n} x {n}, d={args.dim}, k={K} ({environment()['device']}, {torch.get_num_threads()} threads, "
        f"load average {environment()['load_1min']}; fastest of {repeat} interleaved runs)"
    )
    print(f"{'method':<36}{'seconds':>10}{'speedup':>10}{'identical':>11}")
    for row in rows:
        print(f"{row['method']:<36}{row['seconds']:>10}{row['speedup']:>10}{str(row['identical']).lower():>11}")
    timings, speedup, identical, best = summary["timings"], summary["speedup"], summary["identical"], summary["best"]
    search_s, loop_s = timings["reference_search"], timings["reference_loop"]
    print(f"  reference: faiss searches {search_s:.2f} s, scoring loop + max retrieval {loop_s:.2f} s")
    print(f"  fastest with identical pairs: {best}; precision='auto' picks {summary['auto']} on this machine")
    result = (
        f"RESULT speedup={speedup[best]:.2f} identical={str(identical[best]).lower()} precision={best} "
        f"speedup_fp32={speedup['fp32']:.2f} identical_fp32={str(identical['fp32']).lower()} "
        f"speedup_int8={speedup['int8']:.2f} identical_int8={str(identical['int8']).lower()} "
        f"speedup_bf16={speedup['bf16']:.2f} identical_bf16={str(identical['bf16']).lower()} "
        f"n={n} reference_s={timings['reference']:.2f} fastxlt_s={timings[best]:.2f} "
        f"max_score_diff={summary['max_score_diff']:.2e}"
    )
    if args.model and args.data:
        print(f"\nTatoeba, {args.model} on {args.data}")
        tatoeba_rows, tatoeba = bench_tatoeba(args.model, args.data)
        rows += tatoeba_rows
        means = tatoeba["means"]
        print("  mean  " + "".join(f"{mean:>14.2f}" for mean in means.values()) + f"   ({tatoeba['seconds']:.0f} s)")
        result += "".join(f" tatoeba_layer{layer}_{scoring}={mean:.2f}" for (layer, scoring), mean in means.items())
    write_rows(rows)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
