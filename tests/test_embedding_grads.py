"""Row-sparse word-embedding gradients (``optimization.sparse_embedding_grads``): against autograd's dense embedding
backward as the reference, the same gradients and weights bit for bit -- with repeated rows, the padding row,
gradient accumulation, clipping and AdamW -- and through ``fastxlt train``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fastxlt.training.embedding_grads import RowSparseEmbeddingGrads

VOCAB, WIDTH, PAD = 500, 16, 1


def twin_embeddings(seed: int = 0) -> tuple[nn.Embedding, nn.Embedding, RowSparseEmbeddingGrads]:
    torch.manual_seed(seed)
    dense = nn.Embedding(VOCAB, WIDTH, padding_idx=PAD)
    rows = copy.deepcopy(dense)
    return dense, rows, RowSparseEmbeddingGrads(rows)


def batches(step: int, micro: int) -> torch.Tensor:
    """Token ids; odd steps draw from 40 ids only (many repeats within and across micro-batches); padding included."""
    generator = torch.Generator().manual_seed(1000 * step + micro)
    ids = torch.randint(0, 40 if step % 2 else VOCAB, (4, 9), generator=generator)
    ids[0, -3:] = PAD
    return ids


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_gradients_and_adamw_updates_equal_the_dense_backward_bit_for_bit(grad_accum):
    dense, rows, buffer = twin_embeddings()
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.01) for m in (dense, rows)]
    for step in range(6):
        for micro in range(grad_accum):
            ids = batches(step, micro)
            weights = torch.randn(*ids.shape, WIDTH, generator=torch.Generator().manual_seed(step * 7 + micro))
            for model in (dense, rows):
                (model(ids) * weights).sum().backward()
        assert rows.weight.grad is buffer.buffer and not rows.weight.grad.is_sparse
        assert torch.equal(dense.weight.grad, rows.weight.grad), step
        assert not rows.weight.grad[PAD].any()
        for model, optimizer in zip((dense, rows), optimizers):
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert torch.equal(dense.weight, rows.weight)


def test_rows_of_an_earlier_step_do_not_leak_into_the_next():
    """Step 1 touches rows 10..19, step 2 only rows 30..39: step 2's gradient is zero outside 30..39."""
    _, rows, _ = twin_embeddings()
    rows(torch.arange(10, 20)).sum().backward()
    rows.weight.grad = None  # as DeepSpeed's zero_grad does
    rows(torch.arange(30, 40)).sum().backward()
    touched = rows.weight.grad.abs().sum(dim=1) > 0
    assert touched.nonzero().flatten().tolist() == list(range(30, 40))


def test_a_tied_dense_use_of_the_weight_stays_correct():
    """An MLM decoder tied to the embeddings sends a dense gradient too: autograd sums both before accumulating
    (in another order than the reference, so equal to rounding, not bit for bit: the training loop leaves masked-LM
    phases on the dense backward); the buffer is bypassed or filled densely and zeroed whole before its next use,
    so no row of a tied step leaks into the untied steps after it."""
    dense, rows, _ = twin_embeddings()
    for step in range(4):
        tied = step % 2 == 0
        for model in (dense, rows):
            model.weight.grad = None
            hidden = model(batches(step, 0))
            loss = hidden.pow(2).sum()
            if tied:
                loss = loss + (hidden @ model.weight.t()).logsumexp(-1).sum()
            loss.backward()
        torch.testing.assert_close(rows.weight.grad, dense.weight.grad, rtol=1e-6, atol=1e-7)
        assert not rows.weight.grad.is_sparse


def test_refuses_a_module_that_is_not_an_embedding():
    with pytest.raises(TypeError, match="nn.Embedding"):
        RowSparseEmbeddingGrads(nn.Linear(3, 3))


def test_fastxlt_train_gives_the_same_weights_with_and_without(tmp_path, synthetic_model):
    """Through ``fastxlt train`` (grad_accum 2, clipping, AdamW, one rank, fp32): the option changes no weight."""
    from test_training import final_weights, run_cli, write_config

    weights = []
    for flag in (False, True):
        run_dir = tmp_path / f"sparse-{flag}"
        config = write_config(tmp_path, synthetic_model, run_dir, optimization__sparse_embedding_grads=flag)
        run_cli("-m", "fastxlt.cli", "train", "--no-eval", "--config", str(config))
        weights.append(final_weights(run_dir))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_the_training_loop_installs_the_speed_options_only_where_asked(synthetic_model):
    """``install_speed_options`` (what ``run_phase`` and the benchmark call): the embedding turns sparse with a
    buffer only when the option is on, the weight trains and no masked-LM decoder is tied to it; fast dropout
    swaps the dropout modules. Without this, the bit-identity test above would pass with the option ignored."""
    from fastxlt.config import OptimizationConfig
    from fastxlt.models.encoder import load_encoder
    from fastxlt.models.transfer import TransferModel
    from fastxlt.tasks.base import get_task
    from fastxlt.training.dropout import FastDropout
    from fastxlt.training.loop import install_speed_options

    def built(masked_lm: bool = False, freeze: bool = False, **options) -> TransferModel:
        model = TransferModel(load_encoder(synthetic_model), [get_task("synth-para")])
        model.encoder.get_input_embeddings().weight.requires_grad_(not freeze)
        install_speed_options(model, OptimizationConfig(**options), masked_lm=masked_lm)
        return model

    def sparse(model: TransferModel) -> bool:
        return model.encoder.get_input_embeddings().sparse and hasattr(model, "_sparse_embedding_grads")

    assert sparse(built(sparse_embedding_grads=True))
    assert not sparse(built())
    assert not sparse(built(masked_lm=True, sparse_embedding_grads=True))
    assert not sparse(built(freeze=True, sparse_embedding_grads=True))
    dropouts = lambda model: [type(m) for m in model.modules() if isinstance(m, nn.Dropout)]  # noqa: E731
    assert set(dropouts(built(fast_dropout=True))) == {FastDropout}
    assert FastDropout not in dropouts(built())
