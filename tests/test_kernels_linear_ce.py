"""Fused linear + cross-entropy: Triton chunk kernels (interpreted on the CPU) and the torch path
against F.linear + F.cross_entropy, loss and the gradients of hidden, weight and bias; the
memory property itself (no tensor of the logits' size is ever created); and the masked-LM head,
which uses the chunked path by default on every device (also under ``kernels: none`` and ZeRO-3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fastxlt.kernels import KernelError, linear_cross_entropy
from fastxlt.kernels.dispatch import interpreting, triton_available
from fastxlt.utils.run_layout import arm_phase_dir
from fastxlt.kernels.linear_ce_torch import linear_cross_entropy_reference
from fastxlt.kernels.testing import assert_close, fresh_seed, lean_interpreter, poison_outputs
from fastxlt.models.heads import MaskedLMHead

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


# ------------------------------------------------------------------------------------------ the masked-LM head

HEAD_BACKENDS = ["auto", *BACKENDS]  # "auto" is the head's default: torch here, Triton on CUDA


def make_head(hidden_size: int, seed: int, kernel_backend: str | None = None) -> MaskedLMHead:
    """A head tied to a fresh embedding matrix, with a non-zero bias (so its gradient is tested too)."""
    torch.manual_seed(seed)
    embeddings = nn.Embedding(VOCAB, hidden_size).to(DEVICE)
    head = MaskedLMHead(hidden_size, embeddings, 1e-5).to(DEVICE)
    with torch.no_grad():
        head.bias.normal_(0.0, 0.5)
    if kernel_backend is not None:
        head.kernel_backend = kernel_backend
    return head


def mlm_batch(batch: int, length: int, hidden_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder output, attention mask and MLM labels: 15 % of positions labelled, the rest -100."""
    gen = torch.Generator().manual_seed(seed)
    sequence_output = torch.randn(batch, length, hidden_size, generator=gen).to(DEVICE).requires_grad_()
    labels = torch.randint(0, VOCAB, (batch, length), generator=gen)
    labels[torch.rand(batch, length, generator=gen) >= 0.15] = -100
    labels[0, 0] = 3  # at least one labelled position
    return sequence_output, torch.ones(batch, length, dtype=torch.long, device=DEVICE), labels.to(DEVICE)


def unfused_head_loss(head: MaskedLMHead, sequence_output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The head's definition written out independently: dense, GELU, LayerNorm, tied decoder, cross-entropy."""
    hidden = F.layer_norm(F.gelu(F.linear(sequence_output, head.dense.weight, head.dense.bias)),
                          (sequence_output.shape[-1],), head.layer_norm.weight, head.layer_norm.bias, 1e-5)
    logits = F.linear(hidden, head.decoder_weight, head.bias)
    return F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)


def head_leaves(head: MaskedLMHead, sequence_output: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"sequence_output": sequence_output, "decoder_weight (tied embeddings)": head.decoder_weight,
            "bias": head.bias, "dense.weight": head.dense.weight, "layer_norm.weight": head.layer_norm.weight}


def test_mlm_head_defaults_to_the_chunked_path():
    assert make_head(16, 0).kernel_backend == "auto"
    with pytest.raises(ValueError, match="kernel_backend"):
        make_head(16, 0, "fused")


@pytest.mark.parametrize("backend", HEAD_BACKENDS)
def test_mlm_head_matches_the_unfused_loss_and_gradients(backend):
    """Loss and the gradients of the encoder output, the tied decoder weight, the bias and the head's own
    layers equal the unfused ``F.cross_entropy(F.linear(...))`` to fp32 tolerance (-100 labels ignored)."""
    seed, hidden_size = fresh_seed(), 48
    head = make_head(hidden_size, seed, None if backend == "auto" else backend)
    sequence_output, mask, labels = mlm_batch(3, 41, hidden_size, seed)
    with poison_outputs():
        loss, logits = head(sequence_output, mask, labels)
        loss.backward()
    assert logits is None
    reference = make_head(hidden_size, seed, "torch")
    ref_output = sequence_output.detach().clone().requires_grad_()
    ref_loss = unfused_head_loss(reference, ref_output, labels)
    ref_loss.backward()
    assert_close(loss, ref_loss, torch.float32, f"head loss seed={seed} backend={backend}")
    for (name, leaf), ref_leaf in zip(head_leaves(head, sequence_output).items(),
                                      head_leaves(reference, ref_output).values()):
        assert_close(leaf.grad, ref_leaf.grad, torch.float32, f"head d{name} seed={seed} backend={backend}")


