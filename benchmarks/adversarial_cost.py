"""Cost of adversarial training: time per optimizer step of FreeLB, PGD, SMART and R3F against standard training.

    python -m benchmarks.adversarial_cost [--quick] [--smoke] [--model DIR] [--steps N] [--batch B] [--length L]

Every method trains the same model from the same initial weights on the same batches (random token ids of
fixed length, a 3-way pair-classification head) with AdamW, grad-accum 2, through fastxlt's
``adversarial_step`` (the function the training loop calls) on a plain-torch engine, each with its published
defaults; the methods take their steps in turn (interleaved), so the shared machine's load hits them alike. The model is a tiny random XLM-R (4 layers, hidden 128) unless ``--model DIR`` names a Hugging Face
encoder (e.g. multilingual-e5-small: ``bash ../shared/tools/me5-small/build.sh .cache/me5-small``). Each method
takes one untimed warm-up step, then ``--steps`` timed optimizer steps; the median step time is reported and the
ratio to standard training. ``--quick`` times 3 steps; ``--smoke`` a seconds-long run that measures nothing.

A table on the terminal, one CSV row per method in ``benchmarks/results/adversarial_cost.csv``, and a last line
``RESULT freelb_ratio=... pgd_ratio=... smart_ratio=... r3f_ratio=... standard_s=...``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as a file: the repository root replaces this folder at the head of sys.path, where a
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # file named like an installed package would shadow it

from benchmarks._results import SMOKE_HELP, append_rows, machine, results_path  # noqa: E402

from fastxlt.config import AdversarialConfig  # noqa: E402
from fastxlt.models.encoder import load_encoder  # noqa: E402
from fastxlt.models.transfer import TransferModel  # noqa: E402
from fastxlt.tasks.base import get_task  # noqa: E402
from fastxlt.training.adversarial import PlainEngine, adversarial_step  # noqa: E402

RESULTS = results_path("adversarial_cost.csv")
METHODS = ("standard", "freelb", "pgd", "smart", "r3f")
GRAD_ACCUM = 2


def build_encoder(model_dir: str | None, smoke: bool) -> tuple[torch.nn.Module, str]:
    if model_dir:
        return load_encoder(model_dir), Path(model_dir).name
    from transformers import XLMRobertaConfig, XLMRobertaModel

    layers, hidden = (1, 32) if smoke else (4, 128)
    config = XLMRobertaConfig(vocab_size=8000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                              intermediate_size=4 * hidden, max_position_embeddings=520, pad_token_id=1)
    torch.manual_seed(0)
    return XLMRobertaModel(config, add_pooling_layer=False), f"tiny-xlmr-{layers}x{hidden}"


def make_batches(count: int, batch: int, length: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(5, vocab, (batch, length), generator=generator),
             "attention_mask": torch.ones(batch, length, dtype=torch.long),
             "labels": torch.randint(0, 3, (batch,), generator=generator)} for _ in range(count)]  # fmt: skip


class Trainer:
    """One method's model, optimizer and engine, all from the same initial weights."""

    def __init__(self, method: str, encoder_state: dict, build) -> None:
        encoder = build()
        encoder.load_state_dict(encoder_state)
        torch.manual_seed(0)
        self.model = TransferModel(encoder, [get_task("mnli")]).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
        self.engine, self.head = PlainEngine(self.model, grad_accum=GRAD_ACCUM), self.model.head_for("mnli")
        self.settings = None if method == "standard" else AdversarialConfig(method=method)

    def step(self, batches: list[dict[str, torch.Tensor]], step: int) -> float:
        """Seconds for one optimizer step (GRAD_ACCUM micro-batches)."""
        started = time.perf_counter()
        for micro in range(GRAD_ACCUM):
            index = step * GRAD_ACCUM + micro
            batch = batches[index % len(batches)]
            if self.settings is None:
                torch.manual_seed(index)
                self.engine.backward(self.model(head=self.head, **batch)[0])
            else:
                adversarial_step(self.engine, self.head, batch, self.settings, dropout_seed=index, noise_seed=10_000 + index)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps per method")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    parser.add_argument("--model", help="a Hugging Face encoder directory (default: a tiny random XLM-R)")
    parser.add_argument("--data", help="unused (random token batches); accepted for the common benchmark interface")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per method")
    parser.add_argument("--batch", type=int, default=8, help="sequences per micro-batch")
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.batch, args.length, args.model = 1, 2, 16, None
    elif args.quick:
        args.steps = 3
    build = lambda: build_encoder(args.model, args.smoke)[0]  # noqa: E731 - one fresh copy per method
    encoder, name = build_encoder(args.model, args.smoke)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    vocab = min(encoder.config.vocab_size, 8000)
    batches = make_batches(GRAD_ACCUM * 4, args.batch, args.length, vocab)
    env = {**machine(), "torch": torch.__version__, "threads": str(torch.get_num_threads())}
    print(f"adversarial training cost on {name}, batch {args.batch} x {args.length} tokens x grad-accum {GRAD_ACCUM} "
          f"({env['device']}, load average {env['load_1min']}; median of {args.steps} steps)")  # fmt: skip
    print(f"{'method':<10}{'s/step':>10}{'ratio':>8}{'forwards':>10}")
    forwards = {"standard": 1, "freelb": 3, "pgd": 3, "smart": 3, "r3f": 2}  # per micro-batch, default settings
    medians, rows = {}, []
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    trainers = {method: Trainer(method, state, build) for method in METHODS}
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for step in range(args.steps + 1):  # interleaved: the shared machine's load hits every method alike
        for method, trainer in trainers.items():
            seconds = trainer.step(batches, step)
            if step:  # step 0 warms up
                times[method].append(seconds)
    for method in METHODS:
        medians[method] = statistics.median(times[method])
        ratio = medians[method] / medians["standard"]
        print(f"{method:<10}{medians[method]:>10.4f}{ratio:>8.2f}{forwards[method]:>10}")
        rows.append({"time": stamp, "benchmark": "adversarial_cost", "model": name, "method": method,
                     "batch": args.batch, "length": args.length, "grad_accum": GRAD_ACCUM, "steps": args.steps,
                     "seconds_per_step": f"{medians[method]:.5f}", "ratio": f"{ratio:.3f}",
                     "smoke": args.smoke, **env})  # fmt: skip
    append_rows(RESULTS, list(rows[0]), rows)
    ratios = " ".join(f"{m}_ratio={medians[m] / medians['standard']:.2f}" for m in METHODS[1:])
    print(f"RESULT {ratios} standard_s={medians['standard']:.4f} model={name} smoke={str(args.smoke).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
