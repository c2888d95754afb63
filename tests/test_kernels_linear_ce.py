"""Fused linear + cross-entropy: Triton chunk kernels (interpreted on the CPU) and the torch path
against F.linear + F.cross_entropy, loss and the gradients of hidden, weight and bias; and the
memory property itself (no tensor of the logits' size is ever created)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastxlt.kernels import KernelError, linear_cross_entropy
from fastxlt.kernels.dispatch import interpreting, triton_available
from fastxlt.kernels.linear_ce_torch import linear_cross_entropy_reference
from fastxlt.kernels.testing import assert_close, fresh_seed, lean_interpreter, poison_outputs

DEVICE = "cuda" if torch.cuda.is_available() and not interpreting() else "cpu"
TRITON_OK = triton_available() and (DEVICE == "cuda" or interpreting())
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not TRITON_OK, reason="no Triton device"))]
if TRITON_OK and interpreting():
    lean_interpreter()

VOCAB = 1003  # odd, so the last chunk is ragged


def make_inputs(shape, hidden_size, dtype, seed, *, bias=True, ignored=0.6):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, hidden_size, generator=gen).to(device=DEVICE, dtype=dtype).requires_grad_()
    weight = (torch.randn(VOCAB, hidden_size, generator=gen) * 0.3).to(device=DEVICE, dtype=dtype).requires_grad_()
    b = (torch.randn(VOCAB, generator=gen) * 0.5).to(device=DEVICE, dtype=dtype).requires_grad_() if bias else None
    labels = torch.randint(0, VOCAB, shape, generator=gen)
    labels[torch.rand(shape, generator=gen) < ignored] = -100
    labels.view(-1)[0] = 5  # at least one real label
    return hidden, weight, b, labels.to(DEVICE)


def check(hidden, weight, bias, labels, dtype, seed, **kwargs):
    leaves = [t for t in (hidden, weight, bias) if t is not None]
    with poison_outputs():
        loss = linear_cross_entropy(hidden, weight, bias, labels, **kwargs)
        loss.backward()
    ref_kwargs = {k: v for k, v in kwargs.items() if k in ("reduction", "label_smoothing", "ignore_index")}
    ref_leaves = [t.detach().float().requires_grad_() for t in leaves]
    ref_bias = ref_leaves[2] if bias is not None else None
    ref = linear_cross_entropy_reference(ref_leaves[0], ref_leaves[1], ref_bias, labels, **ref_kwargs)
    ref.backward()
    tag = f"seed={seed} dtype={dtype} {kwargs}"
    assert_close(loss, ref, dtype, f"loss {tag}")
    for name, leaf, ref_leaf in zip(("dhidden", "dweight", "dbias"), leaves, ref_leaves):
        assert_close(leaf.grad, ref_leaf.grad, dtype, f"{name} {tag}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "reduction,smoothing,bias", [("mean", 0.0, True), ("sum", 0.1, False), ("mean", 0.1, True)]
)
def test_matches_unfused_pair(backend, dtype, reduction, smoothing, bias):
    seed = fresh_seed()
    hidden, weight, b, labels = make_inputs((3, 43), 64, dtype, seed, bias=bias)  # 129 tokens
    check(hidden, weight, b, labels, dtype, seed, reduction=reduction, label_smoothing=smoothing,
          chunk_size=300, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_chunking_flat_input_and_custom_ignore_index(backend):
    seed = fresh_seed()
    hidden, weight, b, labels = make_inputs((37,), 32, torch.float32, seed, ignored=0.3)
    labels[labels == -100] = 7777
    check(hidden, weight, b, labels, torch.float32, seed, ignore_index=7777, backend=backend)


@pytest.mark.skipif(not (TRITON_OK and interpreting()), reason="runs the GPU launch shape in the interpreter")
def test_triton_compiled_launch_shape_under_the_interpreter(monkeypatch):
    from fastxlt.kernels import linear_ce_triton

    monkeypatch.setattr(linear_ce_triton, "interpreting", lambda: False)  # one row per program
    seed = fresh_seed()
    hidden, weight, b, labels = make_inputs((2, 9), 32, torch.float32, seed)
    check(hidden, weight, b, labels, torch.float32, seed, label_smoothing=0.2, chunk_size=384, backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_scales_with_the_incoming_gradient_and_frozen_inputs(backend):
    seed = fresh_seed()
    hidden, weight, b, labels = make_inputs((20,), 32, torch.float32, seed)
    hidden.requires_grad_(False)  # a frozen encoder: only the head's parameters get gradients
    (0.25 * linear_cross_entropy(hidden, weight, b, labels, chunk_size=300, backend=backend)).backward()
    ref_w, ref_b = weight.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    (0.25 * linear_cross_entropy_reference(hidden, ref_w, ref_b, labels)).backward()
    assert hidden.grad is None
    assert_close(weight.grad, ref_w.grad, torch.float32, f"dweight seed={seed}")
    assert_close(b.grad, ref_b.grad, torch.float32, f"dbias seed={seed}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_labels_ignored_follows_torch(backend):
    hidden, weight, b, labels = make_inputs((6,), 16, torch.float32, 0)
    labels[:] = -100
    expected_mean = linear_cross_entropy_reference(hidden, weight, b, labels)
    mean = linear_cross_entropy(hidden, weight, b, labels, backend=backend)
    assert torch.isnan(mean) and torch.isnan(expected_mean)
    total = linear_cross_entropy(hidden, weight, b, labels, reduction="sum", backend=backend)
    total.backward()
    assert total.item() == 0.0
    assert torch.all(hidden.grad == 0) and torch.all(weight.grad == 0) and torch.all(b.grad == 0)


def test_no_grad_gives_the_same_loss():
    hidden, weight, b, labels = make_inputs((25,), 16, torch.float32, fresh_seed())
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, b, labels, chunk_size=100, backend="torch")
    assert_close(loss, linear_cross_entropy_reference(hidden, weight, b, labels), torch.float32, "no-grad loss")


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (what would dominate peak memory)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_logits_are_never_materialised():
    tokens, hidden_size, chunk = 129, 16, 128
    hidden, weight, b, labels = make_inputs((tokens,), hidden_size, torch.float32, fresh_seed(), ignored=0.0)
    fused, unfused = _LargestTensor(), _LargestTensor()
    with fused:
        linear_cross_entropy(hidden, weight, b, labels, chunk_size=chunk, backend="torch").backward()
    with unfused:
        linear_cross_entropy_reference(hidden, weight, b, labels).backward()
    assert unfused.largest >= tokens * VOCAB  # the probe sees the logits of the unfused pair
    assert fused.largest <= max(VOCAB * hidden_size, tokens * chunk) < tokens * VOCAB


def test_bad_arguments_raise_one_line_errors():
    hidden, weight, b, labels = make_inputs((4,), 8, torch.float32, 0, ignored=0.0)
    with pytest.raises(KernelError, match="reduction"):
        linear_cross_entropy(hidden, weight, b, labels, reduction="none", backend="torch")
    with pytest.raises(KernelError, match="labels must be in"):
        linear_cross_entropy(hidden, weight, b, labels + VOCAB, backend="torch")
    with pytest.raises(KernelError, match="labels must be integer"):
        linear_cross_entropy(hidden, weight, b, labels.float(), backend="torch")
    with pytest.raises(KernelError, match="weight"):
        linear_cross_entropy(hidden, weight[:, :3], b, labels, backend="torch")
    with pytest.raises(KernelError, match="label_smoothing"):
        linear_cross_entropy(hidden, weight, b, labels, label_smoothing=1.5, backend="torch")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("chunk", [1, 17, 512, None])
def test_sweep(backend, dtype, chunk):
    if dtype == torch.float16 and DEVICE == "cpu" and backend == "torch":
        pytest.skip("fp16 matmuls on the CPU are emulated and slow")
    seed = fresh_seed()
    hidden, weight, b, labels = make_inputs((4, 65), 48, dtype, seed)
    check(hidden, weight, b, labels, dtype, seed, label_smoothing=0.05, chunk_size=chunk, backend=backend)
