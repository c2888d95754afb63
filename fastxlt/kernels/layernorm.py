"""Public fused residual + dropout + LayerNorm: autograd wrapper and dispatch.

:func:`residual_dropout_layernorm` replaces the three steps that end every XLM-R sub-layer
(``dropout(dense(h))``, ``+ input``, ``LayerNorm``) with one pass over the row on the GPU, and
runs the same three steps in torch elsewhere.
"""

from __future__ import annotations

import torch

from fastxlt.kernels.dispatch import KernelError, new_seed, use_triton
from fastxlt.kernels.layernorm_torch import residual_dropout_layernorm_torch

try:  # Triton is optional (absent on many CPU-only installs); dispatch never picks it there
    from fastxlt.kernels.layernorm_triton import layernorm_backward, layernorm_forward
except ImportError:
    layernorm_forward = layernorm_backward = None


class _TritonResidualLayerNorm(torch.autograd.Function):
    """Autograd for the Triton kernels; saves z, mean and 1/std (not x or the residual)."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps: float, p: float, seed: int):  # type: ignore[override]
        y, z, mean, rstd = layernorm_forward(x, residual, weight, bias, eps=eps, p=p, seed=seed)
        ctx.save_for_backward(z, weight, mean, rstd)
        ctx.p, ctx.seed, ctx.has_residual = p, seed, residual is not None
        ctx.x_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        z, weight, mean, rstd = ctx.saved_tensors
        dx, dres, dw, db = layernorm_backward(
            grad_y, z, weight, mean, rstd, has_residual=ctx.has_residual, p=ctx.p, seed=ctx.seed
        )
        dres = dres.view(ctx.x_shape) if dres is not None else None
        return dx.view(ctx.x_shape), dres, dw, db, None, None, None


def residual_dropout_layernorm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    p: float = 0.0,
    eps: float = 1e-5,
    training: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """``LayerNorm(dropout(x) + residual)`` over the last dim, with affine ``weight`` and ``bias``.

    Args:
        x: sub-layer output ``[..., H]`` (fp32, bf16 or fp16).
        residual: sub-layer input, same shape and dtype as x, or None.
        weight, bias: LayerNorm parameters ``[H]``.
        p: dropout probability on x, applied only when ``training``.
        eps: LayerNorm epsilon (XLM-R: 1e-5).
        backend: ``auto`` (Triton on CUDA, torch otherwise), ``triton`` or ``torch``.
    """
    if not 0.0 <= p < 1.0:
        raise KernelError(f"dropout p must be in [0, 1), got {p}; fix the dropout probability")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise KernelError(f"residual {tuple(residual.shape)} {residual.dtype} must match x {tuple(x.shape)} {x.dtype}")
    if weight.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
        raise KernelError(
            f"LayerNorm weight/bias must be [{x.shape[-1]}], got {tuple(weight.shape)}/{tuple(bias.shape)}"
        )
    p = float(p) if training else 0.0
    tensors = (x, weight, bias) if residual is None else (x, residual, weight, bias)
    if use_triton(backend, *tensors):
        seed = new_seed() if p > 0.0 else 0
        return _TritonResidualLayerNorm.apply(x, residual, weight, bias, float(eps), p, seed)
    return residual_dropout_layernorm_torch(x, residual, weight, bias, p=p, eps=eps, training=training)
