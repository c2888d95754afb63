"""Fused linear + cross-entropy: the vocabulary projection and the loss without the full logits.

XLM-R's MLM head projects every hidden state onto 250,002 word embeddings; at 4,096 tokens the
fp32 logits alone are 4.1 GB, and ``F.cross_entropy`` plus its backward keep two or three more
tensors of that size alive. :func:`linear_cross_entropy` never builds them:

1. rows whose label is ``ignore_index`` (85% of MLM positions) are dropped before any product;
2. pass 1 walks the vocabulary in chunks of ``chunk_size`` columns: logits of the chunk
   (``h @ W[v0:v1]^T + b[v0:v1]``, one cuBLAS/MKL product), folded into a running fp32
   log-sum-exp per row, plus the target logit and the logit sum (label smoothing);
3. when gradients are needed, pass 2 recomputes each chunk, turns it into dlogits in place and
   immediately contracts it: ``dH += G W_c``, ``dW[v0:v1] = G^T H``, ``db[v0:v1] = sum G``.
   Chunking the vocabulary (not the tokens) means each slice of dW is written once, in the
   weight's dtype, with no fp32 copy of the 250k x H weight gradient.

The gradients are computed during the forward (the loss is a scalar, so the backward only
scales them by the incoming gradient); peak extra memory is one chunk ``[tokens, chunk]``
plus the gradients themselves. Cost: four products instead of three (the recomputation).

The per-chunk steps run as Triton kernels (:mod:`.linear_ce_triton`) or torch ops
(:mod:`.linear_ce_torch`); everything else here is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

import fastxlt.kernels.linear_ce_torch as linear_ce_torch
from fastxlt.kernels.dispatch import KernelError, new_output, use_triton

try:  # Triton is optional (absent on many CPU-only installs); dispatch never picks it there
    import fastxlt.kernels.linear_ce_triton as linear_ce_triton
except ImportError:
    linear_ce_triton = None

REDUCTIONS = ("mean", "sum")
_CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 64 MiB in fp32


@dataclass(frozen=True)
class _Options:
    ignore_index: int
    reduction: str
    smoothing: float
    chunk_size: int | None
    triton: bool


def _chunk_width(rows: int, vocab: int, requested: int | None) -> int:
    """Vocabulary columns per chunk: as asked, or about 16M logits per chunk (multiple of 128)."""
    if requested is not None:
        return max(1, min(int(requested), vocab))
    width = _CHUNK_ELEMENTS // max(rows, 1)
    return max(128, min(vocab, width // 128 * 128))


def _ops(triton: bool) -> ModuleType:
    return linear_ce_triton if triton else linear_ce_torch


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """Products run in the autocast dtype when autocast is on for the device, else in hidden's dtype."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, v0: int, v1: int) -> torch.Tensor:
    """``h @ W[v0:v1]^T + b[v0:v1]`` in h's dtype: one fresh ``[n, v1 - v0]`` buffer."""
    w = weight[v0:v1].to(h.dtype)
    if bias is None:
        return torch.mm(h, w.t())
    return torch.addmm(bias[v0:v1].to(h.dtype), h, w.t())


def _row_losses(h, weight, bias, y, opts, ops, width):
    """Pass 1: per-row loss and log-sum-exp (fp32)."""
    n, vocab = h.shape[0], weight.shape[0]
    m = torch.full((n,), float("-inf"), dtype=torch.float32, device=h.device)
    s = torch.zeros(n, dtype=torch.float32, device=h.device)
    zy = torch.zeros_like(s)
    zsum = torch.zeros_like(s)
    for v0 in range(0, vocab, width):
        ops.lse_update(_chunk_logits(h, weight, bias, v0, min(v0 + width, vocab)), y, v0, m, s, zy, zsum)
    lse = m + torch.log(s)
    losses = lse - (1.0 - opts.smoothing) * zy - (opts.smoothing / vocab) * zsum
    return losses, lse


def _gradients(h, weight, bias, y, lse, scale, needs, opts, ops, width):
    """Pass 2: dH (fp32, valid rows), dW and db (their own dtypes), chunk by chunk."""
    n, vocab = h.shape[0], weight.shape[0]
    need_h, need_w, need_b = needs
    dh = torch.zeros((n, h.shape[1]), dtype=torch.float32, device=h.device) if need_h else None
    dw = new_output(weight.shape, weight.dtype, weight.device) if need_w else None
    db = new_output(bias.shape, bias.dtype, bias.device) if need_b else None
    for v0 in range(0, vocab, width):
        v1 = min(v0 + width, vocab)
        g = _chunk_logits(h, weight, bias, v0, v1)
        ops.grad_inplace(g, y, lse, v0, vocab, opts.smoothing, scale)
        if dh is not None:
            w = weight[v0:v1].to(g.dtype)
            dh.addmm_(g, w) if g.dtype == dh.dtype else dh.add_(torch.mm(g, w))
        if dw is not None:
            if dw.dtype == g.dtype:
                torch.mm(g.t(), h, out=dw[v0:v1])
            else:
                dw[v0:v1].copy_(torch.mm(g.t(), h))
        if db is not None:
            db[v0:v1].copy_(torch.sum(g, dim=0, dtype=torch.float32))
    return dh, dw, db


