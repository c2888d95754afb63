"""Attention with a key-padding mask in plain torch: the CPU path and the test oracle.

Two functions with the contract of :func:`fastxlt.kernels.attention`:

- :func:`attention_torch` is the path that runs when Triton does not (CPU, or forced): PyTorch's
  ``scaled_dot_product_attention`` with a boolean key mask, so it gets the fused CPU kernel when
  torch has one.
- :func:`attention_reference` is the textbook definition (scores, masked softmax, optional
  explicit dropout mask, weighted sum) computed in fp32. The tests compare both the Triton
  kernel and :func:`attention_torch` with it.

Shared contract: ``q`` ``[B, H, Tq, D]``, ``k``/``v`` ``[B, H, Tk, D]``; ``key_padding_mask``
``[B, Tk]`` with True (or non-zero) for keys that may be attended to, or None; padded *queries*
are computed like any other row (as Hugging Face does); a batch row without any valid key
gives zeros instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastxlt.kernels.dispatch import KernelError


def as_key_mask(key_padding_mask: torch.Tensor | None, batch: int, kv_len: int) -> torch.Tensor | None:
    """Normalise a key-padding mask to bool ``[B, Tk]`` (True = attend), checking its shape."""
    if key_padding_mask is None:
        return None
    if tuple(key_padding_mask.shape) != (batch, kv_len):
        raise KernelError(
            f"key_padding_mask has shape {tuple(key_padding_mask.shape)}, expected {(batch, kv_len)} "
            "([batch, key length], True for real tokens); pass the 2-D attention_mask"
        )
    return key_padding_mask if key_padding_mask.dtype == torch.bool else key_padding_mask != 0


def attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    *,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """SDPA with a key-padding mask; rows of the batch without any valid key return zeros."""
    mask = as_key_mask(key_padding_mask, q.shape[0], k.shape[2])
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    has_key = mask.any(dim=1)
    # A row with no valid key would be all -inf (NaN after softmax); let it attend to everything
    # and zero its output below, which also zeroes its gradients.
    safe = mask | ~has_key[:, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :], dropout_p=dropout_p, scale=scale)
    return out * has_key[:, None, None, None].to(out.dtype)


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    *,
    scale: float | None = None,
    keep: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The definition, in fp32: softmax(q k^T * scale, masked) [* keep / (1 - p)] @ v.

    ``keep`` is an explicit dropout mask ``[B, H, Tq, Tk]`` (True = kept), so that a kernel's own
    random stream can be checked exactly.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    mask = as_key_mask(key_padding_mask, q.shape[0], k.shape[2])
    if mask is not None:
        has_key = mask.any(dim=1)
        safe = mask | ~has_key[:, None]  # rows without keys: softmax over all, then zeroed
        scores = scores.masked_fill(~safe[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if mask is not None:
        probs = probs * has_key[:, None, None, None].to(probs.dtype)
    if keep is not None:
        probs = probs * keep.to(probs.dtype) / (1.0 - dropout_p)
    return torch.matmul(probs, v.float()).to(q.dtype)
