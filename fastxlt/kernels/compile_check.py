"""Compile every Triton kernel for real GPUs on a machine without one: ``python -m fastxlt.kernels.compile_check``.

The interpreter proves what the kernels compute; it does not prove that they compile for a GPU
(compiled Triton is stricter: loop-carried types, dot shapes, layouts) or that their tiles fit in
shared memory. Triton can compile ahead of time for a named target without a device
(``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``, with the ptxas shipped in
the wheel), so this module compiles each kernel, in the launch configurations the launchers
choose, down to a cubin, and checks the shared memory each needs against the target's limit.

Run it without ``TRITON_INTERPRET`` (the module drops it): jitted functions decorated under the
interpreter cannot be compiled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from fastxlt.kernels import attention_triton as att  # noqa: E402
from fastxlt.kernels import layernorm_triton as lnt  # noqa: E402
from fastxlt.kernels import linear_ce_triton as cet  # noqa: E402

SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}  # bytes per block, opt-in maximum
TRITON_DTYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
FLOAT_ARGS = {"qk_scale", "sm_scale", "dropout_p", "inv_keep", "eps", "p", "smooth_per_class", "target_weight", "scale"}


@dataclass
class Job:
    """One kernel in one launch configuration."""

    name: str
    kernel: object
    pointers: dict[str, str]
    constexprs: dict[str, object]
    num_warps: int
    num_stages: int = 2


def _signature(job: Job) -> dict[str, str]:
    signature = {}
    for arg in job.kernel.arg_names:
        if arg in job.constexprs:
            signature[arg] = "constexpr"
        elif arg in job.pointers:
            signature[arg] = job.pointers[arg]
        else:
            signature[arg] = "fp32" if arg in FLOAT_ARGS else "i32"
    return signature


def attention_jobs(dtype: torch.dtype, head_dim: int) -> list[Job]:
    t = "*" + TRITON_DTYPE[dtype]
    tensors = {n: t for n in ("Q", "K", "V", "Out", "DO", "DQ", "DK", "DV")}
    pointers = {**tensors, "KeyMask": "*u8", "KvLen": "*i32", "Lse": "*fp32", "Delta": "*fp32"}
    block_d = max(16, triton.next_power_of_2(head_dim))
    tag = f"{TRITON_DTYPE[dtype]} D={head_dim}"
    jobs = []
    for backward, kernels in ((False, [att._attn_fwd_kernel]), (True, [att._attn_bwd_dkdv_kernel, att._attn_bwd_dq_kernel])):
        block_m, block_n, warps, stages = att._block_config(head_dim, dtype, backward)
        flags = dict(HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
                     HAS_MASK=True, HAS_DROPOUT=True, UPCAST=False)
        jobs += [Job(f"{k.fn.__name__} {tag}", k, pointers, flags, warps, stages) for k in kernels]
        if backward:
            jobs.append(Job(f"_attn_bwd_delta_kernel {tag}", att._attn_bwd_delta_kernel, pointers,
                            dict(HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=block_m), 4, 1))
    return jobs


def layernorm_jobs(dtype: torch.dtype, width: int) -> list[Job]:
    t = "*" + TRITON_DTYPE[dtype]
    pointers = {**{n: t for n in ("X", "R", "W", "B", "Y", "Z", "DY", "DX", "DR")},
                **{n: "*fp32" for n in ("Mean", "Rstd", "DWp", "DBp")}}
    lnt_interpreting, lnt.interpreting = lnt.interpreting, lambda: False
    try:
        block_r, block_h, warps = lnt._launch_shape(width)
    finally:
        lnt.interpreting = lnt_interpreting
    flags = dict(BLOCK_R=block_r, BLOCK_H=block_h, HAS_RESIDUAL=True, HAS_DROPOUT=True)
    tag = f"{TRITON_DTYPE[dtype]} H={width}"
    return [Job(f"{k.fn.__name__} {tag}", k, pointers, flags, warps) for k in (lnt._ln_fwd_kernel, lnt._ln_bwd_kernel)]


def linear_ce_jobs(dtype: torch.dtype, width: int) -> list[Job]:
    pointers = {"Logits": "*" + TRITON_DTYPE[dtype], "Labels": "*i64",
                **{n: "*fp32" for n in ("M", "S", "ZY", "ZSUM", "Lse")}}
    cet_interpreting, cet.interpreting = cet.interpreting, lambda: False
    try:
        block_r, block_v, warps = cet._launch(width)
    finally:
        cet.interpreting = cet_interpreting
    flags = dict(BLOCK_R=block_r, BLOCK_V=block_v)
    tag = f"{TRITON_DTYPE[dtype]} chunk={width}"
    return [Job(f"{k.fn.__name__} {tag}", k, pointers, flags, warps) for k in (cet._lse_update_kernel, cet._grad_kernel)]


def all_jobs() -> list[Job]:
    jobs = []
    for dtype, head_dim in ((torch.bfloat16, 64), (torch.bfloat16, 128), (torch.float32, 64), (torch.float32, 128)):
        jobs += attention_jobs(dtype, head_dim)
    jobs += layernorm_jobs(torch.bfloat16, 1024) + layernorm_jobs(torch.float32, 4096)
    jobs += linear_ce_jobs(torch.bfloat16, 8192) + linear_ce_jobs(torch.float32, 4096)
    return jobs


def compile_job(job: Job, arch: int) -> dict:
    start = time.perf_counter()
    source = ASTSource(job.kernel, _signature(job), job.constexprs)
    options = {"num_warps": job.num_warps, "num_stages": job.num_stages}
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    except Exception as error:  # report every failure, not only the first
        return dict(kernel=job.name, arch=arch, ok=False, error=f"{type(error).__name__}: {str(error)[:500]}")
    shared = int(compiled.metadata.shared)
    limit = SHARED_LIMIT.get(arch, min(SHARED_LIMIT.values()))
    return dict(kernel=job.name, arch=arch, ok=shared <= limit, shared_bytes=shared, shared_limit=limit,
                seconds=round(time.perf_counter() - start, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile fastxlt's Triton kernels for CUDA targets, no GPU needed.")
    parser.add_argument("--arch", type=int, action="append", help="compute capability x10, e.g. 90 (repeatable)")
    parser.add_argument("--only", help="compile only kernels whose name contains this text")
    args = parser.parse_args(argv)
    jobs = [j for j in all_jobs() if not args.only or args.only in j.name]
    results = []
    for arch in args.arch or [90]:
        for job in jobs:
            r = compile_job(job, arch)
            results.append(r)
            status = "ok  " if r["ok"] else "FAIL"
            detail = r.get("error") or f"shared {r['shared_bytes']}/{r['shared_limit']} B, {r['seconds']}s"
            print(f"{status} sm_{r['arch']} {r['kernel']:<45} {detail}", flush=True)
    print(json.dumps({"compiled": sum(r["ok"] for r in results), "total": len(results)}))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