def test_mlm_head_never_builds_the_logits_unless_opted_out():
    tokens, hidden_size = 130, 16
    sequence_output, mask, labels = mlm_batch(1, tokens, hidden_size, fresh_seed())
    largest = {}
    for backend in ("auto", "none"):
        probe = _LargestTensor()
        with probe:
            head = make_head(hidden_size, 0, backend)
            head(sequence_output, mask, labels)[0].backward()
        largest[backend] = probe.largest
    assert largest["none"] >= tokens * VOCAB  # the opt-out is the unfused pair
    assert largest["auto"] < tokens * VOCAB


@pytest.mark.parametrize("kernels,expected", [("none", "auto"), ("torch", "torch")])
def test_training_loop_keeps_the_chunked_head_with_kernels_none(synthetic_model, tmp_path, kernels, expected):
    """``kernels: none`` leaves the encoder unpatched but must not switch the MLM head to the unfused pair."""
    from fastxlt.config import OptimizationConfig, PhaseConfig
    from fastxlt.tasks.base import get_task
    from fastxlt.training.loop import PhasePlan, _build_model

    spec = get_task("synth-mlm")
    plan = PhasePlan(name="mlm", tasks=[spec], phase=PhaseConfig(tasks=[spec.name]), optimization=OptimizationConfig(),
                     init_encoder=str(synthetic_model), tokenizer=str(synthetic_model), phase_dir=tmp_path, seed=0,
                     kernels=kernels)
    model = _build_model(plan, [SimpleNamespace(spec=spec)])
    assert model.heads[spec.head_key].kernel_backend == expected


def _train_mlm(tmp_path: Path, model: Path, name: str, zero_stage: int) -> dict[str, torch.Tensor]:
    """A 3-step MLM phase through ``fastxlt train`` (one rank, CPU DeepSpeed); its final weights."""
    from safetensors.torch import load_file

    run_dir = tmp_path / name
    config = {
        "name": name, "seed": 7, "run_dir": str(run_dir), "model": {"name_or_path": str(model)}, "kernels": "none",
        "deepspeed": {"zero_stage": zero_stage},
        "optimization": {"lr": 5.0e-4, "batch_size": 8, "grad_accum": 1, "max_length": 32, "max_steps": 3,
                         "eval_every": 3, "eval_batch_tokens": 2048},
        "phases": {"mlm": {"tasks": ["synth-mlm"], "train_examples": 48}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(repo)}
    result = subprocess.run([sys.executable, "-m", "fastxlt.cli", "train", "--no-eval", "--config", str(path)],
                            cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model_dir = arm_phase_dir(run_dir, "mlm") / "model"
    heads = torch.load(model_dir / "heads.pt", weights_only=True)["heads"]
    return {**load_file(model_dir / "encoder" / "model.safetensors"), **{f"head.{k}": v for k, v in heads.items()}}


def test_mlm_phase_under_zero3_matches_zero0(synthetic_model, tmp_path):
    """ZeRO-3 partitions the tied embedding matrix and gathers it for the forward; the chunked loss (the head's
    default) must see the gathered weight and hand its gradient back: same weights as without partitioning.
    The decoder gradient reaches every row of the matrix (softmax over the vocabulary), so a lost or misplaced
    one would move rows by about lr = 5e-4, far beyond the tolerance."""
    plain = _train_mlm(tmp_path, synthetic_model, "zero0", 0)
    partitioned = _train_mlm(tmp_path, synthetic_model, "zero3", 3)
    assert plain.keys() == partitioned.keys()
    for name in plain:
        torch.testing.assert_close(partitioned[name], plain[name], atol=2e-5, rtol=0, msg=name)
