"""Row-sparse word-embedding gradients, accumulated into one persistent dense buffer.

At XLM-R's vocabulary the word-embedding matrix is most of the encoder (250k x 384 of multilingual-e5-small's 118M
weights; 192M of XLM-R base's 278M), yet a batch of 32 x 128 tokens touches at most 4,096 of its rows. Autograd's
dense embedding backward still allocates and zero-fills a fresh matrix-sized gradient every step and scatters the
batch's rows into it: on a 2-core CPU that fill (page faults on a fresh 384 MB allocation) is the largest single
cost of an fp32 or bf16-autocast step after the fused optimizer (issue 13's profile).

``RowSparseEmbeddingGrads`` makes the embedding emit its gradient as sparse rows (``nn.Embedding.sparse``) and adds
them into a dense buffer that lives for the whole phase; before the buffer is reused in the next accumulation cycle
it zeroes only the rows the previous cycle touched. The optimizer, gradient clipping and DeepSpeed still see an
ordinary dense gradient with the same values (the same rows summed in the same order), so the update is the one the
dense backward gives -- unlike a sparse optimizer, every row still decays and moves with its momentum.

Where a dense gradient reaches the weight as well (an MLM head tied to the embeddings), autograd sums both into a
dense tensor before accumulating it; the buffer then holds (or is bypassed by) dense values, and the next cycle
zeroes it whole. Correct in every case, but summed in another order than the dense reference (equal to rounding,
not bit for bit) and no faster, so the training loop installs it only in phases without a masked-LM task.
"""

from __future__ import annotations

import torch
from torch import nn

EVERY_ROW = "every row"  # marker: a dense gradient reached the buffer, so all of it must be zeroed before reuse


class RowSparseEmbeddingGrads:
    """Installs itself on ``embedding`` (an ``nn.Embedding`` whose weight trains) and keeps its gradient buffer."""

    def __init__(self, embedding: nn.Embedding) -> None:
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"row-sparse embedding gradients need an nn.Embedding, got {type(embedding).__name__}")
        self.weight = embedding.weight
        self.buffer = torch.zeros_like(self.weight, memory_format=torch.contiguous_format)
        self.dirty: list[torch.Tensor] | str = []  # rows of the buffer that hold values from an earlier cycle
        self.incoming: list[torch.Tensor] | str = []  # rows of the gradients accumulated in this backward
        embedding.sparse = True
        self.weight.register_hook(self._record_rows)
        self.weight.register_post_accumulate_grad_hook(self._into_buffer)

    def _record_rows(self, grad: torch.Tensor) -> torch.Tensor:
        """Before accumulation: sum the gradient's repeated rows, and note which rows it touches (all of them
        when it arrives dense).

        The repeats of each row are summed from zero in batch order, as the dense backward does, so a micro-batch
        adds one sum per row to the buffer just as autograd adds one dense gradient to another: bit-identical
        gradients with or without accumulation (a test compares them)."""
        if not grad.is_sparse:
            self.incoming = EVERY_ROW
            return grad
        rows, where = torch.unique(grad._indices()[0], return_inverse=True)
        values = grad._values()
        sums = values.new_zeros((len(rows), *values.shape[1:])).index_add_(0, where, values)
        if self.incoming != EVERY_ROW:
            self.incoming.append(rows)
        return torch.sparse_coo_tensor(rows.unsqueeze(0), sums, grad.shape, is_coalesced=True,
                                       check_invariants=False)

    def _into_buffer(self, weight: torch.Tensor) -> None:
        """After accumulation: move a fresh sparse gradient into the (re-zeroed) buffer; remember what it touched."""
        if weight.grad.is_sparse:  # the first backward since the gradient was reset to None
            self._zero_dirty_rows()
            self.buffer.add_(weight.grad)
            weight.grad = self.buffer
        if weight.grad is self.buffer:
            self._mark_dirty(self.incoming)
        self.incoming = []

    def _zero_dirty_rows(self) -> None:
        if self.dirty == EVERY_ROW:
            self.buffer.zero_()
        elif self.dirty:
            self.buffer.index_fill_(0, torch.cat(self.dirty), 0.0)
        self.dirty = []

    def _mark_dirty(self, rows: list[torch.Tensor] | str) -> None:
        if rows == EVERY_ROW or self.dirty == EVERY_ROW:
            self.dirty = EVERY_ROW
        else:
            self.dirty.extend(rows)
