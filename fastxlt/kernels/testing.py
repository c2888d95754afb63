"""Helpers for proving the kernels on the CPU: tolerances, poisoning, a leaner Triton interpreter.

Used by ``tests/test_kernels_*.py`` and ``benchmarks/fused_kernels.py``; nothing in training imports it.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from fastxlt.kernels.dispatch import interpreting, poison_outputs

__all__ = ["NO_TRITON_DEVICE", "TOLERANCE", "assert_close", "fresh_seed", "kernel_test_device", "lean_interpreter",
           "poison_outputs"]

# Relative tolerance per input dtype (errors are measured against an fp32 reference computed
# from the same rounded inputs, relative to the reference's largest magnitude).
TOLERANCE = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str, scale: float | None = None
) -> None:
    """Element-wise ``|a - e| <= tol * (|e| + max|e|)``: relative where values are large, and
    absolute at the tensor's own scale (or ``scale``) where the reference is near zero."""
    tol = TOLERANCE[dtype]
    a, e = actual.detach().float(), expected.detach().float()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    assert torch.isfinite(a).all(), f"{what}: non-finite values (an element left unwritten?)"
    ref_scale = float(e.abs().max()) if scale is None else scale
    excess = (a - e).abs() - tol * (e.abs() + ref_scale)
    worst = float(excess.max()) if excess.numel() else -1.0
    assert worst <= 0.0, (
        f"{what}: max error {float((a - e).abs().max()):.3e} beyond {tol:g} x (|ref| + {ref_scale:.3e})"
    )


NO_TRITON_DEVICE = "Triton needs CUDA or TRITON_INTERPRET=1"  # why a kernel test skips


def kernel_test_device() -> str:
    """The device kernel tests run on: CUDA when there is one and Triton is not interpreted, else the CPU (where
    Triton runs only interpreted); the interpreter, where it is used, is made lean first (``lean_interpreter``)."""
    if interpreting():
        lean_interpreter()
    return "cuda" if torch.cuda.is_available() and not interpreting() else "cpu"


def fresh_seed() -> int:
    """A new seed per test run (inputs are fresh each run); printed in failure messages by callers."""
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def lean_interpreter() -> None:
    """Make Triton's interpreter cheaper for the test shapes (no effect on compiled kernels).

    - integer overflow sanitising (an int64 re-computation and assert around every integer
      add/mul) is switched off: the test shapes are far from 2**31, and it doubles run time;
    - ``triton.language`` is patched once per launch instead of again at every call of a
      ``@triton.jit`` helper (``tl.sum``, ``tl.max``, ``tl.philox`` are such helpers): the re-patch
      re-installs the very same interpreter hooks and costs milliseconds per call;
    - ``tl.dot`` runs through BLAS: the interpreter calls ``np.matmul(..., dtype=float32)``,
      which numpy evaluates with a slow generic loop; casting first gives the same fp32 product.
      bf16 operands never reach it (the kernels upcast them under the interpreter).
    """
    try:
        import numpy as np
        from triton.runtime import interpreter
    except ImportError:
        return
    _patch_language_once(interpreter)
    builder = interpreter.interpreter_builder
    if getattr(builder.options, "sanitize_overflow", False):
        builder.options = dataclasses.replace(builder.options, sanitize_overflow=False)
    if getattr(interpreter.InterpreterBuilder.create_dot, "_fastxlt", False):
        return

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.data.dtype.kind != "f" or b.data.dtype.kind != "f":  # fp8/int: keep triton's own path
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)
        out_dtype = d.data.dtype
        product = np.matmul(a.data.astype(out_dtype), b.data.astype(out_dtype))
        return interpreter.TensorHandle(product + d.data, d.dtype.scalar)

    original = interpreter.InterpreterBuilder.create_dot
    create_dot._fastxlt = True
    interpreter.InterpreterBuilder.create_dot = create_dot


def _patch_language_once(interpreter) -> None:
    """Re-patch the language for a nested ``@triton.jit`` call only if this launch has not yet
    patched the language modules that function sees (``triton.language`` / ``.core``)."""
    original = getattr(interpreter, "_patch_lang", None)
    if original is None or getattr(original, "_fastxlt", False):
        return
    import inspect

    import triton.language as tl

    lang_modules = (tl, tl.core)
    state = {"depth": 0, "patched": set()}

    def langs_of(fn) -> set[int]:
        return {id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in lang_modules}

    def patch_lang(fn):
        if state["depth"] == 0:  # a kernel launch: always patch, track what is patched until restore
            scope = original(fn)
            state["depth"], state["patched"] = 1, langs_of(fn)
            restore = scope.restore

            def restore_and_leave() -> None:
                state["depth"], state["patched"] = 0, set()
                restore()

            scope.restore = restore_and_leave
            return scope
        needed = langs_of(fn)
        if not needed <= state["patched"]:
            state["patched"] |= needed
            return original(fn)  # triton never restores nested scopes either
        return _NoScope()

    patch_lang._fastxlt = True
    interpreter._patch_lang = patch_lang


class _NoScope:
    def restore(self) -> None:
        pass
