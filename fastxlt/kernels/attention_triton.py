"""Fused bidirectional attention with a key-padding mask, forward and backward, in Triton.

FlashAttention-2 style: each program owns a block of query rows, walks the key blocks with an
online softmax (running max and sum in fp32, base-2 exponentials), and keeps only the
log-sum-exp per row for the backward pass; the ``[T, T]`` score matrix never reaches memory.
The backward recomputes the probabilities block by block in two kernels (one per key block
for dK/dV, one per query block for dQ), so no atomics are needed and results are
deterministic.

What the kernels support, and why:

- any sequence length (masked loads on every block edge; no multiple-of-128 restriction);
- any head dim up to 256 (padded to a power of two >= 16 inside the kernel; 64 and 128 are the
  XLM-R/BERT cases);
- fp32, bf16 and fp16 inputs with fp32 accumulation (fp32 dots use ``input_precision="ieee"``
  so fp32 results match fp32 torch, not TF32);
- a key-padding mask of any pattern; the loop over keys stops at the last valid key of each
  batch row, so right-padded batches skip the padded blocks;
- attention dropout, with the keep mask regenerated in the backward from a Philox counter
  ``(row * Tk + col, batch * heads + head)`` under a per-call seed: nothing is stored.
  :func:`dropout_keep_mask` materialises the same stream for tests.

Entry points (raw tensors in, raw tensors out; autograd lives in :mod:`.attention`):
:func:`attention_forward`, :func:`attention_backward`, :func:`dropout_keep_mask`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastxlt.kernels.dispatch import KernelError, new_output, upcast_dot

LOG2E = 1.4426950408889634


@triton.jit
def _keep_mask(seed, bh, rows, cols, Tk, dropout_p):
    """Dropout keep mask of one [rows, cols] block: Philox(seed; row*Tk+col, bh, 0, 0) >= p."""
    c0 = (rows[:, None] * Tk + cols[None, :]).to(tl.uint32)
    zero = tl.zeros_like(c0)
    r0, _, _, _ = tl.philox(seed, c0, zero + bh.to(tl.uint32), zero, zero)
    return tl.uint_to_uniform_float(r0) >= dropout_p


@triton.jit
def _dropout_mask_kernel(Keep, seed, H, Tq, Tk, dropout_p, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Write the keep mask the attention kernels use, as uint8 [B*H, Tq, Tk] (tests only)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    for start in range(0, Tk, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        keep = _keep_mask(seed, bh, rows, cols, Tk, dropout_p)
        ptrs = Keep + bh * Tq * Tk + rows[:, None] * Tk + cols[None, :]
        tl.store(ptrs, keep.to(tl.uint8), mask=(rows < Tq)[:, None] & (cols < Tk)[None, :])


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, KeyMask, KvLen, Out, Lse,
    sqb, sqh, sqt, sqd,
    skb, skh, skt, skd,
    svb, svh, svt, svd,
    sob, soh, sot, sod,
    smb,
    H, Tq, Tk, qk_scale, dropout_p, inv_keep, seed,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < Tq
    dim_ok = dims < HEAD_DIM

    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :] * sqd,
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    kv_end = Tk
    if HAS_MASK:
        kv_end = tl.load(KvLen + b)
    for start in range(0, kv_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        in_range = cols < kv_end
        col_ok = in_range
        if HAS_MASK:
            col_ok = in_range & (tl.load(KeyMask + b * smb + cols, mask=in_range, other=0) != 0)
        kv_mask = in_range[:, None] & dim_ok[None, :]
        k = tl.load(K + b * skb + h * skh + cols[:, None] * skt + dims[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(V + b * svb + h * svh + cols[:, None] * svt + dims[None, :] * svd, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)

        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale  # log2 units
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet: avoid inf - inf
        p = tl.math.exp2(s - m_ref[:, None])
        alpha = tl.math.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        if HAS_DROPOUT:  # the normaliser uses undropped probabilities; only the sum over V is dropped
            p = tl.where(_keep_mask(seed, bh, rows, cols, Tk, dropout_p), p, 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new

    has_key = l_i > 0.0
    l_safe = tl.where(has_key, l_i, 1.0)
    out = acc / l_safe[:, None]
    if HAS_DROPOUT:
        out = out * inv_keep
    tl.store(Out + b * sob + h * soh + rows[:, None] * sot + dims[None, :] * sod, out.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & dim_ok[None, :])
    tl.store(Lse + bh * Tq + rows, tl.where(has_key, m_i + tl.math.log2(l_safe), 0.0), mask=row_ok)


@triton.jit
def _attn_bwd_delta_kernel(
    Out, DO, Delta,
    sob, soh, sot, sod,
    sdb, sdh, sdt, sdd,
    H, Tq,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """delta[row] = sum_d dO * O: the row term of the softmax backward (equals sum_j P dP)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    mask = (rows < Tq)[:, None] & (dims < HEAD_DIM)[None, :]
    o = tl.load(Out + b * sob + h * soh + rows[:, None] * sot + dims[None, :] * sod, mask=mask, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdt + dims[None, :] * sdd, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + bh * Tq + rows, delta, mask=rows < Tq)


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, KeyMask, KvLen, DO, Lse, Delta, DK, DV,
    sqb, sqh, sqt, sqd,
    skb, skh, skt, skd,
    svb, svh, svt, svd,
    sdb, sdh, sdt, sdd,
    sgb, sgh, sgt, sgd,
    smb,
    H, Tq, Tk, qk_scale, sm_scale, dropout_p, inv_keep, seed,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr,
):
    """One program per key block: dV = sum_rows P~^T dO, dK = scale * sum_rows dS^T Q.

    DK and DV share the strides ``sg*`` (both are allocated alike by the launcher).
    """
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIM

    kv_end = Tk
    if HAS_MASK:
        kv_end = tl.load(KvLen + b)
    in_range = cols < kv_end
    col_ok = in_range
    if HAS_MASK:
        col_ok = in_range & (tl.load(KeyMask + b * smb + cols, mask=in_range, other=0) != 0)
    kv_mask = in_range[:, None] & dim_ok[None, :]
    k = tl.load(K + b * skb + h * skh + cols[:, None] * skt + dims[None, :] * skd, mask=kv_mask, other=0.0)
    v = tl.load(V + b * svb + h * svh + cols[:, None] * svt + dims[None, :] * svd, mask=kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    # Key blocks past the last valid key get no gradient: skip the query loop for them.
    q_end = tl.where(pid_n * BLOCK_N < kv_end, Tq, 0)
    for start in range(0, q_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < Tq
        q_mask = row_ok[:, None] & dim_ok[None, :]
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :] * sqd, mask=q_mask, other=0.0)
        do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdt + dims[None, :] * sdd, mask=q_mask, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        lse = tl.load(Lse + bh * Tq + rows, mask=row_ok, other=0.0)
        delta = tl.load(Delta + bh * Tq + rows, mask=row_ok, other=0.0)

        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        p = tl.where(row_ok[:, None] & col_ok[None, :], tl.math.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        if HAS_DROPOUT:
            keep = _keep_mask(seed, bh, rows, cols, Tk, dropout_p)
            p_used = tl.where(keep, p * inv_keep, 0.0)
            dp = tl.where(keep, dp * inv_keep, 0.0)
        else:
            p_used = p
        dv += tl.dot(tl.trans(p_used).to(do.dtype), do, input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision="ieee")

    out_mask = (cols < Tk)[:, None] & dim_ok[None, :]
    offs = b * sgb + h * sgh + cols[:, None] * sgt + dims[None, :] * sgd
    tl.store(DK + offs, (dk * sm_scale).to(DK.dtype.element_ty), mask=out_mask)
    tl.store(DV + offs, dv.to(DV.dtype.element_ty), mask=out_mask)


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, KeyMask, KvLen, DO, Lse, Delta, DQ,
    sqb, sqh, sqt, sqd,
    skb, skh, skt, skd,
    svb, svh, svt, svd,
    sdb, sdh, sdt, sdd,
    sgb, sgh, sgt, sgd,
    smb,
    H, Tq, Tk, qk_scale, sm_scale, dropout_p, inv_keep, seed,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr,
):
    """One program per query block: dQ = scale * sum_keys dS K."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < Tq
    dim_ok = dims < HEAD_DIM
    q_mask = row_ok[:, None] & dim_ok[None, :]
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :] * sqd, mask=q_mask, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdt + dims[None, :] * sdd, mask=q_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(Lse + bh * Tq + rows, mask=row_ok, other=0.0)
    delta = tl.load(Delta + bh * Tq + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    kv_end = Tk
    if HAS_MASK:
        kv_end = tl.load(KvLen + b)
    for start in range(0, kv_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        in_range = cols < kv_end
        col_ok = in_range
        if HAS_MASK:
            col_ok = in_range & (tl.load(KeyMask + b * smb + cols, mask=in_range, other=0) != 0)
        kv_mask = in_range[:, None] & dim_ok[None, :]
        k = tl.load(K + b * skb + h * skh + cols[:, None] * skt + dims[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(V + b * svb + h * svh + cols[:, None] * svt + dims[None, :] * svd, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        p = tl.where(row_ok[:, None] & col_ok[None, :], tl.math.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        if HAS_DROPOUT:
            dp = tl.where(_keep_mask(seed, bh, rows, cols, Tk, dropout_p), dp * inv_keep, 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")

    dq_ptrs = DQ + b * sgb + h * sgh + rows[:, None] * sgt + dims[None, :] * sgd
    tl.store(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=q_mask)


# ------------------------------------------------------------------------------------------ launchers


def _block_config(head_dim: int, dtype: torch.dtype, backward: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages), sized to fit shared memory on A100/H100.

    fp32 blocks are smaller because each element takes twice the space and ieee fp32 dots
    run on CUDA cores, not tensor cores.
    """
    wide = head_dim > 64
    if dtype == torch.float32:
        if wide:
            return (32, 32, 4, 1) if backward else (64, 32, 4, 2)
        return (64, 64, 4, 1) if backward else (64, 64, 4, 2)
    if backward:
        return (64, 32, 8, 1) if wide else (64, 64, 4, 2)
    return (128, 64, 8, 2) if wide else (128, 64, 4, 3)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise KernelError("attention expects q, k, v shaped [batch, heads, length, head_dim]; reshape before calling")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise KernelError(f"attention got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
                          "batch, heads and head_dim must agree and k, v must have one shape")
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16) or not (q.dtype == k.dtype == v.dtype):
        raise KernelError(f"attention supports one of float32/bfloat16/float16 for q, k, v, got {q.dtype}, {k.dtype}, "
                          f"{v.dtype}; cast them to one dtype")
    if q.shape[3] > 256:
        raise KernelError(f"the Triton attention supports head_dim <= 256, got {q.shape[3]}; use backend='torch'")


