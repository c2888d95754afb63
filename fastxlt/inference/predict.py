"""Batched prediction with the torch backend: length-sorted, token-budget batches, right padding,
predictions returned in input order. Used for English dev evaluation during training and for
zero-shot evaluation over languages.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from fastxlt.inference.batching import pack_batches
from fastxlt.inference.precision import default_batch_tokens
from fastxlt.tasks import metrics
from fastxlt.tasks.base import Family
from fastxlt.tasks.features import Feature, FamilyOps, ops_for


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    head: str,
    ops: FamilyOps,
    features: Sequence[Feature],
    tokenizer,
    *,
    batch_tokens: int | None = None,
    max_batch_size: int = 512,
    progress: str | None = None,
    unit: str = "example",
) -> list[Any]:
    """Predictions of ``model``'s head ``head`` for every feature, in the order of ``features``.

    ``batch_tokens`` bounds a padded batch (rows x longest row); None takes the device's default
    (``fastxlt.inference.precision.default_batch_tokens``). The ``progress`` line counts examples
    (``unit``), not features: a QA question has several windows, and windows are not what a user counts.
    """
    if not features:
        return []
    device = _device_of(model)
    lengths = np.fromiter((ops.length(f) for f in features), dtype=np.int64, count=len(features))
    order, offsets = pack_batches(lengths, batch_tokens or default_batch_tokens(device), max_batch_size)
    was_training = model.training
    model.eval()
    outputs: list[Any] = [None] * len(features)
    counter = ExampleProgress(features, progress, unit) if progress else None
    try:
        for b in range(len(offsets) - 1):
            rows = order[offsets[b] : offsets[b + 1]]
            batch = ops.collate([features[i] for i in rows], tokenizer)
            batch.pop("labels", None)
            batch = {k: v.to(device) for k, v in batch.items()}
            _, logits = model(head=head, **batch)
            for row, prediction in zip(rows, ops.predict(logits.float(), batch)):
                outputs[row] = prediction
            if counter:
                counter.done(rows)
    finally:
        model.train(was_training)
        if counter:
            counter.close()
    return outputs


class ExampleProgress:
    """A progress line over examples: one advances when the last of its features (QA windows) is predicted."""

    def __init__(self, features: Sequence[Feature], desc: str, unit: str) -> None:
        self.owners = [f.get("example", i) if isinstance(f, dict) else i for i, f in enumerate(features)]
        self.left: dict[Any, int] = {}
        for owner in self.owners:
            self.left[owner] = self.left.get(owner, 0) + 1
        self.bar = tqdm(total=len(self.left), desc=desc, leave=False, unit=unit)

    def done(self, rows: Sequence[int]) -> None:
        finished = 0
        for row in rows:
            owner = self.owners[row]
            self.left[owner] -= 1
            finished += self.left[owner] == 0
        self.bar.update(finished)

    def close(self) -> None:
        self.bar.close()


def score_examples(
    model: torch.nn.Module,
    spec,
    examples: Sequence[Any],
    features: Sequence[Feature],
    tokenizer,
    *,
    batch_tokens: int | None = None,
    progress: str | None = None,
) -> tuple[dict[str, float], list[Any]]:
    """The task's metric on ``examples`` (already featurised) and the per-example predictions.

    ``model`` is anything called as ``model(head=..., input_ids=..., attention_mask=...) -> (loss, logits)``
    with a ``head_for(task)`` method: a ``TransferModel`` or an exported-graph runner.
    """
    predictions, gold = predict_examples(model, spec, examples, features, tokenizer, batch_tokens=batch_tokens, progress=progress)
    return metrics.compute(spec.metric, predictions, gold), predictions


def predict_examples(
    model: torch.nn.Module,
    spec,
    examples: Sequence[Any],
    features: Sequence[Feature],
    tokenizer,
    *,
    batch_tokens: int | None = None,
    progress: str | None = None,
) -> tuple[list[Any], list[Any]]:
    """(per-example predictions, per-example gold) as the task's metric takes them: what ``score_examples``
    scores, exposed for callers that also need per-example statistics (the paired bootstrap)."""
    ops = ops_for(spec)
    unit = "question" if spec.family == Family.SPAN_QA else "example"
    outputs = predict(model, model.head_for(spec.name), ops, features, tokenizer, batch_tokens=batch_tokens,
                      progress=progress, unit=unit)
    return ops.decode(examples, features, outputs)


def _device_of(model) -> torch.device:
    """Where batches go: the model's first parameter's device; the CPU for runners without parameters
    (``fastxlt.export.OnnxModel`` feeds ONNX Runtime from host memory whatever its provider)."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")
