"""Which implementation runs a kernel call: Triton or the torch path.

Every fused op in this package has two implementations with one contract: a Triton kernel for
CUDA tensors and a torch path that runs anywhere. This module owns the choice, so that the
rules live in one place:

- ``"auto"``: Triton for CUDA tensors when triton is importable, torch otherwise (resolved per
  call from the tensor's device, so a model patched on the CPU and moved to a GPU afterwards
  picks up the kernels);
- ``"triton"``: always Triton. CPU tensors are accepted only under ``TRITON_INTERPRET=1``,
  which is how the tests prove the kernels on a machine without a GPU;
- ``"torch"``: always the torch path.

It also holds the tiny helpers the Triton wrappers share (output allocation that the tests can
poison, the interpreter check).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

from fastxlt.errors import ConfigError, FastXLTError

BACKENDS = ("auto", "triton", "torch")
CONFIG_VALUES = ("auto", "triton", "torch", "none")


class KernelError(FastXLTError, ValueError):
    """A kernel was asked for something it does not support (shape, dtype, option, device)."""


def triton_available() -> bool:
    """True when the triton package can be imported (it is absent on many CPU-only installs)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton runs kernels in its numpy interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def check_backend(backend: str) -> str:
    """Validate a backend name given to a kernel call; returns it lower-cased."""
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise KernelError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}; pass one of those")
    if name == "triton" and not triton_available():
        raise KernelError("backend='triton' needs the triton package; install fastxlt[gpu] or use backend='torch'")
    return name


def resolve_backend(value: str | bool | None, device: torch.device | str) -> str | None:
    """Map a config value (``kernels: auto|triton|torch|none``) to ``"triton"``, ``"torch"`` or None.

    None means "do not patch". ``auto`` resolves against ``device``: Triton on CUDA, torch elsewhere.
    """
    if value is None or value is False:
        return None
    name = "auto" if value is True else str(value).strip().lower()
    if name not in CONFIG_VALUES:
        raise ConfigError(f"kernels: {value!r} is not one of {', '.join(CONFIG_VALUES)}; set kernels to one of those")
    if name == "none":
        return None
    if name == "triton":
        if not triton_available():
            raise ConfigError("kernels: triton needs the triton package; install fastxlt[gpu] or set kernels: torch")
        return "triton"
    if name == "torch":
        return "torch"
    on_cuda = torch.device(device).type == "cuda"
    return "triton" if on_cuda and triton_available() else "torch"


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """Decide for one call whether the Triton kernel runs; raises if Triton was forced where it cannot run."""
    name = check_backend(backend)
    if name == "torch":
        return False
    on_cuda = all(t.device.type == "cuda" for t in tensors)
    if name == "auto":
        return on_cuda and triton_available()
    if not on_cuda and not interpreting():
        raise KernelError(
            "backend='triton' got CPU tensors; run on a CUDA device, set TRITON_INTERPRET=1 (tests), "
            "or use backend='torch'"
        )
    return True


# --- output allocation (poisoned in tests so that an element a kernel forgot to write fails) ---

_POISON = False


@contextlib.contextmanager
def poison_outputs() -> Iterator[None]:
    """Inside this block, kernel outputs start as NaN (floats) or a sentinel (ints) instead of garbage."""
    global _POISON
    previous, _POISON = _POISON, True
    try:
        yield
    finally:
        _POISON = previous


def new_output(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate a tensor a kernel will fully overwrite (``torch.empty``, or poisoned in tests)."""
    if not _POISON:
        return torch.empty(shape, dtype=dtype, device=device)
    fill = float("nan") if dtype.is_floating_point else -12345
    return torch.full(shape, fill, dtype=dtype, device=device)


def poison_(tensor: torch.Tensor) -> torch.Tensor:
    """Poison an existing buffer that a kernel must overwrite in place (no-op outside tests)."""
    if _POISON:
        tensor.fill_(float("nan") if tensor.dtype.is_floating_point else -12345)
    return tensor


def upcast_dot(dtype: torch.dtype) -> bool:
    """Whether kernels must cast bf16 blocks to fp32 before ``tl.dot``.

    Triton 3.x's interpreter stores bf16 as raw uint16 and multiplies the bit patterns in
    ``tl.dot``; compiled kernels use bf16 tensor cores and never take this branch.
    """
    return interpreting() and dtype == torch.bfloat16


def new_seed() -> int:
    """A dropout seed drawn from torch's CPU generator: reproducible under ``torch.manual_seed``,
    restored by activation checkpointing, and free of GPU synchronisation."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())
