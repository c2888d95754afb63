"""Fused residual + dropout + LayerNorm: Triton kernels (interpreted on the CPU) and the torch path
against the written-out definition and against nn.LayerNorm, forward and backward."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from fastxlt.kernels import KernelError, residual_dropout_layernorm  # noqa: E402
from fastxlt.kernels import layernorm_triton as lt  # noqa: E402
from fastxlt.kernels.dispatch import interpreting  # noqa: E402
from fastxlt.kernels.layernorm import _TritonResidualLayerNorm  # noqa: E402
from fastxlt.kernels.layernorm_torch import residual_dropout_layernorm_reference  # noqa: E402
from fastxlt.kernels.testing import NO_TRITON_DEVICE, assert_close, fresh_seed, kernel_test_device  # noqa: E402
from fastxlt.kernels.testing import poison_outputs  # noqa: E402

DEVICE = kernel_test_device()
needs_triton_device = pytest.mark.skipif(DEVICE == "cpu" and not interpreting(), reason=NO_TRITON_DEVICE)


def make_inputs(shape, dtype, seed, residual=True):
    gen = torch.Generator().manual_seed(seed)
    width = shape[-1]

    def rand(*size, scale=1.0):
        return (torch.randn(*size, generator=gen) * scale).to(device=DEVICE, dtype=dtype).requires_grad_()

    x = rand(*shape, scale=2.0)
    res = rand(*shape) if residual else None
    weight, bias = rand(width, scale=0.5), rand(width, scale=0.5)
    grad = torch.randn(*shape, generator=gen).to(device=DEVICE, dtype=dtype)
    return x, res, weight, bias, grad


def check(x, res, weight, bias, grad, dtype, seed, *, p=0.0, dropout_seed=0, eps=1e-5):
    leaves = [t for t in (x, res, weight, bias) if t is not None]
    with poison_outputs():
        y = _TritonResidualLayerNorm.apply(x, res, weight, bias, eps, p, dropout_seed)
        y.backward(grad)
    keep = None
    if p > 0:
        keep = lt.dropout_keep_mask(dropout_seed, x.numel() // x.shape[-1], x.shape[-1], p, device=DEVICE)
        keep = keep.view(x.shape)
        assert abs(keep.float().mean().item() - (1 - p)) < 0.02
    ref_leaves = [t.detach().float().requires_grad_() for t in leaves]
    ref_x, ref_w, ref_b = ref_leaves[0], ref_leaves[-2], ref_leaves[-1]
    ref_res = ref_leaves[1] if res is not None else None
    ref = residual_dropout_layernorm_reference(ref_x, ref_res, ref_w, ref_b, eps=eps, keep=keep, p=p)
    ref.backward(grad.float())
    tag = f"seed={seed} shape={tuple(x.shape)} dtype={dtype} p={p}"
    assert_close(y, ref, dtype, f"y {tag}")
    names = ["dx", "dresidual", "dweight", "dbias"] if res is not None else ["dx", "dweight", "dbias"]
    for name, leaf, ref_leaf in zip(names, leaves, ref_leaves):
        assert_close(leaf.grad, ref_leaf.grad, dtype, f"{name} {tag}")


@needs_triton_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_triton_matches_reference_hidden_1023(dtype, p):
    seed = fresh_seed()
    x, res, w, b, grad = make_inputs((3, 7, 1023), dtype, seed)
    check(x, res, w, b, grad, dtype, seed, p=p, dropout_seed=fresh_seed())


@needs_triton_device
@pytest.mark.parametrize("width", [1, 768, 1024])
def test_triton_other_widths_and_no_residual(width):
    seed = fresh_seed()
    x, _, w, b, grad = make_inputs((5, width), torch.float32, seed, residual=False)
    check(x, None, w, b, grad, torch.float32, seed)


@needs_triton_device
def test_triton_compiled_launch_shape_under_the_interpreter(monkeypatch):
    """The GPU tiles (fewer rows per tile) are proven too, not only the interpreter's larger ones."""
    monkeypatch.setattr(lt, "interpreting", lambda: False)
    seed = fresh_seed()
    x, res, w, b, grad = make_inputs((11, 1023), torch.float32, seed)
    check(x, res, w, b, grad, torch.float32, seed, p=0.1, dropout_seed=seed)


def test_torch_path_is_the_unfused_sequence():
    """Against nn.Dropout + add + nn.LayerNorm run by hand, same RNG state, training and eval."""
    seed = fresh_seed()
    x, res, w, b, grad = make_inputs((4, 9, 64), torch.float32, seed)
    for training in (False, True):
        torch.manual_seed(seed)
        y = residual_dropout_layernorm(x, res, w, b, p=0.1, eps=1e-5, training=training, backend="torch")
        torch.manual_seed(seed)
        expected = F.layer_norm(F.dropout(x, 0.1, training=training) + res, (64,), w, b, 1e-5)
        assert torch.equal(y, expected)


def test_bad_arguments_raise_one_line_errors():
    x, res, w, b, _ = make_inputs((2, 8), torch.float32, 0)
    with pytest.raises(KernelError, match="dropout"):
        residual_dropout_layernorm(x, res, w, b, p=1.0, training=True, backend="torch")
    with pytest.raises(KernelError, match="residual"):
        residual_dropout_layernorm(x, res[:1], w, b, backend="torch")
    with pytest.raises(KernelError, match="weight"):
        residual_dropout_layernorm(x, res, w[:4], b, backend="torch")


@pytest.mark.slow
@needs_triton_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("width", [17, 384, 1023, 4096])
def test_triton_sweep(width, dtype):
    seed = fresh_seed()
    x, res, w, b, grad = make_inputs((67, width), dtype, seed)
    check(x, res, w, b, grad, dtype, seed, p=0.15, dropout_seed=seed)
