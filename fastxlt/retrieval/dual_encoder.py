"""Dual encoders for XTREME-R's retrieval tasks: loading one to evaluate, and training one as a fastxlt task.

XTREME-R fine-tunes LAReQA on English SQuAD v1.1 turned into retrieval, and Mewsli-X on English Wikipedia
(mention, entity) pairs, with one shared encoder for both sides and in-batch negatives (google-research/
xtreme ``third_party/run_retrieval_qa.py``, ``BertForSequenceRetrieval``): queries q_i and candidates c_j
are L2-normalised encodings, the logits are ``100 * q_i . c_j`` (a fixed scale), and the loss is the
cross-entropy of the right candidate among the batch's, i.e. softmax over row i of the (batch x batch)
similarity matrix with target i. ``in_batch_softmax_loss`` is that loss.

It plugs into the ordinary training loop as the ``retrieval`` family:

* ``RetrievalOps`` featurises a ``RetrievalExample`` into query ids and candidate ids (a LAReQA candidate
  is its sentence paired with its paragraph, as XTREME-R's ``encode_plus(sentence, paragraph)``) and
  collates a batch as (batch, 2, tokens), which ``TransferModel`` runs through the encoder flattened,
  as it does for multiple choice (the question side is padded to the candidates' width: simple, at the
  cost of some padding);
* ``DualEncoderHead`` (registered, as every family's head, in ``fastxlt.tasks.head_registry``, from which
  ``fastxlt.models.heads.make_head`` builds it) has no parameters: it pools the last hidden layer (the phase's ``pooling``), normalises, and
  applies the loss. So the encoder that a phase hands on is the whole dual encoder, and
  ``evaluate_lareqa`` / ``evaluate_mewsli`` with the same ``pooling`` (and the last layer) read exactly
  what was trained;
* the English dev score (early stopping) ranks every dev query against every distinct dev candidate:
  mAP@20 with the one right candidate, i.e. MRR@20 (``fastxlt.retrieval.map_at_k``).

Tasks: ``squad_retrieval`` (SQuAD v1.1 train / dev, ``train-v1.1.json`` / ``dev-v1.1.json`` or the hub's
``rajpurkar/squad``; sentence breaks inferred by ``infer_sentence_breaks``) and ``mewslix_wikipedia``
(``wikipedia_pairs-{train,dev}.jsonl`` of XTREME-R's Mewsli-X download; registered by
``fastxlt.retrieval.mewsli``, beside its reader). As in XTREME-R, negatives are
the other examples of the micro-batch on the same rank (no cross-rank gathering), and two questions
that share an answer sentence in one batch are each other's (false) negatives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastxlt.errors import ConfigError
from fastxlt.retrieval.embed import load_sentence_encoder
from fastxlt.retrieval.map_at_k import retrieval_average_precision
from fastxlt.tasks import metrics
from fastxlt.tasks.base import Family, TaskSpec, get_task, register
from fastxlt.tasks.features import FAMILY_OPS, FamilyOps, Feature, pad_ids
from fastxlt.tasks.head_registry import pool, register_head

DEV_METRIC = "map@20"


# ----------------------------------------------------------------------------------------------
# Evaluation: one encoder for both sides


def load_dual_encoder(
    model: Any, *, max_length: int = 256, batch_size: int = 64, pooling: str = "mean", layer: int | None = None,
    device: str | None = None, batch_tokens: int | None = None, precision: str = "fp32",
):
    """A loaded encoder as it is; a hub name, Hugging Face directory or fastxlt run loaded with the
    retrieval embedding code (``fastxlt.retrieval.embed``), reading the last hidden layer unless ``layer``
    says otherwise. ``batch_size`` caps the rows of a batch, ``batch_tokens`` its padded tokens."""
    if not isinstance(model, (str, Path)):
        if not hasattr(model, "encode"):
            raise ConfigError(f"model must be a name, a directory or an encoder with encode(); got {type(model).__name__}")
        return model

    if max_length < 1 or batch_size < 1:
        raise ConfigError(f"max_length and batch_size must be positive, got {max_length} and {batch_size}")
    return load_sentence_encoder(
        str(model), layer=-1 if layer is None else layer, pooling=pooling, max_length=max_length,
        max_batch_size=batch_size, device=device, batch_tokens=batch_tokens, precision=precision,
    )


# ----------------------------------------------------------------------------------------------
# Training objective


SCALE = 100.0  # XTREME-R's fixed logit scale ("logit_scale = 100.0") of the dual encoder's in-batch softmax


def in_batch_softmax_loss(
    queries: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor | None = None, scale: float = SCALE
) -> torch.Tensor:
    """Cross-entropy of ``scale * queries @ candidates.T`` with target ``labels`` (default: the diagonal).

    ``queries`` and ``candidates`` are (batch, hidden) and L2-normalised; row i's right candidate is ``labels[i]``.
    """
    logits = scale * queries.float() @ candidates.float().T
    if labels is None:
        labels = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits, labels)


class DualEncoderHead(nn.Module):
    """Pool, normalise, in-batch softmax: a head without parameters (the encoder is the dual encoder).

    Inputs are the encoder's output for (batch * 2) sequences, query then candidate of each example, and
    the (batch, 2, tokens) attention mask. Returns (loss or None, embeddings of shape (batch, 2, hidden)).
    """

    def __init__(self, pooling: str = "mean", scale: float = SCALE) -> None:
        super().__init__()
        self.pooling = pooling
        self.scale = scale

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        if attention_mask.dim() != 3 or attention_mask.shape[1] != 2:
            raise ValueError("dual-encoder inputs must be (batch, 2, tokens); collate them with RetrievalOps")
        batch, _, width = attention_mask.shape
        pooled = pool(sequence_output, attention_mask.reshape(batch * 2, width), self.pooling).float()
        embeddings = F.normalize(pooled, p=2.0, dim=-1).view(batch, 2, -1)
        if labels is None:
            return None, embeddings
        return in_batch_softmax_loss(embeddings[:, 0], embeddings[:, 1], labels, self.scale), embeddings


def dual_encoder_head(spec: TaskSpec, encoder: Any, pooling: str) -> DualEncoderHead:
    """Parameter-free: pooling + in-batch softmax (the encoder is the dual encoder)."""
    return DualEncoderHead(pooling)


# ----------------------------------------------------------------------------------------------
# The retrieval family


@dataclass(frozen=True)
class RetrievalExample:
    """A query and its right candidate; ``candidate_context`` is a LAReQA candidate's paragraph (None for
    a single text); examples that share ``candidate_id`` share the candidate."""

    query: str
    candidate: str
    candidate_context: str | None
    candidate_id: str


class RetrievalOps(FamilyOps):
    """Query / candidate features for a dual encoder trained with in-batch negatives."""

    family = Family.RETRIEVAL

    def featurize(self, spec, examples, tokenizer, max_length):
        queries = tokenizer([ex.query for ex in examples], truncation=True, max_length=max_length)["input_ids"] if examples else []
        candidates = _encode_candidates(examples, tokenizer, max_length)
        return [
            {"query_ids": q, "candidate_ids": c, "candidate_id": ex.candidate_id}
            for q, c, ex in zip(queries, candidates, examples)
        ]

    @staticmethod
    def length(feature: Feature) -> int:
        return max(len(feature["query_ids"]), len(feature["candidate_ids"]))

    def collate(self, features, tokenizer, generator=None):
        rows = [ids for f in features for ids in (f["query_ids"], f["candidate_ids"])]
        input_ids, attention_mask = pad_ids(rows, tokenizer.pad_token_id)
        shape = (len(features), 2, input_ids.shape[1])
        labels = torch.arange(len(features), dtype=torch.long)
        return {"input_ids": input_ids.view(shape), "attention_mask": attention_mask.view(shape), "labels": labels}

    def predict(self, logits, batch):
        return list(logits.detach().cpu().numpy())  # (2, hidden) per example: query and candidate embeddings

    def gold(self, features):
        return [f["candidate_id"] for f in features]

    def decode(self, examples, features, outputs):
        """Per-query AP@20 (= RR@20: one right candidate) against every distinct candidate of the set."""
        gold = self.gold(features)
        first = {cid: i for i, cid in reversed(list(enumerate(gold)))}
        distinct = sorted(first.values())
        column = {gold[i]: j for j, i in enumerate(distinct)}
        queries = np.stack([out[0] for out in outputs]) if outputs else np.zeros((0, 1), dtype=np.float32)
        candidates = np.stack([outputs[i][1] for i in distinct]) if outputs else np.zeros((0, 1), dtype=np.float32)
        relevant = [[column[cid]] for cid in gold]
        return retrieval_average_precision(queries, candidates, relevant, 20).tolist(), gold


def _encode_candidates(examples: Sequence[RetrievalExample], tokenizer, max_length: int) -> list[list[int]]:
    ids: list[list[int] | None] = [None] * len(examples)
    singles = [i for i, ex in enumerate(examples) if ex.candidate_context is None]
    pairs = [i for i, ex in enumerate(examples) if ex.candidate_context is not None]
    if singles:
        encoded = tokenizer([examples[i].candidate for i in singles], truncation=True, max_length=max_length)
        for i, row in zip(singles, encoded["input_ids"]):
            ids[i] = row
    if pairs:
        encoded = tokenizer([examples[i].candidate for i in pairs], [examples[i].candidate_context for i in pairs],
                            truncation="longest_first", max_length=max_length)  # fmt: skip
        for i, row in zip(pairs, encoded["input_ids"]):
            ids[i] = row
    return ids  # type: ignore[return-value]


def _mean_ap(predictions: Sequence[float], gold: Sequence[Any]) -> dict[str, float]:
    if len(predictions) != len(gold) or not predictions:
        raise ValueError(f"{len(predictions)} per-query scores for {len(gold)} queries")
    # the builtin sum in query order, as metric_from_statistics sums the per-query rows: the bootstrap's
    # full-set score equals this one to the last bit
    return {DEV_METRIC: sum(float(value) for value in predictions) / len(predictions)}


metrics.register_metric(metrics.Metric(DEV_METRIC, _mean_ap, primary=DEV_METRIC))
metrics.register_statistics(
    DEV_METRIC,
    metrics.ExampleStatistics(
        (DEV_METRIC,), lambda p, y: [[float(v)] for v in p], lambda sums, n: {DEV_METRIC: 100.0 * (sums[..., 0] / n)}
    ),
)
FAMILY_OPS[Family.RETRIEVAL] = RetrievalOps()
register_head(Family.RETRIEVAL, dual_encoder_head)  # what models.heads.make_head builds for these tasks


# ----------------------------------------------------------------------------------------------
# Training data: SQuAD v1.1 as answer-sentence retrieval, Mewsli-X Wikipedia pairs

# A break after . ? or ! (and closing quotes / brackets), before whitespace and an opening quote, a capital
# letter or a digit; vetoed after a title, a common abbreviation or a single initial (XTREME-R's sed-style
# sb_sed.py breaker does the same with more SQuAD-specific rules).
_BREAK = re.compile(r"[.?!]['\")\]\u201d\u2019]*(?=\s+['\"(\[\u201c\u2018]?[A-Z0-9])")
_NO_BREAK_AFTER = re.compile(
    r"(?:\b(?:Mrs?|Ms|Dr|Prof|Rev|St|Sta|Mt|Ft|Jr|Sr|Lt|Gen|Col|Maj|Capt|Sgt|Gov|Sen|Rep|Pres|vs?|cf|ca?|approx|"
    r"e\.g|i\.e|a\.k\.a|etc|No|Vol|Jan|Feb|Aug|Sept?|Oct|Nov|Dec|U\.S|Bros|Inc|Co|Ltd)|(?<![\w.])[A-Z])\.$"
)


def infer_sentence_breaks(text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of the sentences of ``text`` (leading / trailing spaces excluded)."""
    spans, start = [], _skip_spaces(text, 0)
    for match in _BREAK.finditer(text):
        end = match.end()
        if end <= start or _NO_BREAK_AFTER.search(text[start:end]):
            continue
        spans.append((start, end))
        start = _skip_spaces(text, end)
    tail = text.rstrip()
    if start < len(tail):
        spans.append((start, len(tail)))
    return spans


