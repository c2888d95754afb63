"""Per-family features: examples -> token ids, batches of ids -> padded tensors, logits -> predictions.

Each family implements ``FamilyOps``; the training loop and the evaluator only talk to this interface,
so a new family plugs in by adding one instance to ``FAMILY_OPS`` from its own module (its head goes to
``fastxlt.tasks.head_registry`` the same way).
Features are plain dicts of Python lists (cheap to pickle and to sort by length); tensors appear only
in ``collate``. Padding is always on the right.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fastxlt.tasks.base import Family, PairExample, TaskSpec, TextExample, family_entry

Feature = dict[str, Any]


class FamilyOps:
    """The contract of a task family."""

    family: Family

    def featurize(
        self, spec: TaskSpec, examples: Sequence[Any], tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> list[Feature]:
        raise NotImplementedError

    def collate(
        self, features: Sequence[Feature], tokenizer: PreTrainedTokenizerBase, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[Any]:
        raise NotImplementedError

    def gold(self, features: Sequence[Feature]) -> list[Any]:
        raise NotImplementedError

    def decode(
        self, examples: Sequence[Any], features: Sequence[Feature], outputs: Sequence[Any]
    ) -> tuple[list[Any], list[Any]]:
        """Per-feature outputs -> (per-example predictions, per-example gold) for the metric.

        One feature per example for most families; span QA overrides this to merge the windows of
        a long context into one answer per question.
        """
        return list(outputs), self.gold(features)

    @staticmethod
    def length(feature: Feature) -> int:
        return len(feature["input_ids"])


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest row; returns (input_ids, attention_mask)."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


class MaskedLMOps(FamilyOps):
    """Raw text for masked language modelling with BERT's 15% / 80-10-10 masking."""

    family = Family.MASKED_LM
    mask_probability = 0.15

    def featurize(self, spec, examples, tokenizer, max_length):
        encoded = tokenizer([ex.text for ex in examples], truncation=True, max_length=max_length)
        return [{"input_ids": row} for row in encoded["input_ids"] if len(row) > 2]

    def collate(self, features, tokenizer, generator=None):
        input_ids, attention_mask = pad_ids([f["input_ids"] for f in features], tokenizer.pad_token_id)
        labels = input_ids.clone()
        special = torch.zeros_like(input_ids, dtype=torch.bool)
        for special_id in tokenizer.all_special_ids:
            special |= input_ids == special_id
        probability = torch.full(input_ids.shape, self.mask_probability)
        probability.masked_fill_(special, 0.0)
        masked = torch.bernoulli(probability, generator=generator).bool()
        labels[~masked] = -100
        roll = torch.rand(input_ids.shape, generator=generator)
        input_ids = input_ids.clone()
        input_ids[masked & (roll < 0.8)] = tokenizer.mask_token_id
        random_tokens = torch.randint(len(tokenizer), input_ids.shape, generator=generator)
        replace = masked & (roll >= 0.8) & (roll < 0.9)
        input_ids[replace] = random_tokens[replace]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def predict(self, logits, batch):
        return logits.argmax(dim=-1).tolist()

    def gold(self, features):
        return [None] * len(features)


# The masked-LM ops stay here: the family has no module of its own (only the synthetic world trains it). Every other
# family adds its ops from its own module when imported (fastxlt.plugins lists them).
FAMILY_OPS: dict[Family, FamilyOps] = {Family.MASKED_LM: MaskedLMOps()}


def ops_for(spec: TaskSpec) -> FamilyOps:
    return family_entry(FAMILY_OPS, spec, "is not trainable yet")



__all__ = ["FamilyOps", "Feature", "FAMILY_OPS", "ops_for", "pad_ids", "PairExample", "TextExample"]
