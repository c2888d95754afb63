"""The head registry: each task family registers the factory of its head, ``make_head`` looks it up.

Heads live with their family (``fastxlt.tasks.pair_classification``, ``.span_qa``, ``.tagging``,
``.multiple_choice``, the retrieval family's ``fastxlt.retrieval.dual_encoder``; the masked-LM head, which
needs the fused kernels, in ``fastxlt.models.heads``). Each calls ``register_head(Family.X, factory)`` when
imported, as it adds its ``FAMILY_OPS``; this module imports none of them (registration goes up, not down,
docs/design.md "Layers"), and ``head_factory`` loads the plugin list on a miss, as ``features.ops_for`` does
(``fastxlt.tasks.base.family_entry``).

Also here, because the family modules share them and may not import ``fastxlt.models``: ``POOLINGS`` and
``pool`` (how a sentence-level head reads the token states) and ``head_dropout`` (the encoder config's
classifier dropout). Every head returns ``(loss, logits)``; the loss is None when no labels are given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastxlt.tasks.base import Family, TaskSpec, family_entry

POOLINGS = ("cls", "mean")

# (task, encoder, pooling) -> head module; the encoder gives the sizes (``encoder.config``) and, for the
# masked-LM head, the tied word embeddings.
HeadFactory = Callable[[TaskSpec, Any, str], nn.Module]

HEAD_FACTORIES: dict[Family, HeadFactory] = {}


def register_head(family: Family, factory: HeadFactory) -> HeadFactory:
    """Make ``factory`` build the heads of ``family``'s tasks (one per family: a second registration replaces it)."""
    HEAD_FACTORIES[family] = factory
    return factory


def head_factory(spec: TaskSpec) -> HeadFactory:
    return family_entry(HEAD_FACTORIES, spec, "has no head yet")


def head_dropout(config: Any) -> float:
    """The encoder config's classifier dropout, else its hidden dropout, else 0.1 (as XLM-R's heads)."""
    dropout = getattr(config, "classifier_dropout", None)
    if dropout is None:
        dropout = getattr(config, "hidden_dropout_prob", 0.1)
    return dropout


def check_head_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling '{pooling}'; choose {' or '.join(POOLINGS)}")
    return pooling


def pool(sequence_output: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return sequence_output[:, 0]
    mask = attention_mask.unsqueeze(-1).to(sequence_output.dtype)
    return (sequence_output * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
