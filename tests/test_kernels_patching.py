"""Patching Hugging Face XLM-R with the fused kernels: a patched tiny model gives the unpatched
model's loss and gradients, and keeps tracking it over a few AdamW steps; config values map to
backends; checkpoints stay plain transformers checkpoints."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    BertModel,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
)

from fastxlt.errors import ConfigError
from fastxlt.kernels import KernelError, patch, resolve_backend
from fastxlt.kernels.dispatch import interpreting, triton_available
from fastxlt.kernels.testing import assert_close, fresh_seed, lean_interpreter

DEVICE = "cuda" if torch.cuda.is_available() and not interpreting() else "cpu"
TRITON_OK = triton_available() and (DEVICE == "cuda" or interpreting())
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not TRITON_OK, reason="no Triton device"))]
if TRITON_OK and interpreting():
    lean_interpreter()

VOCAB = 1001


def tiny_config(**overrides) -> XLMRobertaConfig:
    """Two layers, hidden 128, two heads of 64 (XLM-R's head size); dropout off unless asked."""
    values = dict(
        vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
        attn_implementation="eager",
    )
    values.update(overrides)
    return XLMRobertaConfig(**values)


def batch(seed: int, config: XLMRobertaConfig, lengths=(23, 9, 2)):
    """Right-padded rows of very different lengths, ~30% of real tokens as MLM targets."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(3, config.vocab_size, (len(lengths), width), generator=gen)
    ids[mask == 0] = config.pad_token_id
    chosen = (torch.rand(ids.shape, generator=gen) < 0.3) & (mask == 1)
    chosen[0, 1] = True
    mlm_labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    class_labels = torch.randint(0, config.num_labels, (len(lengths),), generator=gen)
    return ids.to(DEVICE), mask.to(DEVICE), mlm_labels.to(DEVICE), class_labels.to(DEVICE)


def loss_and_grads(model, **inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


def assert_same_grads(patched: dict, reference: dict, tag: str):
    assert patched.keys() == reference.keys(), f"{tag}: parameters with gradients differ"
    # Some gradients are exactly zero in theory (e.g. the key bias: softmax ignores a per-query
    # constant), so the absolute tolerance uses the model's overall gradient scale.
    scale = max(float(g.abs().max()) for g in reference.values())
    for name, expected in reference.items():
        assert_close(patched[name], expected, torch.float32, f"{tag} grad {name}", scale=scale)


@pytest.mark.parametrize("backend", BACKENDS)
def test_patched_masked_lm_tracks_unpatched_under_adamw(backend):
    seed = fresh_seed()
    torch.manual_seed(seed)
    reference = XLMRobertaForMaskedLM(tiny_config()).to(DEVICE)
    patched = patch(copy.deepcopy(reference), backend=backend)
    assert patched._fastxlt_kernels == {
        "attention": backend, "loss": backend, "layernorm": backend,
        "attention_modules": 2, "layernorm_modules": 4, "loss_modules": 1,
    }
    ids, mask, labels, _ = batch(seed, reference.config)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)

    loss_ref, grads_ref = loss_and_grads(reference, **inputs)
    loss_fused, grads_fused = loss_and_grads(patched, **inputs)
    assert_close(loss_fused, loss_ref, torch.float32, f"step-0 loss seed={seed}")
    assert_same_grads(grads_fused, grads_ref, f"step 0 seed={seed}")

    optimisers = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (reference, patched)]
    for step in range(1, 4):
        for optimiser in optimisers:
            optimiser.step()
        loss_ref, _ = loss_and_grads(reference, **inputs)
        loss_fused, _ = loss_and_grads(patched, **inputs)
        torch.testing.assert_close(loss_fused, loss_ref, rtol=1e-4, atol=1e-4, msg=f"step {step} seed={seed}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_patched_sequence_classifier_matches(backend):
    seed = fresh_seed()
    torch.manual_seed(seed)
    reference = XLMRobertaForSequenceClassification(tiny_config()).to(DEVICE)
    patched = patch(copy.deepcopy(reference), backend=backend)
    assert patched._fastxlt_kernels["loss_modules"] == 0  # small logits: the loss stays as it is
    ids, mask, _, labels = batch(seed, reference.config, lengths=(17, 5, 11))
    loss_ref, grads_ref = loss_and_grads(reference, input_ids=ids, attention_mask=mask, labels=labels)
    loss_fused, grads_fused = loss_and_grads(patched, input_ids=ids, attention_mask=mask, labels=labels)
    assert_close(loss_fused, loss_ref, torch.float32, f"loss seed={seed}")
    assert_same_grads(grads_fused, grads_ref, f"classifier seed={seed}")


def test_patched_bert_encoder_matches():
    """BERT (multilingual-e5's architecture) has the same blocks: same hidden states."""
    seed = fresh_seed()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=500, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, attn_implementation="eager")
    reference = BertModel(config).eval()
    patched = patch(copy.deepcopy(reference), backend="torch")
    ids = torch.randint(1, 500, (2, 13))
    mask = torch.tensor([[1] * 13, [1] * 4 + [0] * 9])
    expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    actual = patched(input_ids=ids, attention_mask=mask).last_hidden_state
    assert_close(actual, expected, torch.float32, f"bert hidden states seed={seed}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_patched_model_under_bf16_autocast_matches_unpatched(backend):
    """deepspeed.precision bf16_autocast runs the forward under torch.autocast: the projections come out in bf16
    while the residual stream stays fp32. The patched blocks must add and normalise them as the unfused ones do
    (in fp32), so the patched model's loss and gradients equal the unpatched model's under the same autocast."""
    seed = fresh_seed()
    torch.manual_seed(seed)
    reference = XLMRobertaForMaskedLM(tiny_config()).to(DEVICE)
    patched = patch(copy.deepcopy(reference), backend=backend)
    ids, mask, labels, _ = batch(seed, reference.config)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        loss_ref, grads_ref = loss_and_grads(reference, **inputs)
        loss_fused, grads_fused = loss_and_grads(patched, **inputs)
    assert all(g.dtype == torch.float32 for g in grads_fused.values())
    torch.testing.assert_close(loss_fused, loss_ref, rtol=2e-2, atol=2e-2, msg=f"bf16 autocast loss seed={seed}")
    scale = max(float(g.abs().max()) for g in grads_ref.values())
    for name, expected in grads_ref.items():
        torch.testing.assert_close(grads_fused[name], expected, rtol=0, atol=5e-2 * scale, msg=f"{name} seed={seed}")


def test_masked_lm_without_labels_still_returns_logits_and_checkpoints_stay_plain(tmp_path):
    seed = fresh_seed()
    torch.manual_seed(seed)
    reference = XLMRobertaForMaskedLM(tiny_config()).eval()
    patched = patch(copy.deepcopy(reference), backend="torch")
    ids, mask, labels, _ = batch(seed, reference.config)
    expected = reference(input_ids=ids, attention_mask=mask).logits
    assert_close(patched(input_ids=ids, attention_mask=mask).logits, expected, torch.float32, "logits")
    assert patched(input_ids=ids, attention_mask=mask, labels=labels).logits is None
    assert patched(input_ids=ids, attention_mask=mask, labels=labels, return_dict=False)[0].dim() == 0

    assert set(patched.state_dict()) == set(reference.state_dict())
    patched.save_pretrained(tmp_path)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()  # plain transformers, its default attention
    assert type(reloaded) is XLMRobertaForMaskedLM and reloaded.config._attn_implementation != "fastxlt"
    assert_close(reloaded(input_ids=ids, attention_mask=mask).logits, expected, torch.float32, "reloaded logits")


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_with_dropout_runs_and_eval_is_exact(backend):
    seed = fresh_seed()
    torch.manual_seed(seed)
    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    reference = XLMRobertaForMaskedLM(config).to(DEVICE)
    patched = patch(copy.deepcopy(reference), backend=backend)
    ids, mask, labels, _ = batch(seed, config, lengths=(12, 5, 3))
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    patched.train()
    loss_a, grads = loss_and_grads(patched, **inputs)
    loss_b, _ = loss_and_grads(patched, **inputs)
    assert torch.isfinite(loss_a) and all(torch.isfinite(g).all() for g in grads.values())
    assert loss_a != loss_b  # dropout draws a new mask per step
    reference.eval()
    patched.eval()
    with torch.no_grad():
        assert_close(patched(**inputs).loss, reference(**inputs).loss, torch.float32, f"eval loss seed={seed}")


def test_patch_switches_and_refusals():
    model = XLMRobertaForMaskedLM(tiny_config())
    patch(model, attention=False, loss="torch", layernorm=False)
    assert model.config._attn_implementation == "eager"
    assert model._fastxlt_kernels == {"attention": None, "loss": "torch", "layernorm": None, "loss_modules": 1}
    with pytest.raises(KernelError, match="backend"):
        patch(XLMRobertaForMaskedLM(tiny_config()), backend="cuda")
    with pytest.raises(KernelError, match="bidirectional"):
        patch(XLMRobertaForMaskedLM(tiny_config(is_decoder=True)))


def test_resolve_backend_maps_config_values():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("torch", cuda) == "torch"
    assert resolve_backend("none", cpu) is None and resolve_backend(None, cpu) is None
    assert resolve_backend(" Torch ", "cpu") == "torch"
    if triton_available():
        assert resolve_backend("auto", cuda) == "triton"
        assert resolve_backend("triton", cpu) == "triton"
    with pytest.raises(ConfigError, match="kernels"):
        resolve_backend("fast", cpu)


@pytest.mark.slow
def test_real_multilingual_encoder_patched_gives_same_embeddings(me5_small):
    """multilingual-e5-small (BERT, XLM-R tokenizer), built locally: mean-pooled embeddings match."""
    from fastxlt.models.encoder import load_encoder, load_tokenizer

    model_dir = me5_small
    tokenizer = load_tokenizer(str(model_dir))
    reference = load_encoder(str(model_dir)).eval()
    patched = patch(copy.deepcopy(reference), backend="torch")
    enc = tokenizer(["query: Where is the station?", "passage: Der Bahnhof liegt im Norden der Stadt, nahe am Fluss."],
                    padding=True, return_tensors="pt")

    def pooled(model):
        hidden = model(**enc).last_hidden_state
        weights = enc["attention_mask"].unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1)

    with torch.no_grad():
        assert_close(pooled(patched), pooled(reference), torch.float32, "me5-small embeddings")
