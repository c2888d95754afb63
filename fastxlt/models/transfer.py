"""The multi-head transfer model and the encoder-only hand-off between phases.

``TransferModel`` is one encoder shared by several task heads (a task-to-head map lets tasks share a
head: SNLI, MNLI and the ANLI rounds train one NLI head). A phase ends by writing its encoder in Hugging
Face format (``encoder/``, loadable by ``AutoModel.from_pretrained``) and its heads beside it
(``heads.pt``); the next phase loads only the encoder and builds fresh heads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from fastxlt.errors import CheckpointError
from fastxlt.models.encoder import ENCODER_DIRNAME, encoder_signature, load_encoder
from fastxlt.models.family import check_pooling, default_pooling
from fastxlt.models.heads import make_head
from fastxlt.tasks.base import TaskSpec
from fastxlt.utils.io import follow_umask

HEADS_FILENAME = "heads.pt"


class TransferModel(nn.Module):
    """An encoder plus task heads; ``forward(head=..., ...)`` runs the encoder and the named head."""

    def __init__(self, encoder: nn.Module, tasks: list[TaskSpec], pooling: str | None = None) -> None:
        """``pooling`` None: the encoder family's (``cls`` for XLM-R, ``mean`` for T5, which has no CLS token)."""
        super().__init__()
        model_type = getattr(encoder.config, "model_type", None)
        pooling = pooling or default_pooling(model_type)
        check_pooling(model_type, pooling)
        self.encoder = encoder
        self.pooling = pooling
        self.heads = nn.ModuleDict()
        self.task_to_head: dict[str, str] = {}
        self.head_tasks: dict[str, TaskSpec] = {}
        for spec in tasks:
            key = spec.head_key
            self.task_to_head[spec.name] = key
            if key not in self.heads:
                self.heads[key] = make_head(spec, encoder, pooling)
                self.head_tasks[key] = spec

    def forward(
        self,
        head: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        encoder_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            encoder_inputs["token_type_ids"] = token_type_ids
        if input_ids.dim() == 3:
            # Multiple choice: (batch, choices, tokens) -> (batch * choices, tokens) for the encoder; the
            # head gets the 3-D attention mask and puts the scores back as (batch, choices).
            encoder_inputs = {key: value.flatten(0, 1) for key, value in encoder_inputs.items()}
        sequence_output = self.encoder(**encoder_inputs).last_hidden_state
        loss, logits = self.heads[head](sequence_output, attention_mask, labels)
        if loss is not None and self.training and len(self.heads) > 1:
            # Keep every head in the graph: data-parallel gradient reduction (DDP, ZeRO 1/2) expects
            # a gradient for every parameter at every step, and a zero one changes nothing.
            loss = loss + 0.0 * sum(p.sum() for key, h in self.heads.items() if key != head for p in h.parameters())
        return loss, logits

    def head_for(self, task: str) -> str:
        return self.task_to_head[task]


def save_phase_outputs(
    model: TransferModel, out_dir: Path, tokenizer: PreTrainedTokenizerBase, state_dict: dict | None = None
) -> Path:
    """Write ``out_dir/encoder`` (Hugging Face format, with the tokenizer) and ``out_dir/heads.pt``.

    ``state_dict`` is the full model state when parameters are partitioned (ZeRO-3 consolidation).
    """
    out_dir = Path(out_dir)
    encoder_dir = out_dir / ENCODER_DIRNAME
    encoder_dir.mkdir(parents=True, exist_ok=True)
    full = state_dict if state_dict is not None else model.state_dict()
    encoder_state = {k[len("encoder."):]: v for k, v in full.items() if k.startswith("encoder.")}
    model.encoder.save_pretrained(encoder_dir, state_dict=encoder_state)
    tokenizer.save_pretrained(encoder_dir)
    heads_state = {k[len("heads."):]: v.detach().cpu() for k, v in full.items() if k.startswith("heads.")}
    torch.save(
        {
            "heads": heads_state,
            "task_to_head": model.task_to_head,
            "head_tasks": {key: spec.name for key, spec in model.head_tasks.items()},
            "encoder": encoder_signature(model.encoder),
            "pooling": model.pooling,
        },
        out_dir / HEADS_FILENAME,
    )
    follow_umask(encoder_dir, out_dir / HEADS_FILENAME)  # safetensors writes 0600 whatever the umask
    return out_dir


def read_heads_file(model_dir: Path, *, missing: str) -> dict:
    """The saved heads of a model directory (tensors only), or one line naming what is absent or corrupt;
    ``missing`` says what to do when the file is not there."""
    path = Path(model_dir) / HEADS_FILENAME
    if not path.is_file():
        raise CheckpointError(f"'{model_dir}' has no {HEADS_FILENAME}; {missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"'{path}' is corrupt ({type(error).__name__}); re-run the phase that wrote it") from error


def load_transfer_model(phase_dir: Path, tasks: list[TaskSpec]) -> TransferModel:
    """Rebuild the model a phase wrote (encoder + heads), refusing heads of another architecture."""
    phase_dir = Path(phase_dir)
    heads_path = phase_dir / HEADS_FILENAME
    saved = read_heads_file(phase_dir, missing="point at a phase directory written by fastxlt")
    encoder = load_encoder(phase_dir / ENCODER_DIRNAME)
    model = TransferModel(encoder, tasks, pooling=saved.get("pooling"))  # None: the family's
    if saved.get("encoder") != encoder_signature(encoder):
        raise CheckpointError(
            f"'{heads_path}' was trained on encoder {saved.get('encoder')}, not {encoder_signature(encoder)}; use the matching model"
        )
    missing, _ = model.heads.load_state_dict(saved["heads"], strict=False)
    if missing:
        head = missing[0].split(".")[0]
        trained = ", ".join(sorted(saved.get("task_to_head", {}))) or "unknown tasks"
        raise CheckpointError(
            f"'{phase_dir}' has no trained head '{head}' for task '{model.head_tasks[head].name}'; it was trained for {trained}"
        )
    return model
