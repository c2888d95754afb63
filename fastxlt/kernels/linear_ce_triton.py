"""The per-chunk steps of the fused linear + cross-entropy as Triton kernels.

The matrix products stay with cuBLAS (torch); what Triton fuses is everything between them,
which in the unfused pair is a string of full-size passes over the logits (``log_softmax``,
``nll_loss``, their backward). Here each row of a vocabulary chunk is read once per pass:

- :func:`lse_update`: online log-sum-exp over the chunk (block max, rescaled sum, fp32),
  merged into the row's running state, plus the target logit and the logit sum;
- :func:`grad_inplace`: ``scale * (exp(z - lse) - eps / V - (1 - eps) [col == label])``
  written over the logits in place (the chunk buffer becomes dlogits, no new allocation).

Same contract as :mod:`.linear_ce_torch`; row offsets are computed in int64 because
``rows x chunk`` passes 2**31 at XLM-R sizes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastxlt.kernels.dispatch import interpreting


@triton.jit
def _lse_update_kernel(
    Logits, Labels, M, S, ZY, ZSUM,
    n_rows, stride_row, v0, width,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    base = Logits + rows.to(tl.int64)[:, None] * stride_row
    local = tl.load(Labels + rows, mask=row_ok, other=0) - v0
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_R], tl.float32)
    zy = tl.zeros([BLOCK_R], tl.float32)
    zsum = tl.zeros([BLOCK_R], tl.float32)
    for start in range(0, width, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        ok = row_ok[:, None] & (cols < width)[None, :]
        z = tl.load(base + cols[None, :], mask=ok, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows past the end: no inf - inf
        s = s * tl.exp(m - m_ref) + tl.sum(tl.exp(z - m_ref[:, None]), 1)
        m = m_new
        zsum += tl.sum(tl.where(ok, z, 0.0), 1)
        zy += tl.sum(tl.where(ok & (cols[None, :] == local[:, None]), z, 0.0), 1)  # label may sit past the chunk
    m_old = tl.load(M + rows, mask=row_ok, other=0.0)
    s_old = tl.load(S + rows, mask=row_ok, other=0.0)
    m_tot = tl.maximum(m_old, m)
    m_tot_ref = tl.where(m_tot == float("-inf"), 0.0, m_tot)
    tl.store(S + rows, s_old * tl.exp(m_old - m_tot_ref) + s * tl.exp(m - m_tot_ref), mask=row_ok)
    tl.store(M + rows, m_tot, mask=row_ok)
    tl.store(ZY + rows, tl.load(ZY + rows, mask=row_ok, other=0.0) + zy, mask=row_ok)
    tl.store(ZSUM + rows, tl.load(ZSUM + rows, mask=row_ok, other=0.0) + zsum, mask=row_ok)


@triton.jit
def _grad_kernel(
    Logits, Labels, Lse,
    n_rows, stride_row, v0, width, smooth_per_class, target_weight, scale,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    base = Logits + rows.to(tl.int64)[:, None] * stride_row
    local = tl.load(Labels + rows, mask=row_ok, other=0) - v0
    lse = tl.load(Lse + rows, mask=row_ok, other=0.0)
    for start in range(0, width, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        ok = row_ok[:, None] & (cols < width)[None, :]
        z = tl.load(base + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        g = tl.exp(z - lse[:, None]) - smooth_per_class
        g = tl.where(cols[None, :] == local[:, None], g - target_weight, g)
        tl.store(base + cols[None, :], (g * scale).to(Logits.dtype.element_ty), mask=ok)


def _launch(width: int) -> tuple[int, int, int]:
    """(BLOCK_R rows, BLOCK_V columns, num_warps) for a chunk width.

    Compiled: one row per program, up to 8K columns per step (rows are long). Interpreted: tiles
    of about 32K logits, since the interpreter pays per operation, not per element.
    """
    if interpreting():
        block = min(triton.next_power_of_2(max(width, 16)), 4096)
        return max(1, 32768 // block), block, 4
    block = min(triton.next_power_of_2(max(width, 16)), 8192)
    return 1, block, (16 if block >= 4096 else 8 if block >= 1024 else 4)


def lse_update(
    logits: torch.Tensor,
    labels: torch.Tensor,
    v0: int,
    m: torch.Tensor,
    s: torch.Tensor,
    zy: torch.Tensor,
    zsum: torch.Tensor,
) -> None:
    """Triton twin of :func:`fastxlt.kernels.linear_ce_torch.lse_update`."""
    rows, width = logits.shape
    if rows == 0:
        return
    block_r, block_v, warps = _launch(width)
    _lse_update_kernel[(triton.cdiv(rows, block_r),)](
        logits, labels, m, s, zy, zsum, rows, logits.stride(0), v0, width,
        BLOCK_R=block_r, BLOCK_V=block_v, num_warps=warps,
    )


def grad_inplace(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    v0: int,
    vocab: int,
    smoothing: float,
    scale: float,
) -> None:
    """Triton twin of :func:`fastxlt.kernels.linear_ce_torch.grad_inplace`."""
    rows, width = logits.shape
    if rows == 0:
        return
    block_r, block_v, warps = _launch(width)
    _grad_kernel[(triton.cdiv(rows, block_r),)](
        logits, labels, lse, rows, logits.stride(0), v0, width, smoothing / vocab, 1.0 - smoothing, scale,
        BLOCK_R=block_r, BLOCK_V=block_v, num_warps=warps,
    )
