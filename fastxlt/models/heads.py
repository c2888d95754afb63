"""The masked-LM head, and ``make_head``: the head of a task's family, from the head registry.

Every other head lives in its family's module (``fastxlt.tasks.pair_classification``, ``.span_qa``,
``.tagging``, ``.multiple_choice``, the retrieval family's ``fastxlt.retrieval.dual_encoder``) and registers
its factory in ``fastxlt.tasks.head_registry`` when imported. The masked-LM head stays here because its loss
is the fused kernel of ``fastxlt.kernels``, which the task modules may not import (docs/design.md, "Layers":
models -> kernels is allowed, tasks -> kernels is not), and the family has no task module of its own.

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
from fastxlt.tasks.head_registry import head_factory, register_head

MLM_LOSS_BACKENDS = ("auto", "triton", "torch", "none")  # MaskedLMHead.kernel_backend; "none" = unfused


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


def masked_lm_head(spec: TaskSpec, encoder: nn.Module, pooling: str) -> MaskedLMHead:
    """Tied to the encoder's word embeddings."""
    config = encoder.config
    return MaskedLMHead(config.hidden_size, encoder.get_input_embeddings(), getattr(config, "layer_norm_eps", 1e-5))


register_head(Family.MASKED_LM, masked_lm_head)


def make_head(spec: TaskSpec, encoder: nn.Module, pooling: str = "cls") -> nn.Module:
    """The head for a task's family, sized from the encoder's config (the family's registered factory)."""
    return head_factory(spec)(spec, encoder, pooling)
