"""Fused kernels against PyTorch: memory of linear + cross-entropy on the CPU, and on a CUDA node
times and peak memory of all three kernels at XLM-R base and large shapes.

    python -m benchmarks.fused_kernels [--quick] [--dtype bfloat16|float32] [--tokens N] [--vocab V] [--hidden H]

CPU part (always; ``--quick`` runs it alone): the MLM loss at XLM-R's vocabulary (250,002),
4,096 labelled tokens, hidden 1,024 — ``fastxlt.kernels.linear_cross_entropy`` (torch path,
vocabulary chunks) against the unfused pair ``F.linear`` + ``F.cross_entropy``, forward and
backward. Each variant runs in a fresh subprocess. Method: after the inputs (hidden, weight,
bias, labels) are allocated, the process resets its resident-set high-water mark
(``/proc/self/clear_refs``; ``ru_maxrss`` where that is not allowed) and reads its RSS as the
baseline; after the loss and its backward, the high-water mark (``VmHWM``) minus the baseline is
the variant's peak memory. It includes the gradients themselves (dW is V x H for both). Loss
and gradients of the two runs are compared (dhidden and dbias in full, dweight through a fixed
random projection of every row plus 1,000 sampled rows) with the tests' tolerance per dtype.
The default dtype is bf16 (what training uses; it also halves the unfused run's ~13 GB fp32 peak
on a shared machine); ``--dtype float32`` measures fp32.

CUDA part (skipped cleanly without CUDA): fused attention vs SDPA with a bool padding mask,
fused linear+CE (Triton) vs ``nn.Linear`` + ``F.cross_entropy``, fused residual+dropout+LayerNorm
vs dropout + add + ``nn.LayerNorm``; forward+backward time (CUDA events, median of repeats) and
peak allocated memory, bf16, over XLM-R base (H 768, 12 heads) and large (H 1024, 16 heads).

A table on the terminal, one CSV row per measurement in ``benchmarks/results/kernels.csv`` (with
device and library versions), and a last line ``RESULT memory_ratio=... loss_match=...
grad_match=...`` (memory_ratio = fused peak / unfused peak on the CPU).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as a file: the repository root replaces this folder at the head of sys.path, where a
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # file named like an installed package would shadow it

from benchmarks._results import SMOKE_HELP, module_command, results_path  # noqa: E402

from fastxlt.kernels import attention, linear_cross_entropy, residual_dropout_layernorm  # noqa: E402
from fastxlt.kernels.testing import TOLERANCE  # noqa: E402

RESULTS = results_path("kernels.csv")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
GPU = "cuda"  # the CUDA part's device (a dry run on the CPU under TRITON_INTERPRET=1 can point it elsewhere)
FIELDS = ["timestamp", "benchmark", "kernel", "shape", "variant", "dtype", "ms", "peak_mb", "ratio_vs_baseline",
          "match", "method", "device", "cpu_threads", "torch", "triton", "transformers", "python"]


# ------------------------------------------------------------------------------ CPU: memory (child)


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> str:
    """Reset the RSS high-water mark if the kernel lets us; returns the method used."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return "VmHWM after clear_refs"
    except OSError:
        return "ru_maxrss"


def _peak_kb(method: str) -> int:
    if method.startswith("VmHWM"):
        return _status_kb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(variant: str, args: argparse.Namespace, out: str) -> None:
    """One variant in this fresh process: allocate inputs, reset the peak, run loss + backward, save."""
    dtype = DTYPES[args.dtype]
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, dtype=dtype, generator=gen).requires_grad_()
    weight = torch.randn(args.vocab, args.hidden, dtype=dtype, generator=gen).mul_(0.05).requires_grad_()
    bias = torch.randn(args.vocab, dtype=dtype, generator=gen).mul_(0.1).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=gen)
    torch.mm(hidden[:8].detach(), weight[:8].detach().t())  # load the GEMM kernels before the baseline
    method = _reset_peak()
    base_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    if variant == "fused":
        loss = linear_cross_entropy(hidden, weight, bias, labels, backend="torch")
    else:
        loss = F.cross_entropy(F.linear(hidden, weight, bias), labels)
    loss.backward()
    seconds = time.perf_counter() - start
    peak_mb = (_peak_kb(method) - base_kb) / 1024
    result = {"loss": float(loss.detach()), "seconds": seconds, "peak_mb": peak_mb, "method": method}
    torch.save({**result, **_fingerprints(hidden, weight, bias)}, out)


def _fingerprints(hidden, weight, bias) -> dict:
    """Enough of the gradients to compare two runs without writing 1 GB: dH, db, a projection of dW."""
    projection = torch.randn(weight.shape[1], 4, generator=torch.Generator().manual_seed(1))
    rows = torch.randperm(weight.shape[0], generator=torch.Generator().manual_seed(2))[:1000]
    dw = weight.grad
    projected = torch.cat([dw[i:i + 16384].float() @ projection for i in range(0, dw.shape[0], 16384)])
    return {"dhidden": hidden.grad.float(), "dbias": bias.grad.float(), "dweight_projection": projected,
            "dweight_rows": dw[rows].float()}


# ----------------------------------------------------------------------------- CPU: memory (parent)


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> bool:
    scale = float(expected.abs().max())
    return bool(((actual - expected).abs() <= tol * (expected.abs() + scale)).all())


def cpu_memory(args: argparse.Namespace) -> tuple[list[dict], dict]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("unfused", "fused"):
            out = os.path.join(tmp, f"{variant}.pt")
            cmd = [*module_command(__file__), "--child", variant, "--child-out", out, "--dtype", args.dtype,
                   "--tokens", str(args.tokens), "--vocab", str(args.vocab), "--hidden", str(args.hidden)]
            print(f"[cpu] {variant}: tokens={args.tokens} vocab={args.vocab} hidden={args.hidden} {args.dtype} ...",
                  flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
            results[variant] = torch.load(out)
    fused, unfused = results["fused"], results["unfused"]
    tol = TOLERANCE[DTYPES[args.dtype]]
    loss_match = abs(fused["loss"] - unfused["loss"]) <= tol * abs(unfused["loss"])
    compared = ("dhidden", "dbias", "dweight_projection", "dweight_rows")
    grad_match = all(_close(fused[k], unfused[k], tol) for k in compared)
    ratio = fused["peak_mb"] / unfused["peak_mb"]
    shape = f"tokens={args.tokens} vocab={args.vocab} hidden={args.hidden}"
    method = "fwd+bwd in a fresh process; peak = {} minus VmRSS after the inputs"
    rows = [
        dict(kernel="linear_cross_entropy", shape=shape, variant="torch F.linear + F.cross_entropy", dtype=args.dtype,
             ms=unfused["seconds"] * 1000, peak_mb=unfused["peak_mb"], ratio_vs_baseline=1.0, match="",
             method=method.format(unfused["method"])),
        dict(kernel="linear_cross_entropy", shape=shape, variant="fastxlt fused (torch path, chunked)",
             dtype=args.dtype, ms=fused["seconds"] * 1000, peak_mb=fused["peak_mb"], ratio_vs_baseline=ratio,
             match=loss_match and grad_match, method=method.format(fused["method"])),
    ]
    summary = dict(memory_ratio=ratio, loss_match=loss_match, grad_match=grad_match,
                   fused_peak_mb=fused["peak_mb"], unfused_peak_mb=unfused["peak_mb"])
    return rows, summary


# -------------------------------------------------------------------------------------------- CUDA


def _cuda_measure(fn, repeats: int = 10) -> tuple[float, float]:
    """Median fwd+bwd milliseconds (CUDA events) and peak allocated MiB beyond what was live before."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    return sorted(times)[len(times) // 2], peak


def _pair(
    kernel: str, shape: str, baseline: tuple[str, Callable], fused: tuple[str, Callable], match: bool
) -> list[dict]:
    """Measure a (name, step) baseline and fused pair; ratio = fused time / baseline time."""
    base_ms, base_mb = _cuda_measure(baseline[1])
    fused_ms, fused_mb = _cuda_measure(fused[1])
    method = "fwd+bwd, median of 10 CUDA-event timings; peak = max_memory_allocated - allocated before"
    return [
        dict(kernel=kernel, shape=shape, variant=baseline[0], dtype="bfloat16", ms=base_ms, peak_mb=base_mb,
             ratio_vs_baseline=1.0, match="", method=method),
        dict(kernel=kernel, shape=shape, variant=fused[0], dtype="bfloat16", ms=fused_ms, peak_mb=fused_mb,
             ratio_vs_baseline=fused_ms / base_ms, match=match, method=method + "; ratio = time fused/baseline"),
    ]


def _step(forward: Callable, grad: torch.Tensor, leaves) -> None:
    """One training step of the op: drop old gradients (so they do not count), forward, backward."""
    for leaf in leaves:
        leaf.grad = None
    forward().backward(grad)


def cuda_attention(model: str, heads: int, batch: int, seq: int) -> list[dict]:
    dev, dt = GPU, torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(batch, seq, heads, 64, device=dev, dtype=dt, generator=gen).transpose(1, 2).requires_grad_()
               for _ in range(3))
    lengths = torch.randint(seq // 4, seq + 1, (batch,), device=dev, generator=gen)
    mask = torch.arange(seq, device=dev)[None, :] < lengths[:, None]
    grad = torch.randn(batch, heads, seq, 64, device=dev, dtype=dt, generator=gen)
    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # noqa: E731
    fused = lambda: attention(q, k, v, mask, backend="triton")  # noqa: E731
    with torch.no_grad():
        match = _close(fused().float(), sdpa().float(), TOLERANCE[dt])
    shape = f"{model} B={batch} H={heads} T={seq} D=64 ragged"
    return _pair("attention", shape, ("torch SDPA (bool mask)", lambda: _step(sdpa, grad, (q, k, v))),
                 ("fastxlt triton", lambda: _step(fused, grad, (q, k, v))), match)


def cuda_linear_ce(model: str, hidden_size: int, tokens: int, labelled: float) -> list[dict]:
    dev, dt, vocab = GPU, torch.bfloat16, 250002
    gen = torch.Generator(device=dev).manual_seed(0)
    h = torch.randn(tokens, hidden_size, device=dev, dtype=dt, generator=gen).requires_grad_()
    w = (torch.randn(vocab, hidden_size, device=dev, dtype=dt, generator=gen) * 0.05).requires_grad_()
    b = torch.zeros(vocab, device=dev, dtype=dt, requires_grad=True)
    labels = torch.randint(0, vocab, (tokens,), device=dev, generator=gen)
    labels[torch.rand(tokens, device=dev, generator=gen) >= labelled] = -100
    unfused = lambda: F.cross_entropy(F.linear(h, w, b), labels)  # noqa: E731
    fused = lambda: linear_cross_entropy(h, w, b, labels, backend="triton")  # noqa: E731
    with torch.no_grad():
        match = abs(float(fused()) - float(unfused())) <= TOLERANCE[dt] * abs(float(unfused()))
    one = torch.ones((), device=dev)
    shape = f"{model} tokens={tokens} labelled={labelled:.0%} vocab={vocab} H={hidden_size}"
    return _pair("linear_cross_entropy", shape,
                 ("torch nn.Linear + F.cross_entropy", lambda: _step(unfused, one, (h, w, b))),
                 ("fastxlt triton (chunked)", lambda: _step(fused, one, (h, w, b))), match)


def cuda_layernorm(model: str, hidden_size: int, rows: int) -> list[dict]:
    dev, dt = GPU, torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)
    x, res = (torch.randn(rows, hidden_size, device=dev, dtype=dt, generator=gen).requires_grad_() for _ in range(2))
    norm = torch.nn.LayerNorm(hidden_size, eps=1e-5, device=dev, dtype=dt)
    grad = torch.randn(rows, hidden_size, device=dev, dtype=dt, generator=gen)
    unfused = lambda: norm(F.dropout(x, 0.1, training=True) + res)  # noqa: E731
    fused = lambda: residual_dropout_layernorm(x, res, norm.weight, norm.bias, p=0.1, training=True,  # noqa: E731
                                               backend="triton")
    with torch.no_grad():
        match = _close(residual_dropout_layernorm(x, res, norm.weight, norm.bias, backend="triton").float(),
                       norm(x + res).float(), TOLERANCE[dt])
    leaves = (x, res, norm.weight, norm.bias)
    return _pair("residual_dropout_layernorm", f"{model} rows={rows} H={hidden_size} p=0.1",
                 ("torch dropout + add + nn.LayerNorm", lambda: _step(unfused, grad, leaves)),
                 ("fastxlt triton", lambda: _step(fused, grad, leaves)), match)


def cuda_part() -> list[dict]:
    rows: list[dict] = []
    for model, hidden_size, heads in (("xlmr-base", 768, 12), ("xlmr-large", 1024, 16)):
        rows += cuda_attention(model, heads, batch=32, seq=256)
        rows += cuda_attention(model, heads, batch=8, seq=512)
        rows += cuda_linear_ce(model, hidden_size, tokens=4096, labelled=1.0)
        rows += cuda_linear_ce(model, hidden_size, tokens=8192, labelled=0.15)
        rows += cuda_layernorm(model, hidden_size, rows=8192)
    return rows


# ------------------------------------------------------------------------------------------ output


def _versions() -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    import transformers

    cuda = torch.cuda.is_available()
    return dict(device=torch.cuda.get_device_name() if cuda else platform.processor() or _cpu_name(),
                cpu_threads=torch.get_num_threads(), torch=torch.__version__, triton=triton_version,
                transformers=transformers.__version__, python=platform.python_version())


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def write_rows(rows: list[dict], device: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    new = not RESULTS.exists()
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    with RESULTS.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({"timestamp": stamp, "benchmark": "kernels", **device, **row,
                             "ms": f"{row['ms']:.3f}", "peak_mb": f"{row['peak_mb']:.1f}",
                             "ratio_vs_baseline": f"{row['ratio_vs_baseline']:.3f}"})


def print_table(rows: list[dict]) -> None:
    print(f"\n{'kernel':<27} {'shape':<52} {'variant':<38} {'ms':>10} {'peak MiB':>10} {'ratio':>7} match")
    for r in rows:
        print(f"{r['kernel']:<27} {r['shape']:<52} {r['variant']:<38} {r['ms']:>10.1f} {r['peak_mb']:>10.1f} "
              f"{r['ratio_vs_baseline']:>7.3f} {r['match']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CPU memory part only")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=250002)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--data", help="unused (common benchmark flag)")
    parser.add_argument("--model", help="unused (common benchmark flag)")
    parser.add_argument("--child", choices=["fused", "unfused"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (CPU part at 256 tokens, vocabulary 4096)")
    args = parser.parse_args()
    if args.smoke:
        args.quick, args.tokens, args.vocab, args.hidden = True, 256, 4096, 64
    if args.child:
        run_child(args.child, args, args.child_out)
        return

    device = _versions()
    rows, summary = cpu_memory(args)
    cpu_device = {**device, "device": _cpu_name()}
    write_rows(rows, cpu_device)
    all_rows = list(rows)
    cuda = "skipped"
    if args.quick:
        print("[cuda] skipped (--quick)")
    elif not torch.cuda.is_available():
        print("[cuda] skipped: no CUDA device on this machine")
    else:
        cuda_rows = cuda_part()
        write_rows(cuda_rows, device)
        all_rows += cuda_rows
        cuda = "done"
    print_table(all_rows)
    print(f"\nCSV rows appended to {RESULTS}")
    flag = lambda b: "true" if b else "false"  # noqa: E731
    print(f"RESULT memory_ratio={summary['memory_ratio']:.4f} loss_match={flag(summary['loss_match'])} "
          f"grad_match={flag(summary['grad_match'])} fused_peak_mb={summary['fused_peak_mb']:.0f} "
          f"unfused_peak_mb={summary['unfused_peak_mb']:.0f} dtype={args.dtype} cuda={cuda}")


if __name__ == "__main__":
    main()
