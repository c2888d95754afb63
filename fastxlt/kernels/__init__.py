"""fastxlt.kernels: fused Triton kernels for XLM-R training, each with a torch twin.

Why: in intermediate training with multilingual MLM, the ``[tokens, 250,002]`` MLM logits are the
largest tensor by far, and attention over padded batches dominates the rest. These kernels
remove both costs on GPU nodes; on the CPU (and wherever Triton cannot run) each op falls back
to a torch path with the same contract, so the same training code runs everywhere.

Kernels
-------

``attention(q, k, v, key_padding_mask, *, dropout_p=0.0, scale=None, backend="auto")``
    Bidirectional FlashAttention-2 style forward and backward with a key-padding mask.
    q, k, v ``[B, H, T, D]``; mask ``[B, Tk]`` (True = real token) or None. Any sequence length
    (no multiple-of-128 restriction), head dim up to 256 (64 and 128 are the XLM-R/BERT cases),
    fp32/bf16/fp16 with fp32 accumulation (fp32 dots in IEEE precision, not TF32). Only the
    per-row log-sum-exp is stored for the backward. **Attention dropout is supported**: the
    keep mask comes from Philox counters and is regenerated in the backward (nothing stored).
    Rows of the batch with no real token give zeros. Torch path: SDPA with a bool mask.

``linear_cross_entropy(hidden, weight, bias, labels, *, ignore_index=-100, reduction="mean",
label_smoothing=0.0, chunk_size=None, backend="auto")``
    ``cross_entropy(hidden @ weight.T + bias, labels)`` without the logits tensor: ignored rows
    are dropped first, then the vocabulary is walked in chunks (online log-sum-exp; gradients of
    hidden, weight and bias computed chunk by chunk in a second pass). Reductions ``mean`` and
    ``sum``; label smoothing as in ``F.cross_entropy``; returns an fp32 scalar. The Triton
    kernels fuse the softmax/loss/gradient steps between the cuBLAS products; the torch path is
    chunked the same way, so it has the same memory property on the CPU.

``residual_dropout_layernorm(x, residual, weight, bias, *, p=0.0, eps=1e-5, training=False,
backend="auto")``
    ``LayerNorm(dropout(x) + residual)`` (post-LN, as in XLM-R) in one pass, forward and
    backward, rows up to 16,384 wide; dropout supported (Philox mask regenerated in backward).

Dispatch
--------

``backend="auto"`` runs Triton for CUDA tensors and torch otherwise, decided per call;
``"triton"`` forces the kernels (CPU tensors only under ``TRITON_INTERPRET=1``, which is how the
tests prove them on machines without a GPU); ``"torch"`` forces the torch path. Config files
use ``kernels: auto|triton|torch|none``; :func:`resolve_backend` maps such a value and a
device to ``"triton"``, ``"torch"`` or None. Bad arguments raise :class:`KernelError`
(a ``FastXLTError``) with a one-line message.

Patching Hugging Face models
----------------------------

``patch(model, attention=True, loss=True, layernorm=True, backend="auto")`` swaps, in place,
the self-attention (via transformers' ``AttentionInterface``), the residual+dropout+LayerNorm
blocks and, for ``XLMRobertaForMaskedLM``, the MLM loss (``outputs.logits`` is then None when
labels are given). Works for ``XLMRobertaModel`` and every XLM-R head, and for RoBERTa/BERT.
State-dict keys do not change. Decoder configurations (``is_decoder=True``) are refused.

How the kernels are proven without a GPU
----------------------------------------

``tests/test_kernels_*.py`` run every Triton kernel under ``TRITON_INTERPRET=1`` on CPU tensors
against an fp32 reference (forward and backward; odd lengths 1/7/129/333, ragged padding, hidden
1023; outputs poisoned with NaN before each launch), including the GPU launch shapes, and a
patched tiny XLM-R against the unpatched one over AdamW steps. ``python -m
fastxlt.kernels.compile_check`` compiles each kernel ahead of time for sm_90/sm_80 (no device
needed) and checks its shared memory. ``benchmarks/fused_kernels.py`` measures memory on the CPU and
time/memory against PyTorch on a CUDA node. Test helpers live in :mod:`.testing`.
"""

from __future__ import annotations

from fastxlt.kernels.attention import attention
from fastxlt.kernels.dispatch import KernelError, resolve_backend
from fastxlt.kernels.layernorm import residual_dropout_layernorm
from fastxlt.kernels.linear_ce import linear_cross_entropy
from fastxlt.kernels.patching import patch

__all__ = [
    "KernelError",
    "attention",
    "linear_cross_entropy",
    "patch",
    "residual_dropout_layernorm",
    "resolve_backend",
]