def _skip_spaces(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def squad_retrieval_examples(qa_examples: Sequence[Any]) -> list[RetrievalExample]:
    """SQuAD questions -> (question, answer sentence + paragraph) pairs, XTREME-R's RetrievalSquadProcessor:
    the first answer; its sentence is the one whose span holds ``answer_start``; questions whose answer
    starts in no sentence, and unanswerable ones, are dropped."""
    examples: list[RetrievalExample] = []
    paragraphs: dict[str, tuple[int, list[tuple[int, int]]]] = {}  # context -> (number, sentence spans)
    for qa in qa_examples:
        if not qa.answer_starts:
            continue
        if qa.context not in paragraphs:
            paragraphs[qa.context] = (len(paragraphs), infer_sentence_breaks(qa.context))
        number, spans = paragraphs[qa.context]
        start = qa.answer_starts[0]
        found = next(((s, e) for s, e in spans if s <= start < e), None)
        if found is not None:
            sentence = qa.context[found[0] : found[1]]
            examples.append(RetrievalExample(qa.question, sentence, qa.context, f"p{number}:{found[0]}"))
    return examples


def _squad_retrieval_adapter(spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[RetrievalExample]:
    return squad_retrieval_examples(get_task("squad").load(split, language, data_dir))


def _squad_retrieval_files(spec: TaskSpec, split: str, language: str, data_dir: Path) -> list[Path]:
    return get_task("squad").data_files(split, language, data_dir) or []


_squad_retrieval_adapter.data_files = _squad_retrieval_files  # type: ignore[attr-defined]


TASKS = {
    spec.name: register(spec)
    for spec in (
        TaskSpec("squad_retrieval", Family.RETRIEVAL, ("en",), ("train", "validation"), DEV_METRIC,
                 _squad_retrieval_adapter, head="dual_encoder", test_split="validation", hub_id="rajpurkar/squad",
                 description="SQuAD v1.1 as answer-sentence retrieval (LAReQA's and XTREME-R's training data)"),
    )
}  # fmt: skip
