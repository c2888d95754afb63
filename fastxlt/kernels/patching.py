"""Plug the fused kernels into Hugging Face XLM-R (and BERT/RoBERTa) models: :func:`patch`.

What is swapped, and how (transformers 5.x):

- **attention**: transformers dispatches self-attention through ``AttentionInterface`` keyed by
  ``config._attn_implementation``. We register :func:`hf_attention` under ``"fastxlt"`` with a
  mask builder that hands over the plain 2-D padding mask (or None when nothing is padded), and
  switch the model to it with ``set_attn_implementation``. Each self-attention module carries
  its backend in ``_fastxlt_backend``.
- **residual + dropout + LayerNorm**: every ``*SelfOutput``/``*Output`` block (dense, dropout,
  add, LayerNorm) gets its class swapped for a subclass whose forward calls
  :func:`.residual_dropout_layernorm`. Parameters and state-dict keys do not change, so
  checkpoints stay loadable by plain transformers.
- **loss**: ``XLMRobertaForMaskedLM`` / ``RobertaForMaskedLM`` get a forward that, when labels are
  given, runs the LM-head transform and hands the decoder weight and bias to
  :func:`.linear_cross_entropy`: the ``[tokens, 250002]`` logits are never built, and
  ``outputs.logits`` is None. Without labels the original forward runs (logits for inference).
  Other heads have small logits and keep their loss.

Backends are stored as given (``auto`` is resolved per call from the tensors' device), so a
model patched on the CPU and moved to a GPU afterwards uses Triton there.

**The T5 family (mT5) is not covered**: its attention adds a learned relative position bias and does
not scale by 1/sqrt(d), and its norms are RMSNorms without bias or mean subtraction, none of which the
fused kernels implement. ``patch`` recognises no T5 module, so nothing of an mT5 encoder is swapped:
with ``auto`` (or ``torch``) it runs transformers' own attention and norms and says so once, in one
log line; ``triton`` is refused with a one-line error, since it asks for kernels that do not exist.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.bert import modeling_bert as _bert
from transformers.models.roberta import modeling_roberta as _roberta
from transformers.models.xlm_roberta import modeling_xlm_roberta as _xlmr

from fastxlt.kernels.attention import attention
from fastxlt.kernels.dispatch import KernelError, check_backend
from fastxlt.kernels.layernorm import residual_dropout_layernorm
from fastxlt.kernels.linear_ce import linear_cross_entropy

log = logging.getLogger(__name__)

ATTENTION_NAME = "fastxlt"
T5_MODEL_TYPES = ("t5", "mt5", "umt5")  # as fastxlt.models.family (kernels do not import the models package)
_UNCOVERED_NOTICE_SHOWN: set[str] = set()
_SELF_ATTENTION = (_xlmr.XLMRobertaSelfAttention, _roberta.RobertaSelfAttention, _bert.BertSelfAttention)
_MASKED_LM = (_xlmr.XLMRobertaForMaskedLM, _roberta.RobertaForMaskedLM)


# ----------------------------------------------------------------------------------------- attention


def _padding_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """Mask builder for ``"fastxlt"``: the 2-D bool padding mask, or None when nothing is padded.

    transformers asks for vmap-built masks only when a model overlays its own mask pattern
    (``or_mask_function``/``and_mask_function``); a key-padding mask cannot express those.
    """
    if kwargs.get("use_vmap"):
        raise KernelError("this model combines custom attention-mask patterns; patch it with attention=False")
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -kv_length:]
    return None if bool(attention_mask.all()) else attention_mask


def hf_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The ``AttentionInterface`` entry: q, k, v ``[B, H, T, D]`` in, ``[B, T, H, D]`` out, no weights."""
    if getattr(module, "is_causal", False):
        raise KernelError("the fused attention is bidirectional only; do not patch decoder models (is_decoder=True)")
    if attention_mask is not None and attention_mask.dim() != 2:
        # A caller-prepared 4-D mask: not a padding mask, so leave it to SDPA.
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
        )
        return out.transpose(1, 2), None
    backend = getattr(module, "_fastxlt_backend", "auto")
    out = attention(query, key, value, attention_mask, dropout_p=dropout, scale=scaling, backend=backend)
    return out.transpose(1, 2), None


