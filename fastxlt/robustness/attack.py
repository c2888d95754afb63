"""An embedding-space attack: projected gradient ascent (PGD, Madry et al. 2018) on the input embeddings.

For each example, a perturbation ``delta`` of the word embeddings of its real (non-padding) tokens is
searched within a ball of radius ``epsilon`` around zero to maximise the cross-entropy of the gold label:

- ``l2``: the whole example's delta (tokens x hidden, as one vector) has L2 norm <= epsilon; a step
  moves ``step_size`` along the normalised gradient, then projects back onto the ball;
- ``linf``: every element of delta is in [-epsilon, epsilon]; a step moves ``step_size`` along the
  gradient's sign, then clips.

Delta starts at zero; ``steps`` ascent steps of ``step_size`` (default 2.5 * epsilon / steps, Madry's
choice) follow, and each example keeps the iterate with the highest loss (the start included), so an
attacked loss is never below the clean loss. The model runs in eval mode (no dropout). The attack
success rate is the share of correctly classified examples whose prediction the attack flips.
Pair classification only: the other families have no single gold label to attack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from fastxlt.inference.batching import pack_batches
from fastxlt.inference.precision import default_batch_tokens

NORMS = ("l2", "linf")


@dataclass(frozen=True)
class AttackConfig:
    """PGD's radius, norm and schedule."""

    epsilon: float
    norm: str = "l2"
    steps: int = 10
    step_size: float | None = None  # None: 2.5 * epsilon / steps

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.epsilon / max(self.steps, 1)


@dataclass
class AttackOutcome:
    """Per-example results of an attack, in input order."""

    gold: list[int]
    clean_predictions: list[int]
    adversarial_predictions: list[int]
    clean_loss: list[float]
    adversarial_loss: list[float]

    @property
    def success_rate(self) -> float:
        """Flipped / correctly classified (0 when nothing was classified correctly)."""
        correct = [i for i, (p, g) in enumerate(zip(self.clean_predictions, self.gold)) if p == g]
        flipped = sum(1 for i in correct if self.adversarial_predictions[i] != self.gold[i])
        return flipped / len(correct) if correct else 0.0


def embeddings_forward(model, head: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       delta: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of ``model``'s ``head`` with ``delta`` added to the word embeddings of ``input_ids``.

    Position ids are those the encoder builds from ``input_ids`` (XLM-R style models count them from the
    padding index), so ``delta=None`` gives the same logits as ``model(head=..., input_ids=...)``."""
    encoder = model.encoder
    embeds = encoder.get_input_embeddings()(input_ids)
    if delta is not None:
        embeds = embeds + delta
    extra = {}
    embedding_module = getattr(encoder, "embeddings", None)
    if hasattr(embedding_module, "create_position_ids_from_input_ids"):
        extra["position_ids"] = embedding_module.create_position_ids_from_input_ids(input_ids, embedding_module.padding_idx)
    hidden = encoder(inputs_embeds=embeds, attention_mask=attention_mask, **extra).last_hidden_state
    _, logits = model.heads[head](hidden, attention_mask, None)
    return logits


def pgd_batch(model, head: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
              config: AttackConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PGD on one batch: (delta, clean logits, adversarial logits, clean loss, adversarial loss), losses per example."""
    if config.norm not in NORMS:
        raise ValueError(f"unknown norm '{config.norm}'; choose {' or '.join(NORMS)}")
    hidden = model.encoder.get_input_embeddings().embedding_dim
    mask = attention_mask.unsqueeze(-1).to(model.encoder.get_input_embeddings().weight.dtype)
    delta = torch.zeros(*input_ids.shape, hidden, dtype=mask.dtype, device=input_ids.device)
    best_delta = delta.clone()
    best_loss = best_logits = clean_logits = clean_loss = None
    for step in range(config.steps + 1):
        delta.requires_grad_(step < config.steps)
        with torch.enable_grad():
            logits = embeddings_forward(model, head, input_ids, attention_mask, delta)
            loss = F.cross_entropy(logits.float(), labels, reduction="none")
            grad = torch.autograd.grad(loss.sum(), delta)[0] if step < config.steps else None
        logits, loss = logits.detach(), loss.detach()
        if step == 0:
            clean_logits, clean_loss = logits, loss
            best_loss, best_logits = loss.clone(), logits.clone()
        else:
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_logits[better] = logits[better]
            best_delta[better] = delta.detach()[better]
        if grad is not None:
            delta = _ascent_step(delta.detach(), grad * mask, mask, config)
    return best_delta, clean_logits, best_logits, clean_loss, best_loss


def _ascent_step(delta: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    """One step up the gradient, projected back into the epsilon ball (padding rows stay zero)."""
    if config.norm == "linf":
        return ((delta + config.alpha * grad.sign()).clamp(-config.epsilon, config.epsilon)) * mask
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    delta = (delta + config.alpha * grad / norms) * mask
    return project_l2(delta, config.epsilon)


def project_l2(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Scale each example's delta down to L2 norm epsilon when it is longer."""
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1)
    return delta * torch.clamp(epsilon / norms.clamp_min(1e-12), max=1.0)


def attack_features(model, head: str, ops, features: Sequence[dict], tokenizer, config: AttackConfig, *,
                    batch_tokens: int | None = None, max_batch_size: int = 64) -> AttackOutcome:
    """PGD on every feature (pair classification), in length-sorted token-budget batches; results in input order."""
    n = len(features)
    outcome = AttackOutcome([0] * n, [0] * n, [0] * n, [0.0] * n, [0.0] * n)
    if n == 0:
        return outcome
    device = next(model.parameters()).device
    lengths = np.fromiter((ops.length(f) for f in features), dtype=np.int64, count=n)
    order, offsets = pack_batches(lengths, batch_tokens or default_batch_tokens(device), max_batch_size)
    was_training = model.training
    model.eval()
    try:
        for b in range(len(offsets) - 1):
            rows = order[offsets[b]: offsets[b + 1]]
            batch = {k: v.to(device) for k, v in ops.collate([features[i] for i in rows], tokenizer).items()}
            _, clean, adversarial, clean_loss, adv_loss = pgd_batch(
                model, head, batch["input_ids"], batch["attention_mask"], batch["labels"], config
            )
            for k, row in enumerate(rows):
                outcome.gold[row] = int(batch["labels"][k])
                outcome.clean_predictions[row] = int(clean[k].argmax())
                outcome.adversarial_predictions[row] = int(adversarial[k].argmax())
                outcome.clean_loss[row] = float(clean_loss[k])
                outcome.adversarial_loss[row] = float(adv_loss[k])
    finally:
        model.train(was_training)
    return outcome
