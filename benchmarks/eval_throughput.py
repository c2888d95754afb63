"""Zero-shot XNLI evaluation speed: the PyTorch loop users write against fastxlt's torch and ONNX Runtime paths.

    python -m benchmarks.eval_throughput --model ME5_DIR --data ../shared/data/xnli [--checkpoint PHASE_DIR] [--quick]

A classification head trained on English XNLI (``--checkpoint``: a fastxlt phase model directory, by
default the final model of the real run ``runs/me5-small-xnli``; without one, a head is trained in
the set-up on the English XNLI dev file for ``--train-steps`` steps on top of ``--model``) is evaluated
on the XNLI test files of all 15 languages, with accuracy against ``DERIVED_test_labels.txt``:

(a) baseline: PyTorch eager fp32, dataset order, batches of 32 padded to the longest in the batch;
(b) fastxlt torch fp32: length-sorted batches packed to the device's token budget (``fastxlt.inference.predict``;
    2,048 tokens on a CPU);
(c) fastxlt ONNX Runtime fp32 (the graph exported once, parity-checked, reused for every language);
(d) reduced precision where it applies: ONNX Runtime int8 (VNNI CPUs), torch bf16 (``--precision bf16``,
    the model cast to bfloat16; AMX CPUs and GPUs only: without AMX bf16 is slower than fp32), ONNX
    Runtime fp16 (CUDA provider).

Every path includes tokenisation; export time is one-off and reported apart, and each path first runs
once, untimed, on 64 pairs. The paths run interleaved, language by language, so that a shared
machine's background load falls on all of them alike. ``--quick`` takes the first 300 pairs of each
language (4,500 pairs per path); the full run takes all 5,010 x 15. The machine may be shared:
timings carry the load average.

A table on the terminal, one CSV row per path in ``benchmarks/results/eval_throughput.csv``, and a
last line ``RESULT fp32_speedup= fp32_agreement= fast_speedup= fast_accuracy_delta= ...``: the best
fp32 path over (a) and its fraction of predictions identical to (a)'s; the best reduced-precision
path over (a) and its accuracy minus (a)'s in points, averaged over languages.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as a file: the repository root replaces this folder at the head of sys.path, where a
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # file named like an installed package would shadow it

from benchmarks._results import SMOKE_HELP, append_rows, cache_dir, machine, results_path, skip  # noqa: E402

from fastxlt.inference.precision import cast_for_precision  # noqa: E402
from fastxlt.inference.predict import predict  # noqa: E402
from fastxlt.models.encoder import load_tokenizer  # noqa: E402
from fastxlt.models.transfer import load_transfer_model  # noqa: E402
from fastxlt.utils.hardware import cpu_has_amx, cpu_has_vnni, default_device, fast_bf16  # noqa: E402
from fastxlt.tasks.base import PairExample, TaskSpec, get_task  # noqa: E402
from fastxlt.tasks.features import ops_for  # noqa: E402
from fastxlt.utils.run_layout import final_models, is_grid_dir  # noqa: E402

RESULTS = results_path("eval_throughput.csv")
DEFAULT_RUN = ROOT / "runs" / "me5-small-xnli"  # its one arm's final model, found through its cell.json
CACHE = cache_dir("eval_throughput")
MAX_LENGTH = 256
BASELINE_BATCH = 32
WARM_UP_PAIRS = 64


# ------------------------------------------------------------------------------------ set-up


def ensure_checkpoint(args) -> Path:
    """The phase model to evaluate: --checkpoint, the real run's model, or a head trained here on English dev."""
    if args.checkpoint:
        return Path(args.checkpoint)
    if is_grid_dir(DEFAULT_RUN) and not args.smoke:
        models = final_models(DEFAULT_RUN)
        if len(models) == 1 and (next(iter(models.values())) / "heads.pt").is_file():
            return next(iter(models.values()))
    if not args.model:
        raise SystemExit("no checkpoint found; pass --checkpoint PHASE_DIR or --model ME5_DIR to train a head")
    return train_head(Path(args.model), Path(args.data), args.train_steps)


def train_head(model_dir: Path, data: Path, steps: int) -> Path:
    """A short fine-tuning on the English XNLI dev file (AdamW 3e-5, batch 16) when no trained run exists."""
    from fastxlt.models.encoder import load_encoder
    from fastxlt.models.transfer import TransferModel, save_phase_outputs

    out = CACHE / f"head-{model_dir.name}-{steps}"
    if (out / "heads.pt").is_file():
        return out
    spec = get_task("xnli")
    ops = ops_for(spec)
    tokenizer = load_tokenizer(model_dir)
    features = ops.featurize(spec, spec.load("validation", "en", data), tokenizer, 128)
    torch.manual_seed(0)
    model = TransferModel(load_encoder(model_dir), [spec], pooling="mean")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    model.train()
    generator = np.random.default_rng(0)
    print(f"training an XNLI head on English dev for {steps} steps (no checkpoint given) ...", flush=True)
    for step in range(steps):
        rows = generator.choice(len(features), 16, replace=False)
        batch = ops.collate([features[i] for i in rows], tokenizer)
        loss, _ = model(head=spec.head_key, **batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    save_phase_outputs(model, out, tokenizer)
    return out


def load_languages(spec: TaskSpec, data: Path, languages: list[str], limit: int | None) -> dict[str, list[PairExample]]:
    examples = {}
    for language in languages:
        rows = spec.load("test", language, data)
        examples[language] = rows[:limit] if limit else rows
        if any(example.label < 0 for example in examples[language]):
            raise SystemExit(f"test-{language} has unlabelled rows; {data} needs DERIVED_test_labels.txt")
    return examples


# --------------------------------------------------------------------------------------- paths


def baseline_predict(model, spec: TaskSpec, tokenizer, examples: list[PairExample]) -> list[int]:
    """(a) What users write: dataset order, batches of 32, padded to the longest row, fp32 eager PyTorch."""
    predictions: list[int] = []
    head = model.head_for(spec.name)
    with torch.inference_mode():
        for start in range(0, len(examples), BASELINE_BATCH):
            chunk = examples[start : start + BASELINE_BATCH]
            batch = tokenizer([e.text_a for e in chunk], [e.text_b for e in chunk], padding=True, truncation=True,
                              max_length=MAX_LENGTH, return_tensors="pt")
            _, logits = model(head=head, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            predictions += logits.argmax(dim=-1).tolist()
    return predictions


def fastxlt_predict(model, spec: TaskSpec, tokenizer, examples, batch_tokens: int | None) -> list[int]:
    """(b)-(d) fastxlt: featurise, then length-sorted token-budget batches (any backend)."""
    ops = ops_for(spec)
    features = ops.featurize(spec, examples, tokenizer, MAX_LENGTH)
    return predict(model, model.head_for(spec.name), ops, features, tokenizer, batch_tokens=batch_tokens)


def run_paths(paths: list[tuple[str, Callable[[list[PairExample]], list[int]]]], data: dict[str, list[PairExample]]) -> list[dict[str, Any]]:
    """Every path on every language, interleaved language by language, so that the background load of a
    shared machine falls on all paths alike; each path's time is the sum over languages."""
    runs = [{"name": name, "seconds": 0.0, "pairs": 0, "predictions": {}, "accuracy": {}} for name, _ in paths]
    warm_up = next(iter(data.values()))[:WARM_UP_PAIRS]
    for _, fn in paths:  # untimed: first-call costs (allocator, oneDNN primitives, ORT arenas) fall on no path
        fn(warm_up)
    for language, examples in data.items():
        gold = np.array([e.label for e in examples])
        for run, (_, fn) in zip(runs, paths):
            start = time.perf_counter()
            predictions = fn(examples)
            run["seconds"] += time.perf_counter() - start
            run["pairs"] += len(examples)
            run["predictions"][language] = predictions
            run["accuracy"][language] = 100.0 * float(np.mean(np.array(predictions) == gold))
        print(f"  {language}: " + "  ".join(f"{run['name'].split()[0]} {run['pairs'] / run['seconds']:.1f}/s" for run in runs),
              flush=True)
    return runs


# -------------------------------------------------------------------------------------- output


def environment() -> dict:
    import onnxruntime
    import transformers

    return {
        **machine(),
        "threads": torch.get_num_threads(),
        "amx": cpu_has_amx(),
        "vnni": cpu_has_vnni(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
    }


def write_rows(rows: list[dict]) -> None:
    fields = ["time", "benchmark", "case", "method", "pairs", "seconds", "pairs_per_s", "speedup", "accuracy",
              "agreement", "export_s"] + list(environment())
    append_rows(RESULTS, fields, rows)


# ---------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="the encoder (e.g. .cache/me5-small); used to train a head when no checkpoint exists")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "xnli"), help="XNLI directory (XTREME layout)")
    parser.add_argument("--checkpoint", help="a fastxlt phase model directory with an XNLI head")
    parser.add_argument("--quick", action="store_true", help="the first 300 pairs of each language")
    parser.add_argument("--per-language", type=int, help="pairs per language (default: all; 300 with --quick)")
    parser.add_argument("--languages", default="all", help="'all' or a comma-separated list")
    parser.add_argument("--batch-tokens", type=int, help="token budget of fastxlt's batches (default: the device's)")
    parser.add_argument("--train-steps", type=int, default=300, help="set-up training steps when no checkpoint exists")
    parser.add_argument("--optimize", action="store_true", help="also time ONNX Runtime fp32 with the BERT fusions")
    parser.add_argument("--no-onnx", action="store_true", help="time the torch paths only (a long full run in less time)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (2 languages x 16 pairs, a 2-step head)")
    args = parser.parse_args()
    if args.smoke:
        global MAX_LENGTH  # tiny test encoders have 128 positions
        args.per_language, args.languages, args.train_steps, MAX_LENGTH = 16, "en,de", 2, 64
        if not (args.checkpoint or args.model) or not Path(args.data).is_dir():
            return skip(f"needs --model or --checkpoint, and XNLI test files in {args.data}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from fastxlt.export import OnnxModel, export_onnx, load_parity_features

    spec = get_task("xnli")
    checkpoint = ensure_checkpoint(args)
    tokenizer = load_tokenizer(checkpoint / "encoder")
    limit = args.per_language or (300 if args.quick else None)
    data = load_languages(spec, Path(args.data), spec.resolve_languages(args.languages), limit)
    pairs = sum(len(v) for v in data.values())
    print(f"XNLI test, {len(data)} languages, {pairs} pairs per path; checkpoint {checkpoint}")
    print(f"({environment()['device']}, {torch.get_num_threads()} threads, load average {environment()['load_1min']})")

    torch_model = load_transfer_model(checkpoint, [spec]).eval()
    paths: list[tuple[str, Callable]] = [
        ("(a) torch eager fp32 b32", lambda ex: baseline_predict(torch_model, spec, tokenizer, ex)),
        ("(b) fastxlt torch fp32", lambda ex: fastxlt_predict(torch_model, spec, tokenizer, ex, args.batch_tokens)),
    ]
    export_seconds: dict[str, float] = {}
    parity = load_parity_features(spec, tokenizer, data_dir=args.data, max_length=MAX_LENGTH)
    graphs = [("fp32", None, False, "(c) fastxlt onnx fp32"), ("int8", "int8", False, "(d) fastxlt onnx int8")]
    if args.optimize:
        graphs.insert(1, ("fp32-opt", None, True, "(c') fastxlt onnx fp32 fused"))
    if torch.cuda.is_available():
        graphs.append(("fp16", None, True, "(d) fastxlt onnx fp16"))
    if args.no_onnx:
        graphs = []
    for tag, quantize, flag, name in graphs:
        if tag == "int8" and not cpu_has_vnni() and not torch.cuda.is_available():
            print(f"  {name}: skipped (no VNNI)")
            continue
        start = time.perf_counter()
        result = export_onnx(checkpoint, CACHE / "onnx" / f"{checkpoint.parent.name}-{tag}", task=spec, quantize=quantize,
                             fp16=tag == "fp16", optimize=flag and tag == "fp32-opt", parity_features=parity, max_length=MAX_LENGTH)
        export_seconds[name] = time.perf_counter() - start
        print(f"  export {tag}: {'reused' if result.reused else 'exported'} in {export_seconds[name]:.1f} s, "
              f"parity {result.manifest['parity']}", flush=True)
        runner = OnnxModel({spec.head_key: result.out_dir}, {spec.name: spec.head_key})
        paths.append((name, lambda ex, r=runner: fastxlt_predict(r, spec, tokenizer, ex, args.batch_tokens)))
    if fast_bf16(default_device()):
        bf16_model = cast_for_precision(load_transfer_model(checkpoint, [spec]), "bf16")
        paths.append(("(d) fastxlt torch bf16", lambda ex: fastxlt_predict(bf16_model, spec, tokenizer, ex, args.batch_tokens)))
    else:
        print("  torch bf16: skipped (no AMX or bf16 GPU: bf16 would be slower than fp32 here)")
    runs = run_paths(paths, data)

    baseline = runs[0]
    base_rate = baseline["pairs"] / baseline["seconds"]
    base_accuracy = float(np.mean(list(baseline["accuracy"].values())))
    env, now = environment(), datetime.datetime.now().isoformat(timespec="seconds")
    case = f"xnli test {len(data)} langs x {limit or 'all'} {checkpoint.parent.name}"
    rows, summary = [], {}
    print(f"\n{'path':<30}{'pairs/s':>10}{'x (a)':>8}{'accuracy':>10}{'agree (a)':>11}")
    for run in runs:
        rate = run["pairs"] / run["seconds"]
        agreement = float(np.mean([p == q for lang in data for p, q in zip(run["predictions"][lang], baseline["predictions"][lang])]))
        accuracy = float(np.mean(list(run["accuracy"].values())))
        summary[run["name"]] = {"speedup": rate / base_rate, "agreement": agreement, "accuracy": accuracy}
        print(f"{run['name']:<30}{rate:>10.1f}{rate / base_rate:>8.2f}{accuracy:>10.2f}{agreement:>11.4f}")
        rows.append({"time": now, "benchmark": "eval_throughput", "case": case, "method": run["name"], "pairs": run["pairs"],
                     "seconds": f"{run['seconds']:.2f}", "pairs_per_s": f"{rate:.1f}", "speedup": f"{rate / base_rate:.2f}",
                     "accuracy": f"{accuracy:.2f}", "agreement": f"{agreement:.4f}",
                     "export_s": f"{export_seconds.get(run['name'], 0.0):.1f}", **env})
    print("  per language accuracy: " + " ".join(
        f"{lang}={baseline['accuracy'][lang]:.1f}" for lang in data) + "  (baseline)")
    fp32 = [name for name in summary if "fp32" in name and not name.startswith("(a)")]
    fast = [name for name in summary if not any(tag in name for tag in ("fp32",))]
    best_fp32 = max(fp32, key=lambda n: summary[n]["speedup"])
    best_fast = max(fast, key=lambda n: summary[n]["speedup"]) if fast else None
    result = (
        f"RESULT fp32_speedup={summary[best_fp32]['speedup']:.2f} fp32_agreement={summary[best_fp32]['agreement']:.4f} "
        f"fp32_path={best_fp32.split(')')[0].strip('(')}"
    )
    if best_fast:
        result += (f" fast_speedup={summary[best_fast]['speedup']:.2f} "
                   f"fast_accuracy_delta={summary[best_fast]['accuracy'] - base_accuracy:+.2f} "
                   f"fast_agreement={summary[best_fast]['agreement']:.4f} fast_path={best_fast.split()[-1]}")
    result += f" baseline_pairs_per_s={base_rate:.1f} baseline_accuracy={base_accuracy:.2f} pairs={pairs} load_1min={env['load_1min']}"
    write_rows(rows)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
