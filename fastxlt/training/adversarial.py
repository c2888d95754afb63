"""Adversarial training on the input embeddings: FreeLB, PGD, SMART and R3F, one function each.

Every method perturbs the *output* of the encoder's input-embedding module (``get_input_embeddings()``),
through a forward hook, so it works for any encoder family and any head without knowing the model's
internals, and under ZeRO-3 it never touches a partitioned parameter. Each method runs the forward and
backward passes of one micro-batch itself (FreeLB accumulates parameter gradients over its ascent passes)
through ``engine(head=..., **batch)`` and ``engine.backward``, so DeepSpeed's loss scaling and gradient
accumulation apply unchanged; the loop calls :func:`adversarial_step` instead of its own forward/backward.

Determinism: the dropout of every forward pass is seeded from ``dropout_seed`` and the random starts from
``noise_seed``, both pure functions of (seed, global batch index) in the loop, so a resumed phase ends with the
same weights. FreeLB and PGD use one dropout mask for all passes of a batch (their published code keeps the
mask across ascent steps); SMART and R3F draw a fresh mask per pass, as their published code does.

Defaults and algorithms follow the published code (``fastxlt.config.ADVERSARIAL_DEFAULTS``):
- FreeLB, zhuchen03/FreeLB ``fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py: freelb_train_step``: a random
  start uniform in [-1, 1] on real tokens scaled by ``init_magnitude / sqrt(length * dim)`` (l2) or uniform in
  [-init_magnitude, init_magnitude] (linf); ``steps`` ascent updates, so ``steps + 1`` forward/backward passes whose
  parameter gradients are accumulated, each loss divided by ``steps + 1``; the step is
  ``step_size * grad / ||grad||`` per example, then a projection on the ``max_norm`` ball (l2: rescale, linf:
  clamp; 0 = unbounded).
- PGD (Madry et al.), the same repository's ``std_adv_train_step``: the same start and ascent, but the ascent
  gradients reach only the perturbation (``torch.autograd.grad``); the parameters train on the final
  adversarial loss alone.
- SMART, namisan/mt-dnn ``mt_dnn/perturbation.py: SmartPerturbation``: normal noise of std ``noise``; each of
  ``steps`` ascent steps moves the noise by ``step_size * grad`` of the stabilised KL (``stable_kl`` in
  ``mt_dnn/loss.py``) and rescales it to unit inf-norm per token (times ``max_norm``; 1 is their code); the
  regulariser is the symmetric KL between clean and adversarial predictions, each direction against a
  detached target (their ``SymKlCriterion``), weighted by ``weight``.
- R3F, fairseq ``criterions/sentence_prediction_r3f.py``: noise uniform in [-noise, noise] (or normal of std
  ``noise``) added to the *detached* embeddings; the regulariser is the symmetric KL between clean and noisy
  predictions, gradients through both, summed and divided by the number of predictions, weighted by ``weight``.

Predictions for the KL terms, per family: a distribution per example (pair classification, multiple choice),
per answer boundary over the positions (span QA), per labelled token (tagging) and per masked token (masked
LM: the vocabulary logits of the masked positions only, so the full logits are never materialised).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from fastxlt.config import AdversarialConfig
from fastxlt.errors import ConfigError
from fastxlt.tasks.base import Family

GRAD_FLOOR = {"l2": 1e-10, "linf": 1e-8}  # FreeLB's clamps of the gradient norm
SMART_EPSILON = 1e-6  # mt-dnn's --adv_epsilon: keeps the per-token inf-norm rescaling finite


def adversarial_step(
    engine, head: str, batch: dict[str, torch.Tensor], settings: AdversarialConfig, dropout_seed: int, noise_seed: int
) -> torch.Tensor:
    """Forward and backward passes of one micro-batch under ``settings``; returns the (detached) loss it trained on."""
    run = PerturbedForward(engine, head, batch)
    generator = torch.Generator().manual_seed(noise_seed)
    return METHODS[settings.method](run, settings, dropout_seed, generator).detach()


class PlainEngine:
    """What ``adversarial_step`` uses from a DeepSpeed engine (a call, ``backward``, ``module``), on a plain module in
    one process: the tests and ``benchmarks/adversarial_cost.py`` measure the methods, not DeepSpeed. ``backward``
    divides the loss by ``grad_accum``, as the engine does under gradient accumulation."""

    def __init__(self, module: nn.Module, grad_accum: int = 1) -> None:
        self.module = module
        self.grad_accum = grad_accum

    def __call__(self, **inputs):
        return self.module(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()


class PerturbedForward:
    """``engine(head=..., **batch)`` with a perturbation added to the input-embedding output.

    ``delta`` has the embedding output's shape: (sequences, tokens, dim), multiple-choice inputs flattened to
    one sequence per choice, as the encoder sees them.
    """

    def __init__(self, engine, head: str, batch: dict[str, torch.Tensor]) -> None:
        model = engine.module
        self.engine, self.head, self.batch = engine, head, batch
        self.embeddings: nn.Module = model.encoder.get_input_embeddings()
        self.hooked = embedding_modules(model.encoder, self.embeddings)
        self.head_module: nn.Module = model.heads[head]
        self.family: Family = model.head_tasks[head].family
        dim = getattr(self.embeddings, "embedding_dim", None)
        if dim is None:
            raise ConfigError(
                f"adversarial training needs an nn.Embedding input layer; {type(self.embeddings).__name__} has no embedding_dim"
            )
        mask = batch["attention_mask"]
        self.token_mask = mask.reshape(-1, mask.shape[-1])  # (sequences, tokens): 1 on real tokens
        self.shape = (*self.token_mask.shape, dim)

    def __call__(
        self, delta: torch.Tensor | None, dropout_seed: int, *, detach_embeddings: bool = False, predictions: bool = False,
        attack: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(task loss, prediction logits for the KL terms or None) of one forward pass.

        ``attack``: the pass only feeds ``torch.autograd.grad`` for the perturbation, so it runs the engine's module
        directly. DeepSpeed hooks every output of ``engine(...)`` for its own backward (timers, ZeRO's prologue,
        gradient-accumulation scaling) and, at ZeRO stage 0, refuses any backward that is not ``engine.backward``.
        """
        torch.manual_seed(dropout_seed)
        captured: dict[str, torch.Tensor] = {}
        forward = self.engine.module if attack else self.engine
        with _perturb(self.hooked, delta, detach_embeddings), _capture_head_input(self.head_module, captured, predictions):
            loss, logits = forward(head=self.head, **self.batch)
        return loss, (self._prediction_rows(logits, captured.get("hidden")) if predictions else None)

    def _prediction_rows(self, logits: torch.Tensor | None, hidden: torch.Tensor | None) -> torch.Tensor:
        """(distributions, classes) logits in float32: what the task loss scores, one row per distribution."""
        labels = self.batch.get("labels")
        if self.family is Family.MASKED_LM:
            selected = hidden[labels != -100]  # only the masked positions: never the (tokens x vocabulary) logits
            return self.head_module(selected, None)[1].float()
        if self.family is Family.SPAN_QA:  # (batch, tokens, 2) -> one distribution over positions per boundary
            return logits.transpose(1, 2).reshape(-1, logits.shape[1]).float()
        if self.family is Family.TOKEN_TAGGING:
            return logits[labels != -100].float()
        return logits.float()  # pair classification (batch, labels), multiple choice (batch, choices)


