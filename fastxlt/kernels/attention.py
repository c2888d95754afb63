"""Public fused attention: autograd wrapper around the Triton kernels, with the torch path as fallback.

:func:`attention` is what callers use (the Hugging Face patch in :mod:`.patching` included). It
validates the arguments once, picks the implementation (:mod:`.dispatch`), and for Triton wraps
:func:`.attention_triton.attention_forward` / ``attention_backward`` in an autograd Function that
saves only q, k, v, the output and the per-row log-sum-exp.
"""

from __future__ import annotations

import torch

from fastxlt.kernels.attention_torch import as_key_mask, attention_torch
from fastxlt.kernels.dispatch import KernelError, new_seed, use_triton

try:  # Triton is optional (absent on many CPU-only installs); dispatch never picks it there
    from fastxlt.kernels.attention_triton import attention_backward, attention_forward
except ImportError:
    attention_forward = attention_backward = None


class _TritonAttention(torch.autograd.Function):
    """Autograd for the Triton kernels; the dropout seed is kept so the backward redraws the same mask."""

    @staticmethod
    def forward(ctx, q, k, v, key_mask, dropout_p: float, scale: float, seed: int):  # type: ignore[override]
        out, lse = attention_forward(q, k, v, key_mask, scale=scale, dropout_p=dropout_p, seed=seed)
        ctx.save_for_backward(q, k, v, out, lse, key_mask)
        ctx.scale, ctx.dropout_p, ctx.seed = scale, dropout_p, seed
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, out, lse, key_mask = ctx.saved_tensors
        dq, dk, dv = attention_backward(
            grad_out, q, k, v, out, lse, key_mask, scale=ctx.scale, dropout_p=ctx.dropout_p, seed=ctx.seed
        )
        return dq, dk, dv, None, None, None, None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Bidirectional attention with a key-padding mask: ``softmax(q k^T * scale) v`` per head.

    Args:
        q: ``[B, H, Tq, D]``; k, v: ``[B, H, Tk, D]`` (any strides; fp32, bf16 or fp16, all alike).
        key_padding_mask: ``[B, Tk]``, True/non-zero for real tokens (Hugging Face's
            ``attention_mask``), or None for no padding. A batch row without any real token
            yields zeros.
        dropout_p: attention-probability dropout (pass 0 in eval mode, as Hugging Face does).
        scale: score scale, default ``1/sqrt(D)``.
        backend: ``auto`` (Triton on CUDA, torch otherwise), ``triton`` or ``torch``.

    Returns:
        ``[B, H, Tq, D]`` in q's dtype.
    """
    if not 0.0 <= dropout_p < 1.0:
        raise KernelError(f"attention dropout_p must be in [0, 1), got {dropout_p}; fix the dropout probability")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if use_triton(backend, q, k, v):
        key_mask = as_key_mask(key_padding_mask, q.shape[0], k.shape[2])
        seed = new_seed() if dropout_p > 0.0 else 0
        return _TritonAttention.apply(q, k, v, key_mask, float(dropout_p), scale, seed)
    return attention_torch(q, k, v, key_padding_mask, dropout_p=dropout_p, scale=scale)
