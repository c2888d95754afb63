"""Fused attention: the Triton kernels (interpreted on the CPU) and the torch path against the
textbook definition, forward and backward, on odd lengths and ragged padding.

Inputs are fresh random tensors every run (the seed is in each failure message) and kernel
outputs start as NaN, so an element a kernel forgets to write fails the comparison.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest
import torch

pytest.importorskip("triton")

from fastxlt.kernels import KernelError, attention  # noqa: E402
from fastxlt.kernels import attention_triton as at  # noqa: E402
from fastxlt.kernels.attention import _TritonAttention  # noqa: E402
from fastxlt.kernels.attention_torch import attention_reference, attention_torch  # noqa: E402
from fastxlt.kernels.dispatch import interpreting, use_triton  # noqa: E402
from fastxlt.kernels.testing import NO_TRITON_DEVICE, assert_close, fresh_seed, kernel_test_device  # noqa: E402
from fastxlt.kernels.testing import poison_outputs  # noqa: E402

DEVICE = kernel_test_device()
needs_triton_device = pytest.mark.skipif(DEVICE == "cpu" and not interpreting(), reason=NO_TRITON_DEVICE)


def make_inputs(batch, heads, q_len, head_dim, dtype, lengths, *, kv_len=None, seed):
    """q, k, v in Hugging Face's layout ([B, T, H, D] memory viewed as [B, H, T, D]) and a padding mask."""
    gen = torch.Generator().manual_seed(seed)
    kv_len = q_len if kv_len is None else kv_len

    def rand(length):
        x = torch.randn(batch, length, heads, head_dim, generator=gen)
        return x.to(device=DEVICE, dtype=dtype).transpose(1, 2).requires_grad_()

    q, k, v = rand(q_len), rand(kv_len), rand(kv_len)
    mask = None
    if lengths is not None:
        mask = (torch.arange(kv_len)[None, :] < torch.tensor(lengths)[:, None]).to(DEVICE)
    grad = torch.randn(batch, heads, q_len, head_dim, generator=gen).to(device=DEVICE, dtype=dtype)
    return q, k, v, mask, grad


