"""Fast dropout on the CPU: Philox keep masks, generated, compared and applied in one fused pass.

torch's CPU dropout samples every element's Bernoulli draw serially (``bernoulli_``, about 5 ns an element on 2
cores), then divides and multiplies in two more passes: 18 % of a bf16-autocast step of multilingual-e5-small once
the embedding gradient is row-sparse (issue 13's profile), more than the optimizer. :func:`fast_dropout` gives
element ``i`` the 32-bit word ``i % 4`` of Philox4x32-10 (Salmon et al., SC'11; the generator CUDA and Triton use)
at counter ``i // 4`` and a 64-bit key drawn from torch's default generator, keeps it when the word is below
``round((1 - p) * 2**32)`` (torch's keep probability to 2^-33; elements independent), and writes
``x * (keep ? 1 / (1 - p) : 0)`` and the mask in the same pass: ``fastxlt._C.dropout_forward_*`` (csrc/dropout.cpp,
OpenMP). The key comes from ``torch.manual_seed``'s generator, so the training loop's per-batch seeding governs the
masks and a resumed run redraws the same ones.

The kernel file set: the C++ kernel (csrc/dropout.cpp), its torch reference (:func:`philox_words_reference`, the
same words by int64 tensor arithmetic, which also runs wherever ``fastxlt._C`` is not built: the same masks, only
slower), the autograd wrapper (:class:`_FastDropout`), tests/test_dropout.py (Random123's known-answer vectors, C++
against the reference bit for bit, the binomial distribution of the mask, forward and backward against
``x * keep / (1 - p)``), and benchmarks/train_throughput.py's (d).

The random stream is not torch's, so a run with fast dropout has other (equally distributed) masks and ends with
other weights than one without: it is an option, ``optimization.fast_dropout``, and part of a phase's identity.

:func:`install_fast_dropout` switches a model to it: every ``nn.Dropout`` module (hidden-state and embedding dropout,
the heads' dropout), and the attention-probability dropout of transformers' BERT / RoBERTa / XLM-R self-attention,
by registering transformers' eager attention with this dropout as the attention implementation ``fastxlt_eager``.
Blocks that fastxlt's fused kernels run (``kernels``: attention, residual + dropout + LayerNorm) keep the kernels'
own dropout, and other encoder families (mT5) keep transformers' attention dropout. On a GPU the modules fall back
to torch's fused dropout, which is fast there: the option changes nothing on a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from fastxlt.kernels.patching import outermost_pretrained

ATTENTION_NAME = "fastxlt_eager"
SWITCHABLE_ATTENTION = ("sdpa", "eager")  # transformers' own implementations, which fast_eager_attention replaces
BERT_FAMILY = ("bert", "roberta", "xlm-roberta")  # model types whose eager attention fast_eager_attention reproduces
WORD = 2**32
LOW32 = WORD - 1
PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
PHILOX_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)
PHILOX_ROUNDS = 10


try:  # the C++ extension is optional (a source tree without a build): torch stands in
    from fastxlt import _C
except ImportError:
    _C = None
if not hasattr(_C, "dropout_forward_f32"):  # an extension built before the dropout kernels existed
    _C = None


# ------------------------------------------------------------------------------------------ the random words


def philox_words_reference(count: int, seed: int) -> torch.Tensor:
    """Philox4x32-10 words 0..count-1 of 64-bit key ``seed`` (int64 values in [0, 2^32)), by int64 tensor arithmetic:
    the torch reference of ``fastxlt._C.philox_words``."""
    blocks = torch.arange((count + 3) // 4, dtype=torch.int64)
    zeros = torch.zeros_like(blocks)
    words = philox4x32_reference((blocks & LOW32, blocks >> 32, zeros, zeros), (seed & LOW32, (seed >> 32) & LOW32))
    return torch.stack(words, dim=1).flatten()[:count]


def philox4x32_reference(counter: tuple[torch.Tensor, ...], key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of four int64 counter words (values < 2^32) under a two-word key."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(PHILOX_ROUNDS):
        if round_index:
            k0, k1 = (k0 + PHILOX_KEY_STEPS[0]) & LOW32, (k1 + PHILOX_KEY_STEPS[1]) & LOW32
        hi0, lo0 = _mulhilo(PHILOX_MULTIPLIERS[0], c0)
        hi1, lo1 = _mulhilo(PHILOX_MULTIPLIERS[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``a * b`` (both < 2^32) without int64 overflow: ``b`` split into 16-bit halves."""
    low_product = a * (b & 0xFFFF)  # < 2^48
    middle = a * (b >> 16) + (low_product >> 16)  # < 2^49
    return middle >> 16, ((middle & 0xFFFF) << 16) | (low_product & 0xFFFF)


