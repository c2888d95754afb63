"""Fast CPU dropout (``optimization.fast_dropout``): the keep mask's distribution against the binomial it must follow,
the forward and backward against ``x * keep / (1 - p)`` with the same mask, and the model-level switch against
transformers' own attention and dropout."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastxlt.training import dropout as fast
from fastxlt.training.dropout import (ATTENTION_NAME, FastDropout, fast_dropout, fast_eager_attention,
                                      install_fast_dropout, keep_mask, philox4x32_reference, philox_words_reference)

needs_extension = pytest.mark.skipif(fast._C is None, reason="fastxlt._C is not built (make venv)")

# Random123's tests/kat_vectors, the three "philox4x32 10" lines: counter[4] key[2] -> result[4]
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_philox_reference_reproduces_random123_known_answers(counter, key, expected):
    words = philox4x32_reference(tuple(torch.tensor([c]) for c in counter), key)
    assert tuple(int(w) for w in words) == expected


@needs_extension
@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_philox_kernel_reproduces_random123_known_answers(counter, key, expected):
    assert fast._C.philox4x32(*counter, *key) == expected


@needs_extension
@pytest.mark.parametrize("count, seed", [(1, 0), (7, 5), (4096, 2**63 + 12345), (100_003, 2**64 - 1)])
def test_philox_kernel_equals_the_torch_reference_bit_for_bit(count, seed):
    kernel = torch.from_numpy(fast._C.philox_words(count, seed).astype("int64"))
    assert torch.equal(kernel, philox_words_reference(count, seed))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_follows_the_binomial_and_its_elements_are_independent(p):
    torch.manual_seed(0)
    mask = keep_mask((999, 1001), p)  # odd count: the last Philox block is part used
    count = mask.numel()
    kept = float(mask.float().mean())
    assert abs(kept - (1 - p)) < 6 * math.sqrt(p * (1 - p) / count)
    flat = mask.flatten().float()
    both = float((flat[:-1] * flat[1:]).mean())  # neighbours share a Philox block three times in four
    assert abs(both - (1 - p) ** 2) < 6 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / count)


def test_keep_mask_follows_torch_manual_seed():
    torch.manual_seed(3)
    first = keep_mask((64, 33), 0.1)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((64, 33), 0.1))
    assert not torch.equal(first, keep_mask((64, 33), 0.1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_forward_and_backward_equal_the_masked_reference(dtype, use_kernel, monkeypatch):
    """The fused kernel and the torch fallback (``fastxlt._C`` missing) both give x * keep / (1 - p) with the mask
    of the seed torch's generator hands out, forward and backward, bit for bit (fp32 products; bf16 rounded to
    nearest even)."""
    if use_kernel and fast._C is None:
        pytest.skip("fastxlt._C is not built")
    if not use_kernel:
        monkeypatch.setattr(fast, "_C", None)
    x = torch.randn(8, 17, 23).to(dtype).requires_grad_()
    upstream = torch.randn(8, 17, 23).to(dtype)
    torch.manual_seed(11)
    keep = keep_mask(x.shape, 0.1)
    torch.manual_seed(11)
    out = fast_dropout(x, 0.1)
    scale = torch.tensor(1 / 0.9, dtype=torch.float32)
    assert out.dtype == dtype
    assert torch.equal(out, (x.detach().float() * keep * scale).to(dtype))
    out.backward(upstream)
    assert torch.equal(x.grad, (upstream.float() * keep * scale).to(dtype))


def test_non_contiguous_input_is_handled():
    x = torch.randn(16, 12).t()
    torch.manual_seed(2)
    out = fast_dropout(x, 0.3)
    torch.manual_seed(2)
    assert torch.equal(out, fast_dropout(x.contiguous(), 0.3))


def test_bf16_inputs_stay_bf16():
    out = fast_dropout(torch.randn(4, 8, dtype=torch.bfloat16), 0.1)
    assert out.dtype == torch.bfloat16


def test_eval_mode_and_zero_probability_are_the_identity_and_bad_p_is_refused():
    x = torch.randn(5, 6)
    assert torch.equal(fast_dropout(x, 0.1, training=False), x)
    assert torch.equal(fast_dropout(x, 0.0), x)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        fast_dropout(x, 1.0)


def test_fast_eager_attention_equals_transformers_eager_attention():
    """Without dropout it is transformers' eager attention; with dropout, the same with the probabilities masked by
    the keep mask the seed gives."""
    from transformers.models.bert.modeling_bert import eager_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    additive = torch.zeros(2, 1, 7, 7)
    additive[1, :, :, 5:] = torch.finfo(torch.float32).min
    module = nn.Module()
    module.train()
    out, probs = fast_eager_attention(module, q, k, v, additive, scaling=0.25, dropout=0.0)
    ref_out, ref_probs = eager_attention_forward(module, q, k, v, additive, scaling=0.25, dropout=0.0)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(probs, ref_probs)

    torch.manual_seed(5)
    keep = keep_mask((2, 3, 7, 7), 0.2)
    torch.manual_seed(5)
    out, _ = fast_eager_attention(module, q, k, v, additive, scaling=0.25, dropout=0.2)
    expected = torch.matmul(ref_probs * keep / 0.8, v).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def test_install_switches_a_model_and_keeps_its_eval_outputs(synthetic_model):
    from fastxlt.models.encoder import load_encoder

    reference, model = load_encoder(synthetic_model), load_encoder(synthetic_model)
    counts = install_fast_dropout(model)
    assert counts["attention_models"] == 1 and model.config._attn_implementation == ATTENTION_NAME
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert counts["dropout_modules"] == len(dropouts) > 0 and all(type(m) is FastDropout for m in dropouts)
    ids = torch.tensor([[0, 5, 9, 14, 2, 1, 1], [0, 7, 8, 11, 12, 13, 2]])
    mask = (ids != 1).long()
    reference.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   reference(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   rtol=1e-5, atol=1e-5)
    model.train()
    outputs = []
    for _ in range(2):
        torch.manual_seed(4)
        outputs.append(model(input_ids=ids, attention_mask=mask).last_hidden_state)
    assert torch.equal(outputs[0], outputs[1])  # the masks follow torch.manual_seed, so a resumed run redraws them
    outputs[0].sum().backward()
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_kernel_patched_attention_keeps_its_own_dropout(synthetic_model):
    from fastxlt.kernels import patch
    from fastxlt.models.encoder import load_encoder

    model = load_encoder(synthetic_model)
    patch(model, backend="torch")
    before = model.config._attn_implementation
    assert install_fast_dropout(model)["attention_models"] == 0
    assert model.config._attn_implementation == before