def _register_attention() -> None:
    AttentionInterface.register(ATTENTION_NAME, hf_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _padding_mask)


def _patch_attention(model: nn.Module, backend: str) -> int:
    modules = [m for m in model.modules() if isinstance(m, _SELF_ATTENTION)]
    if not modules:
        return 0
    if any(getattr(m, "is_causal", False) for m in modules):
        raise KernelError("the fused attention is bidirectional only; patch with attention=False for decoder models")
    _register_attention()
    for module in modules:
        module._fastxlt_backend = backend
    for pretrained in outermost_pretrained(model):
        pretrained.set_attn_implementation(ATTENTION_NAME)
    return len(modules)


def outermost_pretrained(model: nn.Module) -> list[PreTrainedModel]:
    """The outermost PreTrainedModels (set_attn_implementation recurses into the nested ones)."""
    if isinstance(model, PreTrainedModel):
        return [model]
    found: list[PreTrainedModel] = []
    for child in model.children():
        found.extend(outermost_pretrained(child))
    return found


# ----------------------------------------------------------------------------- residual + LayerNorm


class _FusedResidualLayerNorm:
    """Forward of the ``dense -> dropout -> + input -> LayerNorm`` blocks, through the fused op."""

    _fastxlt_backend = "auto"

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        norm = self.LayerNorm
        projected = self.dense(hidden_states)
        if projected.dtype != input_tensor.dtype:
            # under torch.autocast the projection is bf16 while the residual stream is fp32: the unfused block
            # adds them in the promoted type (fp32) and normalises in fp32, so the fused op does the same
            common = torch.promote_types(projected.dtype, input_tensor.dtype)
            projected, input_tensor = projected.to(common), input_tensor.to(common)
        return residual_dropout_layernorm(
            projected, input_tensor, norm.weight, norm.bias,
            p=self.dropout.p, eps=norm.eps, training=self.training, backend=self._fastxlt_backend,
        )


class FusedXLMRobertaSelfOutput(_FusedResidualLayerNorm, _xlmr.XLMRobertaSelfOutput):
    """XLMRobertaSelfOutput with the fused residual + dropout + LayerNorm."""


class FusedXLMRobertaOutput(_FusedResidualLayerNorm, _xlmr.XLMRobertaOutput):
    """XLMRobertaOutput with the fused residual + dropout + LayerNorm."""


class FusedRobertaSelfOutput(_FusedResidualLayerNorm, _roberta.RobertaSelfOutput):
    """RobertaSelfOutput with the fused residual + dropout + LayerNorm."""


class FusedRobertaOutput(_FusedResidualLayerNorm, _roberta.RobertaOutput):
    """RobertaOutput with the fused residual + dropout + LayerNorm."""


class FusedBertSelfOutput(_FusedResidualLayerNorm, _bert.BertSelfOutput):
    """BertSelfOutput with the fused residual + dropout + LayerNorm."""


class FusedBertOutput(_FusedResidualLayerNorm, _bert.BertOutput):
    """BertOutput with the fused residual + dropout + LayerNorm."""


_FUSED_OUTPUT: dict[type, type] = {
    _xlmr.XLMRobertaSelfOutput: FusedXLMRobertaSelfOutput,
    _xlmr.XLMRobertaOutput: FusedXLMRobertaOutput,
    _roberta.RobertaSelfOutput: FusedRobertaSelfOutput,
    _roberta.RobertaOutput: FusedRobertaOutput,
    _bert.BertSelfOutput: FusedBertSelfOutput,
    _bert.BertOutput: FusedBertOutput,
}


def _patch_layernorm(model: nn.Module, backend: str) -> int:
    already_fused = set(_FUSED_OUTPUT.values())
    count = 0
    for module in model.modules():
        if type(module) in _FUSED_OUTPUT:
            module.__class__ = _FUSED_OUTPUT[type(module)]
        elif type(module) not in already_fused:
            continue
        module._fastxlt_backend = backend
        count += 1
    return count


# ------------------------------------------------------------------------------------------ MLM loss