def key_lengths(key_mask: torch.Tensor) -> torch.Tensor:
    """Per batch row, one past the last valid key (0 for a row without any): the loop bound."""
    positions = torch.arange(1, key_mask.shape[1] + 1, device=key_mask.device, dtype=torch.int32)
    return (key_mask.to(torch.int32) * positions).amax(dim=1).to(torch.int32)


def _mask_args(key_mask: torch.Tensor | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(uint8 mask, int32 key lengths, batch stride); dummies when there is no mask."""
    if key_mask is None:
        dummy = torch.zeros(1, dtype=torch.int32, device=device)
        return dummy, dummy, 0
    mask_u8 = key_mask.contiguous().view(torch.uint8)
    return mask_u8, key_lengths(key_mask), mask_u8.stride(0)


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    *,
    scale: float,
    dropout_p: float = 0.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the forward kernel: returns ``out`` ``[B, H, Tq, D]`` (memory laid out ``[B, Tq, H, D]``,
    what Hugging Face wants next) and the base-2 log-sum-exp ``[B*H, Tq]`` in fp32.

    ``key_mask`` is bool ``[B, Tk]`` (True = attend) or None.
    """
    _check_inputs(q, k, v)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    out = new_output((B, Tq, H, D), q.dtype, q.device).transpose(1, 2)
    lse = new_output((B * H, Tq), torch.float32, q.device)
    if Tq == 0 or B * H == 0:
        return out, lse
    mask_u8, kv_len, smb = _mask_args(key_mask, q.device)
    block_m, block_n, warps, stages = _block_config(D, q.dtype, backward=False)
    grid = (triton.cdiv(Tq, block_m), B * H)
    _attn_fwd_kernel[grid](
        q, k, v, mask_u8, kv_len, out, lse,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), smb,
        H, Tq, Tk, scale * LOG2E, dropout_p, 1.0 / (1.0 - dropout_p), seed,
        HEAD_DIM=D, BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_M=block_m, BLOCK_N=block_n,
        HAS_MASK=key_mask is not None, HAS_DROPOUT=dropout_p > 0.0, UPCAST=upcast_dot(q.dtype),
        num_warps=warps, num_stages=stages,
    )
    return out, lse


def attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    key_mask: torch.Tensor | None,
    *,
    scale: float,
    dropout_p: float = 0.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the backward kernels: returns dq, dk, dv shaped like q, k, v."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    dq = new_output((B, Tq, H, D), q.dtype, q.device).transpose(1, 2)
    dk = new_output((B, Tk, H, D), k.dtype, k.device).transpose(1, 2)
    dv = new_output((B, Tk, H, D), v.dtype, v.device).transpose(1, 2)
    if B * H == 0 or Tq == 0 or Tk == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    block_d = max(16, triton.next_power_of_2(D))
    block_m, block_n, warps, stages = _block_config(D, q.dtype, backward=True)
    mask_u8, kv_len, smb = _mask_args(key_mask, q.device)
    delta = new_output((B * H, Tq), torch.float32, q.device)
    _attn_bwd_delta_kernel[(triton.cdiv(Tq, block_m), B * H)](
        out, grad_out, delta, *out.stride(), *grad_out.stride(), H, Tq,
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=block_m,
    )
    common = dict(
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
        HAS_MASK=key_mask is not None, HAS_DROPOUT=dropout_p > 0.0, UPCAST=upcast_dot(q.dtype),
        num_warps=warps, num_stages=stages,
    )
    scalars = (H, Tq, Tk, scale * LOG2E, scale, dropout_p, 1.0 / (1.0 - dropout_p), seed)
    strides = (*q.stride(), *k.stride(), *v.stride(), *grad_out.stride())
    _attn_bwd_dkdv_kernel[(triton.cdiv(Tk, block_n), B * H)](
        q, k, v, mask_u8, kv_len, grad_out, lse, delta, dk, dv, *strides, *dk.stride(), smb, *scalars, **common
    )
    _attn_bwd_dq_kernel[(triton.cdiv(Tq, block_m), B * H)](
        q, k, v, mask_u8, kv_len, grad_out, lse, delta, dq, *strides, *dq.stride(), smb, *scalars, **common
    )
    return dq, dk, dv


def dropout_keep_mask(seed: int, batch: int, heads: int, q_len: int, kv_len: int, dropout_p: float,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The keep mask (bool ``[B, H, Tq, Tk]``) that the kernels draw for ``seed``; for tests."""
    keep = torch.zeros((batch * heads, q_len, kv_len), dtype=torch.uint8, device=device)
    if keep.numel():
        _dropout_mask_kernel[(triton.cdiv(q_len, 64), batch * heads)](
            keep, seed, heads, q_len, kv_len, dropout_p, BLOCK_M=64, BLOCK_N=64
        )
    return keep.view(batch, heads, q_len, kv_len).bool()


def default_scale(head_dim: int) -> float:
    """1/sqrt(head_dim), the scale of XLM-R and BERT."""
    return 1.0 / math.sqrt(head_dim)
