"""What the machine's matrix units can do: the facts behind every 'auto' precision and batch size.

Why one module: retrieval search and zero-shot evaluation both pick their fastest faithful path
from the same facts (AMX bf16 tiles, VNNI int8 dot products, a CUDA device), and tests fake those
facts in one place (``cpu_flags``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from fastxlt.utils.io import write_json_atomic


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


def cpu_has_bf16_products() -> bool:
    """bf16 dot-product instructions (AMX tiles, AVX-512 BF16): without them a CPU emulates bf16 products."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 runs faster than fp32 on ``device``: a bf16-capable GPU, or a CPU with AMX.

    Without AMX a CPU emulates bf16 products and runs them slower than fp32 (measured: 45 against
    160 GFLOP/s on an AVX-512 VNNI Xeon), so bf16 is no gain there. Evaluation's and retrieval's
    ``auto`` use this rule (their scores then move only with AMX); training's ``auto`` measures
    (``bf16_training_choice``).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_amx()


# A measured bf16 product must beat fp32 by this much before training runs under bf16 autocast: autocast
# adds casts around every product, and a near-tie is not worth bf16's rounding.
BF16_MIN_SPEEDUP = 1.3
SPEED_CACHE_ENV = "FASTXLT_CACHE_DIR"


def bf16_product_speedup(repeats: int = 10) -> float:
    """fp32 time / bf16 time of one encoder-sized product (2,048 tokens x 384 -> 1,536, multilingual-e5-small's
    feed-forward), best of ``repeats`` each, on the CPU. About 0.1 s."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 384, generator=generator), torch.randn(384, 1536, generator=generator)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = a.to(dtype), b.to(dtype)
        torch.mm(x, w)  # first-call set-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(x, w)
            times.append(time.perf_counter() - started)
        best[dtype] = min(times)
    return best[torch.float32] / best[torch.bfloat16]


def _speed_cache_file() -> Path:
    base = os.environ.get(SPEED_CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "fastxlt")
    return Path(base) / "bf16_speedup.json"


def _machine_key() -> str:
    """What the measurement depends on: the processor, its flags, torch and its thread count."""
    facts = [platform.processor(), platform.machine(), " ".join(sorted(cpu_flags())), torch.__version__,
             str(torch.get_num_threads())]
    return hashlib.sha256("|".join(facts).encode()).hexdigest()[:16]


@functools.cache
def cpu_bf16_speedup() -> float:
    """``bf16_product_speedup`` measured once per machine and kept in ``~/.cache/fastxlt/bf16_speedup.json``
    (``$FASTXLT_CACHE_DIR``): a re-measured near-tie could flip the choice, and with it a phase's identity."""
    path, key = _speed_cache_file(), _machine_key()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), (int, float)):
        return float(cached[key])
    speedup = bf16_product_speedup()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**(cached if isinstance(cached, dict) else {}), key: round(speedup, 3)})
    except OSError:
        pass  # a read-only home: measure again next time
    return speedup


def bf16_training_choice(device: torch.device) -> tuple[bool, str]:
    """Whether training should run under bf16 autocast on ``device``, and why, in words.

    A GPU: where it supports bf16. A CPU: where it has bf16 product instructions and a bf16 product is measured
    at least ``BF16_MIN_SPEEDUP`` times faster than the fp32 one (AMX: 3-6x; AVX-512 BF16 without AMX, e.g. AMD
    Zen 4: about 2x; AVX-512 VNNI or AVX2 only: emulated, slower, not measured).
    """
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        return supported, f"{torch.cuda.get_device_name(device)} {'supports' if supported else 'lacks'} bf16"
    if device.type != "cpu":
        return False, f"no bf16 rule for device type {device.type}"
    if not cpu_has_bf16_products():
        return False, "this CPU has no bf16 product instructions (no AMX, no AVX-512 BF16): bf16 would be emulated"
    speedup = cpu_bf16_speedup()
    units = "AMX" if cpu_has_amx() else "AVX-512 BF16"
    verdict = ">=" if speedup >= BF16_MIN_SPEEDUP else "<"
    return speedup >= BF16_MIN_SPEEDUP, f"{units}: bf16 products measured {speedup:.2f}x fp32 ({verdict} {BF16_MIN_SPEEDUP}x)"
