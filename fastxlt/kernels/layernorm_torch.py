"""Residual + dropout + LayerNorm (post-LN, as in XLM-R and BERT) in plain torch: CPU path and oracle.

Contract shared with the Triton kernel: ``y = LayerNorm(dropout(x) + residual) * weight + bias``
over the last dimension, where ``x`` is the sub-layer output (attention projection or FFN),
``residual`` the sub-layer input (or None), dropout active only when ``training`` and ``p > 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def residual_dropout_layernorm_torch(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    p: float = 0.0,
    eps: float = 1e-5,
    training: bool = False,
) -> torch.Tensor:
    """The unfused sequence Hugging Face runs (``dropout``, add, ``layer_norm``); the CPU path."""
    z = F.dropout(x, p=p, training=training) if p > 0.0 else x
    if residual is not None:
        z = z + residual
    return F.layer_norm(z, (z.shape[-1],), weight, bias, eps)


def residual_dropout_layernorm_reference(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    eps: float = 1e-5,
    keep: torch.Tensor | None = None,
    p: float = 0.0,
) -> torch.Tensor:
    """The definition written out in fp32 with an explicit dropout keep mask (True = kept), for tests."""
    z = x.float()
    if keep is not None:
        z = z * keep.to(z.dtype) / (1.0 - p)
    if residual is not None:
        z = z + residual.float()
    mean = z.mean(dim=-1, keepdim=True)
    var = ((z - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (z - mean) * torch.rsqrt(var + eps) * weight.float() + bias.float()
    return y.to(x.dtype)
