"""Fused residual + dropout + LayerNorm (post-LN), forward and backward, in Triton.

One program normalises a tile of rows in a single pass over registers: dropout (Philox keep
mask from ``(seed; col, row)``, regenerated in the backward, never stored), the residual add,
mean and variance in fp32, scale and shift. The forward saves the pre-norm sum ``z`` (what
``nn.LayerNorm`` would have saved as its input) plus mean and 1/std per row.

The backward gives the gradients of x (through the dropout mask), of the residual, and of the
LayerNorm weight and bias. Weight and bias gradients are column sums over all rows: each
program accumulates its own slice of rows in fp32 and writes one partial row; torch adds the
partials, which keeps the result deterministic (no atomics).

Rows can be any width up to 16,384 (1023, 768 and 1024 all work: the block is padded to a
power of two and masked).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastxlt.kernels.dispatch import KernelError, interpreting, new_output

MAX_WIDTH = 16384


@triton.jit
def _tile_keep(seed, rows, cols, p):
    """Dropout keep mask of a [rows, cols] tile: Philox(seed; col, row, 0, 0) >= p."""
    c0 = (rows[:, None] * 0 + cols[None, :]).to(tl.uint32)
    zero = tl.zeros_like(c0)
    c1 = zero + rows[:, None].to(tl.uint32)
    r0, _, _, _ = tl.philox(seed, c0, c1, zero, zero)
    return tl.uint_to_uniform_float(r0) >= p


@triton.jit
def _ln_fwd_kernel(
    X, R, W, B, Y, Z, Mean, Rstd,
    sx, sr, sy, sz,
    N, H, eps, p, inv_keep, seed,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rows64 = rows.to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_H)
    col_ok = cols < H
    ok = (rows < N)[:, None] & col_ok[None, :]
    x = tl.load(X + rows64 * sx + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    if HAS_DROPOUT:
        x = tl.where(_tile_keep(seed, rows, cols, p), x * inv_keep, 0.0)
    z = x
    if HAS_RESIDUAL:
        z += tl.load(R + rows64 * sr + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    mean = tl.sum(z, 1) / H
    centred = tl.where(ok, z - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, 1) / H + eps)
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + rows64 * sy + cols[None, :], y.to(Y.dtype.element_ty), mask=ok)
    tl.store(Z + rows64 * sz + cols[None, :], z.to(Z.dtype.element_ty), mask=ok)
    tl.store(Mean + rows, mean, mask=rows < N)
    tl.store(Rstd + rows, rstd, mask=rows < N)


@triton.jit
def _ln_bwd_kernel(
    DY, Z, W, Mean, Rstd, DX, DR, DWp, DBp,
    sdy, sz, sdx, sdr,
    N, H, rows_per_program, p, inv_keep, seed,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
):
    """Each program walks its rows in tiles of BLOCK_R and writes one partial row of dW and dB."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    col_ok = cols < H
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_H], tl.float32)
    db = tl.zeros([BLOCK_H], tl.float32)
    first = pid * rows_per_program
    last = tl.minimum(first + rows_per_program, N)
    for start in range(first, last, BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        row_ok = rows < last
        rows64 = rows.to(tl.int64)[:, None]
        ok = row_ok[:, None] & col_ok[None, :]
        dy = tl.load(DY + rows64 * sdy + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        z = tl.load(Z + rows64 * sz + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        mean = tl.load(Mean + rows, mask=row_ok, other=0.0)
        rstd = tl.load(Rstd + rows, mask=row_ok, other=0.0)
        xhat = tl.where(ok, (z - mean[:, None]) * rstd[:, None], 0.0)
        wdy = tl.where(ok, w[None, :] * dy, 0.0)
        c1 = tl.sum(xhat * wdy, 1) / H
        c2 = tl.sum(wdy, 1) / H
        dz = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_RESIDUAL:
            tl.store(DR + rows64 * sdr + cols[None, :], dz.to(DR.dtype.element_ty), mask=ok)
        dx = dz
        if HAS_DROPOUT:
            dx = tl.where(_tile_keep(seed, rows, cols, p), dz * inv_keep, 0.0)
        tl.store(DX + rows64 * sdx + cols[None, :], dx.to(DX.dtype.element_ty), mask=ok)
        dw += tl.sum(dy * xhat, 0)
        db += tl.sum(dy, 0)
    tl.store(DWp + pid * H + cols, dw, mask=col_ok)
    tl.store(DBp + pid * H + cols, db, mask=col_ok)


@triton.jit
def _keep_kernel(Keep, N, H, p, seed, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    """Write the keep mask the LayerNorm kernels draw, uint8 [N, H] (tests only)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_H)
    keep = _tile_keep(seed, rows, cols, p)
    ok = (rows < N)[:, None] & (cols < H)[None, :]
    tl.store(Keep + rows.to(tl.int64)[:, None] * H + cols[None, :], keep.to(tl.uint8), mask=ok)


# ------------------------------------------------------------------------------------------ launchers


def _launch_shape(width: int) -> tuple[int, int, int]:
    """(BLOCK_R rows per tile, BLOCK_H, num_warps) for a row width.

    Compiled: tiles of about 4K elements (one row at H >= 4096, 4 rows at H = 1024, more for
    narrow rows so small hidden sizes still fill the warps). Interpreted: larger tiles, since
    the interpreter pays per operation, not per element.
    """
    if width > MAX_WIDTH:
        raise KernelError(
            f"the Triton LayerNorm supports rows up to {MAX_WIDTH} wide, got {width}; use backend='torch'"
        )
    block = triton.next_power_of_2(max(width, 16))
    tile = 16384 if interpreting() else 4096
    rows = max(1, tile // block)
    return rows, block, min(16, max(4, rows * block // 512))


def _rows(t: torch.Tensor, width: int) -> torch.Tensor:
    """View as [rows, width] with unit column stride (copies only if the last dim is strided)."""
    t2 = t.reshape(-1, width)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def layernorm_forward(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    eps: float,
    p: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``y`` (shaped like x), and for the backward ``z`` [N, H], ``mean`` [N], ``rstd`` [N]."""
    width = x.shape[-1]
    block_r, block, warps = _launch_shape(width)
    x2 = _rows(x, width)
    r2 = _rows(residual, width) if residual is not None else x2
    n = x2.shape[0]
    y = new_output((n, width), x.dtype, x.device)
    z = new_output((n, width), x.dtype, x.device)
    mean = new_output((n,), torch.float32, x.device)
    rstd = new_output((n,), torch.float32, x.device)
    if n:
        _ln_fwd_kernel[(triton.cdiv(n, block_r),)](
            x2, r2, weight, bias, y, z, mean, rstd,
            x2.stride(0), r2.stride(0), y.stride(0), z.stride(0),
            n, width, eps, p, 1.0 / (1.0 - p), seed,
            BLOCK_R=block_r, BLOCK_H=block, HAS_RESIDUAL=residual is not None, HAS_DROPOUT=p > 0.0,
            num_warps=warps,
        )
    return y.view(x.shape), z, mean, rstd


def _programs(n: int, block_r: int, device: torch.device) -> int:
    """How many programs share the rows in the backward: enough to fill the GPU, few partial rows."""
    if interpreting() or device.type != "cuda":
        return max(1, min(triton.cdiv(n, block_r), 4))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(n, block_r), 4 * sms))


def layernorm_backward(
    grad_y: torch.Tensor,
    z: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    *,
    has_residual: bool,
    p: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Returns dx [N, H], dresidual [N, H] (or None), dweight [H] and dbias [H] (weight's dtype)."""
    n, width = z.shape
    block_r, block, warps = _launch_shape(width)
    dy = _rows(grad_y, width)
    dx = new_output((n, width), z.dtype, z.device)
    dr = new_output((n, width), z.dtype, z.device) if has_residual else dx
    programs = _programs(n, block_r, z.device)
    rows_per_program = triton.cdiv(triton.cdiv(n, programs), block_r) * block_r if n else 0
    dw_part = new_output((programs, width), torch.float32, z.device)
    db_part = new_output((programs, width), torch.float32, z.device)
    if n:
        _ln_bwd_kernel[(programs,)](
            dy, z, weight, mean, rstd, dx, dr, dw_part, db_part,
            dy.stride(0), z.stride(0), dx.stride(0), dr.stride(0),
            n, width, rows_per_program, p, 1.0 / (1.0 - p), seed,
            BLOCK_R=block_r, BLOCK_H=block, HAS_RESIDUAL=has_residual, HAS_DROPOUT=p > 0.0, num_warps=warps,
        )
    else:
        dw_part.zero_()
        db_part.zero_()
    dw = dw_part.sum(0).to(weight.dtype)
    db = db_part.sum(0).to(weight.dtype)
    return dx, (dr if has_residual else None), dw, db


def dropout_keep_mask(seed: int, rows: int, width: int, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The keep mask (bool ``[rows, width]``) the LayerNorm kernels draw for ``seed``; for tests."""
    keep = torch.zeros((rows, width), dtype=torch.uint8, device=device)
    if rows:
        block_r, block, _ = _launch_shape(width)
        _keep_kernel[(triton.cdiv(rows, block_r),)](keep, rows, width, p, seed, BLOCK_R=block_r, BLOCK_H=block)
    return keep.bool()