def _masked_lm_forward(
    model: PreTrainedModel,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    return_dict: bool | None = None,
    **kwargs: Any,
):
    """MaskedLM forward whose loss goes through linear_cross_entropy (no logits when labels are given)."""
    inputs = dict(
        attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
        inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
        encoder_attention_mask=encoder_attention_mask, **kwargs,
    )
    if labels is None:
        if return_dict is not None:
            inputs["return_dict"] = return_dict
        return type(model).forward(model, input_ids, **inputs)
    outputs = model.roberta(input_ids, return_dict=True, **inputs)
    head = model.lm_head
    gelu = getattr(sys.modules[type(head).__module__], "gelu")
    features = head.layer_norm(gelu(head.dense(outputs.last_hidden_state)))
    loss = linear_cross_entropy(
        features, head.decoder.weight, head.decoder.bias, labels.to(features.device),
        backend=model._fastxlt_loss_backend,
    )
    result = MaskedLMOutput(loss=loss, logits=None, hidden_states=outputs.hidden_states, attentions=outputs.attentions)
    return result.to_tuple() if return_dict is False else result


def _patch_mlm_loss(model: nn.Module, backend: str) -> int:
    if not isinstance(model, _MASKED_LM):
        return 0
    model._fastxlt_loss_backend = backend
    model.forward = functools.partial(_masked_lm_forward, model)  # partial: survives copy.deepcopy
    return 1


# ------------------------------------------------------------------------------- uncovered models


def _uncovered_family(model: nn.Module) -> str | None:
    """The model_type of a T5-family model in ``model`` (its attention and norms have no fused kernel), else None."""
    for module in model.modules():
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if isinstance(module, PreTrainedModel) and model_type in T5_MODEL_TYPES:
            return model_type
    return None


def _refuse_or_notice(model_type: str, backends: list[str | None]) -> None:
    """``triton`` for a model the kernels do not cover is an error; ``auto``/``torch`` fall back, said once."""
    if "triton" in backends:
        raise KernelError(
            f"kernels: triton has no kernels for {model_type} (relative-position-bias attention without scaling, "
            "RMSNorm); set kernels: auto to run transformers' own attention and norms"
        )
    if model_type in _UNCOVERED_NOTICE_SHOWN or os.environ.get("RANK", "0") != "0":
        return
    _UNCOVERED_NOTICE_SHOWN.add(model_type)
    log.warning(
        "kernels: %s attention (relative position bias, no scaling) and RMSNorm have no fused kernel; "
        "the encoder runs transformers' own attention and norms (torch path)", model_type,
    )


# ---------------------------------------------------------------------------------------- public


def _kernel_backend(choice: bool | str | None, default: str) -> str | None:
    """Per-kernel switch: False/None/'none' skip it, True uses ``default``, a string names a backend."""
    if choice is None or choice is False or (isinstance(choice, str) and choice.strip().lower() == "none"):
        return None
    return check_backend(default if choice is True else choice)


def patch(
    model: nn.Module,
    attention: bool | str = True,
    loss: bool | str = True,
    layernorm: bool | str = True,
    backend: str = "auto",
) -> nn.Module:
    """Swap a Hugging Face XLM-R/RoBERTa/BERT model's attention, MLM loss and residual LayerNorms
    for the fused kernels, in place; returns the model.

    Each of ``attention``, ``loss``, ``layernorm`` is True (use ``backend``), False (leave as is)
    or a backend name (``auto``, ``triton``, ``torch``). ``model._fastxlt_kernels`` records what
    was patched, e.g. ``{"attention": "auto", "attention_modules": 12, ...}``.
    """
    default = check_backend(backend)
    choices = {
        "attention": _kernel_backend(attention, default),
        "loss": _kernel_backend(loss, default),
        "layernorm": _kernel_backend(layernorm, default),
    }
    uncovered = _uncovered_family(model)
    if uncovered is not None:
        _refuse_or_notice(uncovered, [choices["attention"], choices["layernorm"]])
    report: dict[str, Any] = dict(choices)
    if choices["attention"]:
        report["attention_modules"] = _patch_attention(model, choices["attention"])
    if choices["layernorm"]:
        report["layernorm_modules"] = _patch_layernorm(model, choices["layernorm"])
    if choices["loss"]:
        report["loss_modules"] = _patch_mlm_loss(model, choices["loss"])
    model._fastxlt_kernels = report
    return model
