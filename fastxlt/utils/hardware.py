"""What the machine's matrix units can do: the facts behind every 'auto' precision and batch size.

Why one module: retrieval search and zero-shot evaluation both pick their fastest faithful path
from the same facts (AMX bf16 tiles, VNNI int8 dot products, a CUDA device), and tests fake those
facts in one place (``cpu_flags``).
"""

from __future__ import annotations

import functools

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_amx() -> bool:
    """AMX bf16 tiles (Sapphire Rapids and later): bf16 products several times faster than fp32."""
    return "amx_bf16" in cpu_flags()


def cpu_has_vnni() -> bool:
    """AVX-512 VNNI / AVX-VNNI: int8 dot products, the fastest product on CPUs without AMX."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 runs faster than fp32 on ``device``: a bf16-capable GPU, or a CPU with AMX.

    Without AMX a CPU emulates bf16 products and runs them slower than fp32 (measured: 45 against
    160 GFLOP/s on an AVX-512 VNNI Xeon), so bf16 is no gain there.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_amx()
