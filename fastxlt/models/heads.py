"""Task heads, one per family, each a small module on top of the encoder's last hidden states.

Heads are task-specific and never leave their phase: only the encoder is handed from the
intermediate phase to the target phase (DESIGN.md). Every head returns ``(loss, logits)``; the loss
is None when no labels are given.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fastxlt.kernels import linear_cross_entropy
from fastxlt.tasks.base import Family, TaskSpec
from fastxlt.tasks.tagging import tag_names

POOLINGS = ("cls", "mean")
MLM_LOSS_BACKENDS = ("auto", "triton", "torch", "none")  # MaskedLMHead.kernel_backend; "none" = unfused


class ClassificationHead(nn.Module):
    """Sentence(-pair) classification, as XLM-R's own classification head.

    ``pooling="cls"`` reads the first token (``<s>``), the reference implementation's choice;
    ``"mean"`` averages the non-padding tokens, which helps encoders whose first token was never
    trained as a summary (the embedded default's tiny MLM-only model, multilingual-e5) and is the
    only choice for the mT5 encoder, which has no CLS token (``fastxlt.models.family``).
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling '{pooling}'; choose {' or '.join(POOLINGS)}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        pooled = self.dropout(pool(sequence_output, attention_mask, self.pooling))
        pooled = self.dropout(torch.tanh(self.dense(pooled)))
        logits = self.out_proj(pooled)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return loss, logits


def pool(sequence_output: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return sequence_output[:, 0]
    mask = attention_mask.unsqueeze(-1).to(sequence_output.dtype)
    return (sequence_output * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MaskedLMHead(nn.Module):
    """XLM-R's MLM head (dense, GELU, LayerNorm, decoder tied to the word embeddings).

    With labels, the loss goes through the chunked linear + cross-entropy of
    ``fastxlt.kernels.linear_cross_entropy`` on every device, whatever the experiment's ``kernels:``
    says: at XLM-R's 250,002-piece vocabulary the unfused pair materialises (tokens x vocabulary)
    fp32 logits plus their softmax gradient (4 GB each at 4,096 tokens), and the chunked path gives
    the same loss and gradients (to fp32 rounding) while skipping the 85 % of positions that carry no
    label. ``kernel_backend`` picks the implementation:

    - ``"auto"`` (default): Triton on CUDA tensors, the torch chunk loop elsewhere (resolved per call
      from the tensors' device, ``fastxlt.kernels.dispatch.use_triton``);
    - ``"triton"`` / ``"torch"``: force one implementation (``kernels: triton|torch`` sets these);
    - ``"none"``: the explicit opt-out, the unfused ``F.cross_entropy(F.linear(...))`` (the reference
      the tests compare against; for debugging or comparing memory, as ``benchmarks/train_throughput.py``
      does). Set it with ``MaskedLMHead(..., kernel_backend="none")`` or ``head.kernel_backend = "none"``.

    Logits are only returned when no labels are given.
    """

    def __init__(
        self, hidden_size: int, word_embeddings: nn.Embedding, layer_norm_eps: float, kernel_backend: str = "auto"
    ) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.word_embeddings = [word_embeddings]  # a list: tied, not registered twice as a submodule
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))
        self.kernel_backend = kernel_backend

    @property
    def kernel_backend(self) -> str:
        return self._kernel_backend

    @kernel_backend.setter
    def kernel_backend(self, value: str) -> None:
        name = str(value).strip().lower()
        if name not in MLM_LOSS_BACKENDS:
            raise ValueError(f"kernel_backend={value!r} is not one of {', '.join(MLM_LOSS_BACKENDS)}")
        self._kernel_backend = name

    @property
    def decoder_weight(self) -> torch.Tensor:
        return self.word_embeddings[0].weight

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        hidden = self.layer_norm(F.gelu(self.dense(sequence_output)))
        if labels is None:
            return None, F.linear(hidden, self.decoder_weight, self.bias)
        if self.kernel_backend == "none":
            logits = F.linear(hidden, self.decoder_weight, self.bias)
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1)), None

        loss = linear_cross_entropy(
            hidden.reshape(-1, hidden.shape[-1]), self.decoder_weight, self.bias, labels.reshape(-1),
            backend=self.kernel_backend,
        )
        return loss, None