def philox_words(count: int, seed: int) -> torch.Tensor:
    """The same words as :func:`philox_words_reference` (int64), from the C++ kernel when it is built."""
    if _C is None:
        return philox_words_reference(count, seed)
    return torch.from_numpy(_C.philox_words(count, seed).astype(np.int64))


def draw_seed() -> int:
    """A 64-bit Philox key from torch's default generator (so ``torch.manual_seed`` decides the masks)."""
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), None)) & (2**64 - 1)


def keep_threshold(p: float) -> int:
    """A word below this is kept: probability round((1 - p) 2^32) / 2^32."""
    return round((1.0 - p) * WORD)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, seed: int | None = None) -> torch.Tensor:
    """The boolean mask (True = kept) :func:`fast_dropout` uses for ``shape``, ``p`` and key ``seed`` (drawn from
    torch's default generator when None, as :func:`fast_dropout` draws it)."""
    seed = draw_seed() if seed is None else seed
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    return (philox_words(count, seed) < keep_threshold(p)).view(shape)


# ------------------------------------------------------------------------------------------ dropout


FUSED_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor; bfloat16 as its uint16 bit patterns."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def _masked_reference(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``x * (keep ? scale : 0)`` in fp32, rounded back to x's dtype: what the kernel computes."""
    factor = torch.where(keep, torch.tensor(scale, dtype=torch.float32), torch.tensor(0.0))
    return (x.float() * factor).to(x.dtype)


def _apply(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    kind = FUSED_DTYPES.get(x.dtype)
    if _C is None or kind is None:
        return _masked_reference(x, keep, scale)
    x = x.detach().contiguous()
    out = torch.empty_like(x)
    getattr(_C, f"dropout_apply_{kind}")(_numpy(x), _numpy(out), keep.numpy(), scale)
    return out


class _FastDropout(torch.autograd.Function):
    """``x * keep / (1 - p)``; the backward scales the incoming gradient by the same mask (kept as one byte an
    element, as torch's own dropout keeps it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        seed, threshold, scale = draw_seed(), keep_threshold(p), 1.0 / (1.0 - p)
        kind = FUSED_DTYPES.get(x.dtype)
        if _C is None or kind is None:
            keep = keep_mask(x.shape, p, seed)
            out = _masked_reference(x, keep, scale)
        else:
            source = x.detach().contiguous()
            out = torch.empty_like(source)
            keep = torch.empty(source.shape, dtype=torch.bool)
            getattr(_C, f"dropout_forward_{kind}")(_numpy(source), _numpy(out), keep.numpy(), seed, threshold, scale)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return _apply(grad, keep, ctx.scale), None


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
    for pretrained in outermost_pretrained(model):
        config = pretrained.config
        if config.model_type in BERT_FAMILY and config._attn_implementation in SWITCHABLE_ATTENTION:
            _register_attention()
            pretrained.set_attn_implementation(ATTENTION_NAME)
            switched += 1
    return {"dropout_modules": len(modules), "attention_models": switched}


def _register_attention() -> None:
    AttentionInterface.register(ATTENTION_NAME, fast_eager_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