def reference_grads(q, k, v, mask, grad, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = attention_reference(*[t.float() for t in leaves], mask, **kwargs)
    out.backward(grad.float())
    return out, [t.grad for t in leaves]


def check_against_reference(q, k, v, mask, grad, dtype, seed, *, dropout_p=0.0, dropout_seed=0, keep=None):
    for leaf in (q, k, v):
        leaf.grad = None
    with poison_outputs():
        out = _TritonAttention.apply(q, k, v, mask, dropout_p, q.shape[-1] ** -0.5, dropout_seed)
        out.backward(grad)
    ref, ref_grads = reference_grads(q, k, v, mask, grad, keep=keep, dropout_p=dropout_p)
    tag = f"seed={seed} shape={tuple(q.shape)} dtype={dtype}"
    assert_close(out, ref, dtype, f"out {tag}")
    # One absolute scale for the three gradients: dq and dk are exactly 0 for a single key, where
    # only rounding noise at the scale of dv can appear.
    grad_scale = max(float(g.abs().max()) for g in ref_grads)
    for name, leaf, expected in zip("qkv", (q, k, v), ref_grads):
        assert_close(leaf.grad, expected, dtype, f"d{name} {tag}", scale=grad_scale)


def ragged(batch_len):
    """Rows of very different true lengths: full, about a third, a single token."""
    return [batch_len, max(1, batch_len // 3), 1]


@needs_triton_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("length", [1, 7, 129, 333])
def test_triton_matches_reference_on_odd_lengths(length, dtype):
    seed = fresh_seed()
    heads = 2 if length < 300 else 1  # keeps the interpreter's work bounded
    q, k, v, mask, grad = make_inputs(3, heads, length, 64, dtype, ragged(length), seed=seed)
    check_against_reference(q, k, v, mask, grad, dtype, seed)


@needs_triton_device
@pytest.mark.parametrize(
    "dtype,head_dim",
    [(torch.float16, 64), (torch.float32, 128), (torch.bfloat16, 128)],
    ids=["fp16-d64", "fp32-d128", "bf16-d128"],
)
def test_triton_dtypes_and_head_dims(dtype, head_dim):
    seed = fresh_seed()
    q, k, v, mask, grad = make_inputs(3, 1, 129, head_dim, dtype, ragged(129), seed=seed)
    check_against_reference(q, k, v, mask, grad, dtype, seed)


@needs_triton_device
def test_triton_without_mask_and_with_interior_holes():
    seed = fresh_seed()
    q, k, v, _, grad = make_inputs(2, 2, 77, 64, torch.float32, None, seed=seed)
    check_against_reference(q, k, v, None, grad, torch.float32, seed)
    holes = torch.rand(2, 77, generator=torch.Generator().manual_seed(seed)) < 0.6  # not a prefix
    holes[:, 0] = True
    check_against_reference(q, k, v, holes.to(DEVICE), grad, torch.float32, seed)


@needs_triton_device
def test_triton_queries_and_keys_of_different_lengths():
    seed = fresh_seed()
    q, k, v, mask, grad = make_inputs(3, 2, 7, 64, torch.float32, [129, 40, 1], kv_len=129, seed=seed)
    check_against_reference(q, k, v, mask, grad, torch.float32, seed)


@needs_triton_device
def test_row_without_any_key_gives_zeros_and_no_gradient():
    seed = fresh_seed()
    q, k, v, mask, grad = make_inputs(2, 1, 9, 64, torch.float32, [9, 0], seed=seed)
    with poison_outputs():
        out = attention(q, k, v, mask, backend="triton")
        out.backward(grad)
    assert torch.all(out[1] == 0)
    assert torch.all(q.grad[1] == 0) and torch.all(k.grad[1] == 0) and torch.all(v.grad[1] == 0)
    check_against_reference(q, k, v, mask, grad, torch.float32, seed)


@needs_triton_device
def test_triton_dropout_uses_its_regenerated_mask_in_both_passes():
    seed, dropout_seed, p = fresh_seed(), fresh_seed(), 0.25
    q, k, v, mask, grad = make_inputs(2, 2, 97, 64, torch.float32, [97, 40], seed=seed)
    keep = at.dropout_keep_mask(dropout_seed, 2, 2, 97, 97, p, device=DEVICE)
    kept = keep.float().mean().item()  # 37,636 draws: 4 standard deviations is 0.009
    assert abs(kept - (1 - p)) < 0.009, f"keep rate {kept:.4f} for p={p}"
    check_against_reference(q, k, v, mask, grad, torch.float32, seed, dropout_p=p, dropout_seed=dropout_seed, keep=keep)


@needs_triton_device
def test_triton_dropout_depends_on_seed_only():
    q, k, v, mask, _ = make_inputs(1, 1, 33, 64, torch.float32, [33], seed=fresh_seed())
    run = lambda s: _TritonAttention.apply(q, k, v, mask, 0.5, 0.125, s).detach()  # noqa: E731
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_torch_path_matches_reference(dtype):
    seed = fresh_seed()
    q, k, v, mask, grad = make_inputs(3, 2, 45, 64, dtype, [45, 12, 0], seed=seed)
    out = attention(q, k, v, mask, backend="torch")
    out.backward(grad)
    ref, ref_grads = reference_grads(q, k, v, mask, grad)
    assert_close(out, ref, dtype, f"torch path out seed={seed}")
    for name, leaf, expected in zip("qkv", (q, k, v), ref_grads):
        assert_close(leaf.grad, expected, dtype, f"torch path d{name} seed={seed}")


def test_torch_path_dropout_keeps_expectation():
    """With dropout the output is an unbiased estimate: the mean over many draws approaches the
    dropout-free output (the torch path's RNG is torch's own, so only the law can be checked)."""
    torch.manual_seed(fresh_seed())
    q, k, v, mask, _ = make_inputs(1, 1, 16, 64, torch.float32, [16], seed=fresh_seed())
    exact = attention(q, k, v, mask, backend="torch")
    draws = torch.stack([attention(q, k, v, mask, dropout_p=0.3, backend="torch") for _ in range(300)])
    assert not torch.equal(draws[0], exact)
    # Sampling noise of the mean is ~0.01 here; a missing 1/(1-p) rescale would be off by 30%.
    assert (draws.mean(0) - exact).abs().max() < 0.1 * exact.abs().max()


def test_dispatch_rules(monkeypatch):
    cpu = torch.zeros(1)
    assert use_triton("torch", cpu) is False
    assert use_triton("auto", cpu) is False  # auto never runs Triton on CPU tensors
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(KernelError, match="TRITON_INTERPRET"):
        use_triton("triton", cpu)
    with pytest.raises(KernelError, match="backend"):
        use_triton("cuda", cpu)


def test_bad_arguments_raise_one_line_errors():
    q, k, v, mask, _ = make_inputs(2, 1, 5, 64, torch.float32, [5, 2], seed=0)
    with pytest.raises(KernelError, match="dropout_p"):
        attention(q, k, v, mask, dropout_p=1.0, backend="torch")
    with pytest.raises(KernelError, match="key_padding_mask"):
        attention(q, k, v, mask[:, :3], backend="torch")
    if interpreting() or DEVICE == "cuda":
        with pytest.raises(KernelError, match="head_dim"):
            attention(*(torch.zeros(1, 1, 2, 512, device=DEVICE) for _ in range(3)), backend="triton")


@pytest.mark.slow
@needs_triton_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("length", [2, 64, 127, 256, 513])
def test_triton_sweep(length, head_dim, dtype):
    seed = fresh_seed()
    lengths = [length, length // 2 + 1, 1, max(1, length - 3)]
    q, k, v, mask, grad = make_inputs(4, 2, length, head_dim, dtype, lengths, seed=seed)
    check_against_reference(q, k, v, mask, grad, dtype, seed)
    if dtype == torch.float32:
        keep = at.dropout_keep_mask(seed, 4, 2, length, length, 0.1, device=DEVICE)
        check_against_reference(q, k, v, mask, grad, dtype, seed, dropout_p=0.1, dropout_seed=seed, keep=keep)