def embedding_modules(encoder: nn.Module, embeddings: nn.Module) -> list[nn.Module]:
    """Every module that looks tokens up in the input-embedding weight.

    ``get_input_embeddings()`` may return a module the forward never calls: mT5's ``shared`` is tied to a
    separate ``encoder.embed_tokens``. Hooking every embedding module on the same weight covers both.
    """
    weight = embeddings.weight
    tied = [m for m in encoder.modules() if isinstance(m, nn.Embedding) and m is not embeddings and m.weight is weight]
    return [embeddings, *tied]


@contextmanager
def _perturb(modules: list[nn.Module], delta: torch.Tensor | None, detach: bool) -> Iterator[None]:
    calls = []

    def hook(module, inputs, output):
        calls.append(module)
        if len(calls) > 1:  # the perturbation would be added twice (or to a second, unrelated lookup)
            raise RuntimeError("the input embeddings were looked up twice in one forward; adversarial training needs one lookup")
        base = output.detach() if detach else output
        return base if delta is None else base + delta.to(output.dtype)

    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _capture_head_input(head: nn.Module, captured: dict, active: bool) -> Iterator[None]:
    """Keep the sequence output the head receives (masked LM computes its KL logits from it)."""
    if not active:
        yield
        return
    handle = head.register_forward_hook(lambda module, args, output: captured.update(hidden=args[0]))
    try:
        yield
    finally:
        handle.remove()