def _labelled_rows(labels1d: torch.Tensor, vocab: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the rows that carry a label, and those labels (int64), checked against the vocabulary."""
    rows = (labels1d != ignore_index).nonzero().squeeze(1)
    y = labels1d.index_select(0, rows).long()
    if y.numel() and bool(((y < 0) | (y >= vocab)).any()):
        raise KernelError(f"labels must be in [0, {vocab}) or equal ignore_index={ignore_index}; fix the labels")
    return rows, y


def _fused(hidden2d, weight, bias, labels1d, opts: _Options, needs: tuple[bool, bool, bool]):
    """Loss and (if asked) gradients for flat inputs; returns (loss, (dhidden, dweight, dbias)).

    No labelled row is not a special case: every product is then empty, the sum is 0 and the
    mean 0/0 = NaN, as with ``F.cross_entropy``.
    """
    rows, y = _labelled_rows(labels1d, weight.shape[0], opts.ignore_index)
    n = rows.numel()
    dtype = _compute_dtype(hidden2d)
    with torch.autocast(hidden2d.device.type, enabled=False):
        h = hidden2d if n == hidden2d.shape[0] else hidden2d.index_select(0, rows)
        h = h.to(dtype)
        ops, width = _ops(opts.triton), _chunk_width(n, weight.shape[0], opts.chunk_size)
        losses, lse = _row_losses(h, weight, bias, y, opts, ops, width)
        loss = losses.sum() / n if opts.reduction == "mean" else losses.sum()
        if not any(needs):
            return loss, (None, None, None)
        scale = 1.0 / max(n, 1) if opts.reduction == "mean" else 1.0
        dh, dw, db = _gradients(h, weight, bias, y, lse, scale, needs, opts, ops, width)
    dhidden = None
    if dh is not None:
        dhidden = torch.zeros_like(hidden2d)
        dhidden.index_copy_(0, rows, dh.to(hidden2d.dtype))
    return loss, (dhidden, dw, db)


class _LinearCrossEntropy(torch.autograd.Function):
    """Autograd shell: gradients come out of the forward and are scaled by the incoming scalar."""

    @staticmethod
    def forward(ctx, hidden2d, weight, bias, labels1d, opts: _Options):  # type: ignore[override]
        needs = (hidden2d.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
        loss, grads = _fused(hidden2d, weight, bias, labels1d, opts, needs)
        ctx.grads = grads
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy's backward can run only once (its gradients are precomputed)")
        grads, ctx.grads = ctx.grads, None
        dh, dw, db = (g.mul_(grad_loss.to(g.dtype)) if g is not None else None for g in grads)
        return dh, dw, db, None, None


def _check(hidden, weight, bias, labels, reduction, label_smoothing):
    if reduction not in REDUCTIONS:
        raise KernelError(f"reduction={reduction!r} is not supported; use one of {', '.join(REDUCTIONS)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise KernelError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise KernelError(f"weight must be [vocab, {hidden.shape[-1]}], got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise KernelError(f"bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    if labels.shape != hidden.shape[:-1] or labels.dtype.is_floating_point:
        raise KernelError(f"labels must be integer class ids shaped {tuple(hidden.shape[:-1])}, "
                          f"got {labels.dtype} {tuple(labels.shape)}")


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T + bias, labels)`` without materialising the logits.

    Args:
        hidden: ``[N, H]`` or ``[B, T, H]`` (fp32, bf16 or fp16).
        weight: ``[V, H]`` (e.g. the tied word embeddings); bias ``[V]`` or None.
        labels: ``[N]`` or ``[B, T]`` class ids; ``ignore_index`` rows add nothing.
        reduction: ``mean`` (over non-ignored rows; NaN if there are none, as in torch) or ``sum``.
        label_smoothing: as in ``F.cross_entropy`` (uniform over the V classes).
        chunk_size: vocabulary columns per chunk (default: about 16M logits per chunk).
        backend: ``auto`` (Triton on CUDA, torch otherwise), ``triton`` or ``torch``.

    Returns:
        The loss as an fp32 scalar (it sums many tokens), differentiable w.r.t. hidden, weight, bias.
    """
    _check(hidden, weight, bias, labels, reduction, label_smoothing)
    if chunk_size is not None and chunk_size < 1:
        raise KernelError(f"chunk_size must be >= 1, got {chunk_size}")
    opts = _Options(ignore_index, reduction, float(label_smoothing), chunk_size, use_triton(backend, hidden, weight))
    hidden2d = hidden.reshape(-1, hidden.shape[-1])
    labels1d = labels.reshape(-1)
    tracked = (hidden, weight) if bias is None else (hidden, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tracked):
        return _LinearCrossEntropy.apply(hidden2d, weight, bias, labels1d, opts)
    return _fused(hidden2d, weight, bias, labels1d, opts, (False, False, False))[0]


def logits_bytes(tokens: int, vocab: int, dtype: torch.dtype = torch.float32) -> int:
    """Size of the logits tensor the fused op avoids (for docs and the benchmark)."""
    return tokens * vocab * (torch.finfo(dtype).bits // 8)


__all__ = ["linear_cross_entropy", "logits_bytes", "REDUCTIONS"]