class SpanHead(nn.Module):
    """Extractive QA: a start and an end logit per token (the reference ``...ForQuestionAnswering``).

    ``labels`` is (batch, 2): the start and end token of the answer, 0 (``<s>``) when the window
    holds no answer. The loss is the mean of the start and end cross-entropies over all positions,
    padding included, as in the reference implementation; positions beyond the sequence are ignored.
    Returns logits of shape (batch, tokens, 2).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits = self.qa_outputs(sequence_output)
        if labels is None:
            return None, logits
        length = logits.shape[1]
        positions = labels.clamp(0, length)  # out-of-range positions -> ignore_index, as the reference
        start_loss = F.cross_entropy(logits[..., 0].float(), positions[:, 0], ignore_index=length)
        end_loss = F.cross_entropy(logits[..., 1].float(), positions[:, 1], ignore_index=length)
        return (start_loss + end_loss) / 2, logits


class TokenTaggingHead(nn.Module):
    """One tag distribution per token (the reference ``...ForTokenClassification``: dropout + linear).

    ``labels`` is (batch, tokens) with -100 on every token that is not the first subword of a word;
    cross-entropy ignores them. Returns logits of shape (batch, tokens, tags).
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits = self.classifier(self.dropout(sequence_output))
        if labels is None:
            return None, logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return loss, logits


class MultipleChoiceHead(nn.Module):
    """One score per (context, choice) pair, cross-entropy over the choices of an example.

    The encoder sees the pairs flattened to (batch * choices, tokens) (``TransferModel.forward``);
    ``attention_mask`` keeps its (batch, choices, tokens) shape so that the scores can be put back
    as (batch, choices). As ``XLMRobertaForMultipleChoice``: the first token through a dense + tanh
    pooler, dropout, and a linear layer to one score. The pooler is part of the head because the
    hand-off between phases carries the encoder alone and an encoder's own pooler may be untrained.
    """

    def __init__(self, hidden_size: int, dropout: float, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling '{pooling}'; choose {' or '.join(POOLINGS)}")
        self.pooling = pooling
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)

    def forward(
        self, sequence_output: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        if attention_mask.dim() != 3:
            raise ValueError("multiple-choice inputs must be (batch, choices, tokens); collate them with MultipleChoiceOps")
        batch, choices, length = attention_mask.shape
        pooled = pool(sequence_output, attention_mask.reshape(batch * choices, length), self.pooling)
        pooled = self.dropout(torch.tanh(self.dense(pooled)))
        logits = self.scorer(pooled).view(batch, choices)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return loss, logits


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


def make_head(spec: TaskSpec, encoder: nn.Module, pooling: str = "cls") -> nn.Module:
    """The head for a task's family, sized from the encoder's config."""
    config = encoder.config
    dropout = getattr(config, "classifier_dropout", None)
    if dropout is None:
        dropout = getattr(config, "hidden_dropout_prob", 0.1)
    if spec.family is Family.PAIR_CLASSIFICATION:
        return ClassificationHead(config.hidden_size, spec.num_labels, dropout, pooling)
    if spec.family is Family.MASKED_LM:
        return MaskedLMHead(config.hidden_size, encoder.get_input_embeddings(), getattr(config, "layer_norm_eps", 1e-5))
    if spec.family is Family.SPAN_QA:
        return SpanHead(config.hidden_size)
    if spec.family is Family.TOKEN_TAGGING:
        return TokenTaggingHead(config.hidden_size, len(tag_names(spec)), dropout)
    if spec.family is Family.MULTIPLE_CHOICE:
        return MultipleChoiceHead(config.hidden_size, dropout, pooling)
    if spec.family is Family.RETRIEVAL:  # parameter-free: pooling + in-batch softmax (the encoder is the dual encoder)
        return DualEncoderHead(pooling)
    raise NotImplementedError(f"task '{spec.name}': family '{spec.family.value}' has no head yet")
