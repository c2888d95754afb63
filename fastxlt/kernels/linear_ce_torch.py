"""Linear + cross-entropy in torch: the per-chunk steps of the CPU path, and the unfused oracle.

The chunked algorithm itself lives in :mod:`.linear_ce`; it calls two per-chunk steps that
exist twice, here in torch and in :mod:`.linear_ce_triton` as Triton kernels:

- :func:`lse_update` folds one vocabulary chunk of logits ``[n, vc]`` into the running
  log-sum-exp state of each row (max ``m``, sum ``s``), and into the target logit ``zy`` and the
  logit sum ``zsum`` (needed by label smoothing);
- :func:`grad_inplace` turns one chunk of logits into ``dLoss/dlogits``
  (``softmax - (1 - eps) * onehot - eps / V``, times the reduction scale), in place, so the
  chunk buffer is reused for the gradient.

:func:`linear_cross_entropy_reference` is the unfused pair (``F.linear`` then
``F.cross_entropy``) in fp32 that the tests and the benchmark compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _target_columns(labels: torch.Tensor, v0: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column of each row's label inside the chunk ``[v0, v0 + width)`` (clamped), and whether it is inside."""
    local = labels - v0
    inside = (local >= 0) & (local < width)
    return local.clamp(0, width - 1), inside


def lse_update(
    logits: torch.Tensor,
    labels: torch.Tensor,
    v0: int,
    m: torch.Tensor,
    s: torch.Tensor,
    zy: torch.Tensor,
    zsum: torch.Tensor,
) -> None:
    """Fold the chunk ``logits`` (columns ``v0 .. v0 + vc``) into the fp32 row state, in place.

    The chunk buffer is consumed (overwritten) to avoid a second chunk-sized temporary.
    """
    z = logits.float()  # the buffer itself when it is fp32
    cols, inside = _target_columns(labels, v0, z.shape[1])
    zy.add_(torch.where(inside, z.gather(1, cols[:, None]).squeeze(1), 0.0))
    zsum.add_(z.sum(dim=1))
    m_new = torch.maximum(m, z.amax(dim=1))
    s.mul_(torch.exp(m - m_new)).add_(z.sub_(m_new[:, None]).exp_().sum(dim=1))
    m.copy_(m_new)


def grad_inplace(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    v0: int,
    vocab: int,
    smoothing: float,
    scale: float,
) -> None:
    """Overwrite the chunk ``logits`` with ``scale * (softmax - (1 - eps) onehot - eps / V)``."""
    z = logits if logits.dtype == torch.float32 else logits.float()
    z.sub_(lse[:, None]).exp_()
    if smoothing:
        z.sub_(smoothing / vocab)
    cols, inside = _target_columns(labels, v0, z.shape[1])
    z.scatter_add_(1, cols[:, None], torch.where(inside, -(1.0 - smoothing), 0.0)[:, None].to(z.dtype))
    z.mul_(scale)
    if z is not logits:
        logits.copy_(z)


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The unfused definition in fp32: full logits, then ``F.cross_entropy``."""
    h = hidden.reshape(-1, hidden.shape[-1]).float()
    logits = F.linear(h, weight.float(), None if bias is None else bias.float())
    return F.cross_entropy(
        logits, labels.reshape(-1), ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )
