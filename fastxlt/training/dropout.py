"""Fast dropout on the CPU: keep masks cut from 64-bit random words, one 32-bit word per element.

torch's CPU dropout samples every element's Bernoulli draw on its own (``bernoulli_``, about 5 ns an element on
2 cores): 18 % of a bf16-autocast step of multilingual-e5-small once the embedding gradient is row-sparse (issue 13's
profile), more than the optimizer. :func:`fast_dropout` instead fills a buffer with full-range 64-bit integers from
torch's own generator (``random_``), reads it as 32-bit words and keeps an element when its word is below
``round((1 - p) * 2**32)``: independent elements, torch's keep probability to 2^-33, masks about 4x faster. The
generator is torch's default one, so ``torch.manual_seed`` governs the masks and a resumed run redraws the same ones.

The random stream is not torch's, so a run with fast dropout has other (equally distributed) masks and ends with
other weights than one without: it is an option, ``optimization.fast_dropout``, and part of a phase's identity.

:func:`install_fast_dropout` switches a model to it: every ``nn.Dropout`` module (hidden-state and embedding dropout,
the heads' dropout), and the attention-probability dropout of transformers' BERT / RoBERTa / XLM-R self-attention,
by registering transformers' eager attention with this dropout as the attention implementation ``fastxlt_eager``.
Attention that fastxlt's fused kernels run (``kernels``) keeps the kernels' own dropout, and other encoder families
(mT5) keep transformers' attention dropout. On a GPU the modules fall back to torch's fused dropout, which is fast
there: the option changes nothing on a GPU.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTENTION_NAME = "fastxlt_eager"
SWITCHABLE_ATTENTION = ("sdpa", "eager")  # transformers' own implementations, which fast_eager_attention replaces
BERT_FAMILY = ("bert", "roberta", "xlm-roberta")  # model types whose eager attention fast_eager_attention reproduces
WORD_BITS = 32


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean mask, True where an element is kept (probability ``1 - p``), from torch's default generator."""
    count = 1
    for size in shape:
        count *= size
    words = torch.empty((count + 1) // 2, dtype=torch.int64, device=device).random_(-(2**63), None)
    threshold = round((1.0 - p) * 2**WORD_BITS) - 2 ** (WORD_BITS - 1)  # in the signed range of an int32 word
    return (words.view(torch.int32)[:count] < threshold).view(shape)


class _FastDropout(torch.autograd.Function):
    """``x * keep / (1 - p)``; the backward scales the incoming gradient by the same mask (kept as one byte an
    element, as torch's own dropout keeps it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        keep = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout with :func:`keep_mask` on a CPU; ``torch.nn.functional.dropout`` elsewhere, at ``p = 0`` or in eval."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    return _FastDropout.apply(x, p)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with :func:`fast_dropout` (installed by swapping a module's class: no state changes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def fast_eager_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                         **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager self-attention of BERT / XLM-R (additive mask, softmax, dropout, weighted sum), with the
    probabilities' dropout drawn by :func:`fast_dropout`."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = fast_dropout(nn.functional.softmax(scores, dim=-1), dropout, module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def install_fast_dropout(model: nn.Module) -> dict[str, int]:
    """Switch ``model``'s dropout to :func:`fast_dropout`; returns how many modules and models were switched."""
    modules = [m for m in model.modules() if type(m) is nn.Dropout]
    for module in modules:
        module.__class__ = FastDropout
    switched = 0
    for pretrained in _outermost_pretrained(model):
        config = pretrained.config
        if config.model_type in BERT_FAMILY and config._attn_implementation in SWITCHABLE_ATTENTION:
            _register_attention()
            pretrained.set_attn_implementation(ATTENTION_NAME)
            switched += 1
    return {"dropout_modules": len(modules), "attention_models": switched}


def _register_attention() -> None:
    AttentionInterface.register(ATTENTION_NAME, fast_eager_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


def _outermost_pretrained(model: nn.Module) -> list[PreTrainedModel]:
    """The outermost PreTrainedModels in ``model`` (``set_attn_implementation`` recurses into nested ones)."""
    if isinstance(model, PreTrainedModel):
        return [model]
    found: list[PreTrainedModel] = []
    for child in model.children():
        found += _outermost_pretrained(child)
    return found