# ------------------------------------------------------------------------------ the methods


def freelb(run: PerturbedForward, settings: AdversarialConfig, dropout_seed: int, generator: torch.Generator) -> torch.Tensor:
    """FreeLB: parameter gradients accumulated over ``steps + 1`` passes along the ascent, one dropout mask."""
    delta = random_start(run, settings, generator)
    passes, total = settings.steps + 1, 0.0
    for index in range(passes):
        delta.requires_grad_()
        loss, _ = run(delta, dropout_seed)
        run.engine.backward(loss / passes)
        total = total + loss.detach() / passes
        if index < settings.steps:
            delta = ascend(delta.detach(), delta.grad.detach(), settings)
    return total


def pgd(run: PerturbedForward, settings: AdversarialConfig, dropout_seed: int, generator: torch.Generator) -> torch.Tensor:
    """PGD: ``steps`` projected ascent steps on the perturbation only, then train on the final adversarial loss."""
    delta = random_start(run, settings, generator)
    for _ in range(settings.steps):
        delta.requires_grad_()
        loss, _ = run(delta, dropout_seed, attack=True)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = ascend(delta.detach(), grad.detach(), settings)
    loss, _ = run(delta, dropout_seed)
    run.engine.backward(loss)
    return loss


def smart(run: PerturbedForward, settings: AdversarialConfig, dropout_seed: int, generator: torch.Generator) -> torch.Tensor:
    """SMART: task loss + weight * symmetric KL(clean, adversarial) with inf-norm ascent on the noise."""
    seeds = pass_seeds(dropout_seed)
    loss, clean = run(None, dropout_seed, predictions=True)
    noise = torch.randn(run.shape, generator=generator).to(clean.device) * settings.noise
    for _ in range(settings.steps):
        noise.requires_grad_()
        _, adversarial = run(noise, next(seeds), predictions=True, attack=True)
        (grad,) = torch.autograd.grad(stable_kl(adversarial, clean.detach()), noise)
        if not torch.isfinite(grad.norm()):  # mt-dnn skips the regulariser on a non-finite gradient
            run.engine.backward(loss)
            return loss
        noise = smart_project(noise.detach() + settings.step_size * grad.detach(), settings.max_norm)
    _, adversarial = run(noise, next(seeds), predictions=True)
    total = loss + settings.weight * symmetric_kl(clean, adversarial, detach_targets=True)
    run.engine.backward(total)
    return total


def r3f(run: PerturbedForward, settings: AdversarialConfig, dropout_seed: int, generator: torch.Generator) -> torch.Tensor:
    """R3F: task loss + weight * symmetric KL(clean, noisy), the noisy pass on detached embeddings."""
    seeds = pass_seeds(dropout_seed)
    loss, clean = run(None, dropout_seed, predictions=True)
    noise = sample_noise(run.shape, settings.noise_type, settings.noise, generator).to(clean.device)
    _, noisy = run(noise, next(seeds), detach_embeddings=True, predictions=True)
    total = loss + settings.weight * symmetric_kl(noisy, clean, detach_targets=False)
    run.engine.backward(total)
    return total


METHODS: dict[str, Callable[..., torch.Tensor]] = {"freelb": freelb, "pgd": pgd, "smart": smart, "r3f": r3f}


# ------------------------------------------------------------------------------ the pieces


