"""Parity between an exported graph and the PyTorch model it came from; graphs that fail are refused.

Every export runs the graph and the PyTorch model on the same real batches and compares:

* ``max_abs``: the largest absolute difference of any output value (logits, or embeddings);
* ``agreement``: the fraction of identical predictions (the family's own ``FamilyOps.predict``:
  argmax labels, tags and choices, span QA's best start and end token; for embedding graphs, the
  nearest neighbour of each row among the batch's rows);
* ``min_cosine``: the smallest cosine between matching output rows (how far reduced precision moves
  an embedding).

Thresholds (``TOLERANCES``), per precision:

* fp32: ``max_abs <= 1e-4``. The graph computes the same function in the same precision; only the
  order of floating-point sums differs.
* int8 (dynamic quantisation of the linear layers, ONNX Runtime on the CPU): ``agreement >= 0.95``
  (and ``min_cosine >= 0.95`` for embedding graphs). Measured on this project's machines: multilingual-e5-small with an
  XNLI head keeps about 98% of its predictions and moves accuracy by well under a point
  (benchmarks/eval_throughput.py); 0.95 leaves room for small parity sets while still catching a
  broken graph (a random one agrees about 1/num_labels of the time).
* fp16 (CUDA provider): ``agreement >= 0.99`` (and ``min_cosine >= 0.999`` for embedding graphs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from fastxlt.errors import FastXLTError


class ParityError(FastXLTError):
    """An exported graph does not reproduce the PyTorch model closely enough; it was not saved."""


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None  # None: not checked (reduced precision moves values by design)
    min_agreement: float
    min_cosine: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4, min_agreement=0.0, min_cosine=0.0),
    "int8": Tolerance(max_abs=None, min_agreement=0.95, min_cosine=0.95),
    "fp16": Tolerance(max_abs=None, min_agreement=0.99, min_cosine=0.999),
}


@dataclass
class ParityReport:
    """What the parity check measured; stored in the graph's manifest."""

    precision: str
    examples: int
    max_abs: float
    agreement: float
    min_cosine: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    precision: str,
    reference: Sequence[Sequence[np.ndarray]],
    candidate: Sequence[Sequence[np.ndarray]],
    reference_predictions: Sequence[Any],
    candidate_predictions: Sequence[Any],
) -> ParityReport:
    """Compare per-batch outputs (lists of arrays, one per graph output) and the predictions made from them."""
    max_abs, min_cosine = 0.0, 1.0
    for ref_batch, cand_batch in zip(reference, candidate, strict=True):
        for ref, cand in zip(ref_batch, cand_batch, strict=True):
            ref, cand = np.asarray(ref, dtype=np.float64), np.asarray(cand, dtype=np.float64)
            if ref.shape != cand.shape:
                raise ParityError(f"the graph returns shape {cand.shape} where PyTorch returns {ref.shape}; re-export it")
            if not np.all(np.isfinite(cand)):
                return ParityReport(precision, len(reference_predictions), float("inf"), 0.0, -1.0)
            max_abs = max(max_abs, float(np.max(np.abs(ref - cand))) if ref.size else 0.0)
            min_cosine = min(min_cosine, _min_row_cosine(ref, cand))
    same = [_same(a, b) for a, b in zip(reference_predictions, candidate_predictions, strict=True)]
    agreement = float(np.mean(same)) if same else 1.0
    return ParityReport(precision, len(same), max_abs, agreement, min_cosine)


def check(report: ParityReport, what: str, *, gate_cosine: bool = False) -> ParityReport:
    """Raise ``ParityError`` (one line) when ``report`` misses its precision's tolerance.

    ``gate_cosine`` applies the cosine bound (embedding graphs); the cosine of a few small logits
    says little, so head graphs are judged by their predictions.
    """
    tolerance = TOLERANCES[report.precision]
    problems = []
    if tolerance.max_abs is not None and not report.max_abs <= tolerance.max_abs:
        problems.append(f"max abs difference {report.max_abs:.3g} > {tolerance.max_abs:g}")
    if report.agreement < tolerance.min_agreement:
        problems.append(f"prediction agreement {report.agreement:.4f} < {tolerance.min_agreement}")
    if gate_cosine and report.min_cosine < tolerance.min_cosine:
        problems.append(f"min cosine {report.min_cosine:.4f} < {tolerance.min_cosine}")
    if problems:
        raise ParityError(
            f"{what} ({report.precision}) fails the parity check against PyTorch on {report.examples} examples: "
            f"{'; '.join(problems)}; the graph was not saved (try fp32, or report the model)"
        )
    return report


def _min_row_cosine(ref: np.ndarray, cand: np.ndarray) -> float:
    """Smallest cosine between matching rows along the last axis (1.0 for all-zero rows)."""
    if ref.ndim == 0 or ref.size == 0:
        return 1.0
    ref, cand = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1])
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    valid = norms > 0
    if not np.any(valid):
        return 1.0
    return float(np.min(np.sum(ref * cand, axis=1)[valid] / norms[valid]))


def _same(a: Any, b: Any) -> bool:
    """Equal predictions; a float array (span QA's per-token start/end logits) is judged by its decision,
    the best position of each column, since raw floats never match exactly across runtimes."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f" and a.shape == b.shape and a.size:
            return bool(np.array_equal(a.argmax(axis=0), b.argmax(axis=0)))
        return bool(np.array_equal(a, b))
    return a == b