def random_start(run: PerturbedForward, settings: AdversarialConfig, generator: torch.Generator) -> torch.Tensor:
    """FreeLB's random start on the real tokens (zero when ``init_magnitude`` is 0)."""
    mask = run.token_mask.float().cpu().unsqueeze(-1)
    if settings.init_magnitude == 0:
        return torch.zeros(run.shape).to(run.token_mask.device)
    noise = torch.rand(run.shape, generator=generator) * 2 - 1  # uniform in [-1, 1]
    if settings.norm == "l2":
        dims = mask.sum(dim=1, keepdim=True) * run.shape[-1]  # real tokens x embedding size, per sequence
        delta = noise * mask * (settings.init_magnitude / dims.sqrt())
    else:
        delta = noise * settings.init_magnitude * mask
    return delta.to(run.token_mask.device)


def ascend(delta: torch.Tensor, grad: torch.Tensor, settings: AdversarialConfig) -> torch.Tensor:
    """One normalised ascent step per example, then the projection on the ``max_norm`` ball."""
    per_example = grad.reshape(grad.shape[0], -1)
    order = 2 if settings.norm == "l2" else math.inf
    scale = torch.linalg.vector_norm(per_example, ord=order, dim=1).clamp(min=GRAD_FLOOR[settings.norm])
    delta = delta + settings.step_size * grad / scale.view(-1, 1, 1)
    return project(delta, settings.norm, settings.max_norm)


def project(delta: torch.Tensor, norm: str, max_norm: float) -> torch.Tensor:
    """Onto the ball of radius ``max_norm`` around zero, per example (0 = unbounded)."""
    if max_norm <= 0:
        return delta
    if norm == "linf":
        return delta.clamp(-max_norm, max_norm)
    size = torch.linalg.vector_norm(delta.reshape(delta.shape[0], -1).float(), dim=1)
    factor = torch.where(size > max_norm, max_norm / size, torch.ones_like(size))
    return delta * factor.view(-1, 1, 1).to(delta.dtype)


def smart_project(noise: torch.Tensor, max_norm: float) -> torch.Tensor:
    """mt-dnn's per-token inf-norm rescaling (norm_level 0), to radius ``max_norm``."""
    return max_norm * noise / (noise.abs().amax(dim=-1, keepdim=True) + SMART_EPSILON)


def sample_noise(shape: tuple[int, ...], kind: str, scale: float, generator: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(shape, generator=generator) * scale
    return (torch.rand(shape, generator=generator) * 2 - 1) * scale


def symmetric_kl(a: torch.Tensor, b: torch.Tensor, *, detach_targets: bool) -> torch.Tensor:
    """KL(p_a || p_b) + KL(p_b || p_a), summed over rows and divided by their number.

    ``detach_targets``: each direction's target distribution is a constant (SMART's ``SymKlCriterion``);
    otherwise gradients flow through both sides of both terms (R3F's ``_get_symm_kl``).
    """
    a, b = a.float(), b.float()
    target_a = F.softmax(a.detach() if detach_targets else a, dim=-1)
    target_b = F.softmax(b.detach() if detach_targets else b, dim=-1)
    forward = F.kl_div(F.log_softmax(b, dim=-1), target_a, reduction="sum")
    backward = F.kl_div(F.log_softmax(a, dim=-1), target_b, reduction="sum")
    return (forward + backward) / max(1, a.shape[0])


def stable_kl(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """mt-dnn's ``stable_kl`` (reduce=False), the loss SMART's ascent maximises."""
    p = F.softmax(logits.float(), dim=-1)
    y = F.softmax(target.float(), dim=-1)
    rp = -(1.0 / (p + epsilon) - 1 + epsilon).detach().log()
    ry = -(1.0 / (y + epsilon) - 1 + epsilon).detach().log()
    return (p * (rp - ry) * 2).sum()


def pass_seeds(dropout_seed: int) -> Iterator[int]:
    """Dropout seeds for the extra passes of SMART and R3F: fresh masks, still a function of the batch."""
    generator = torch.Generator().manual_seed(dropout_seed)
    while True:
        yield int(torch.randint(0, 2**62, (1,), generator=generator))
