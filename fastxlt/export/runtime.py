"""``OnnxModel``: exported head graphs behind ``TransferModel``'s evaluation contract.

``fastxlt.inference.predict.predict``, ``score_examples`` and ``zero_shot.evaluate_task`` call a
model as ``model(head=..., input_ids=..., attention_mask=...) -> (loss, logits)`` after
``model.head_for(task)``, and switch it with ``eval()`` / ``train()``. ``OnnxModel`` answers the same
calls with ONNX Runtime sessions, one per head, created once and reused for every language:

    model = OnnxModel.for_phase(phase_dir, [get_task("xnli")], precision="int8", tokenizer=tokenizer)
    scores, predictions = score_examples(model, spec, examples, features, tokenizer)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

import fastxlt.export.manifest as manifest_io
from fastxlt.errors import CheckpointError
from fastxlt.export.exporter import default_out_dir, export_onnx
from fastxlt.export.session import create_session, run_session
from fastxlt.tasks.base import TaskSpec


class OnnxModel:
    """Runs one exported graph per head; no parameters, no loss (evaluation only)."""

    training = False

    def __init__(
        self,
        graphs: Mapping[str, str | Path],
        task_to_head: Mapping[str, str],
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        expected_sources: Mapping[str, str] | None = None,
    ) -> None:
        """``graphs``: head -> exported graph directory (with its manifest); ``task_to_head`` as TransferModel's.

        ``expected_sources`` (head -> source fingerprint) refuses a graph exported from another checkpoint.
        """
        self.graph_dirs = {head: Path(path) for head, path in graphs.items()}
        self.task_to_head = dict(task_to_head)
        self.threads = threads
        self.providers = providers
        self.manifests: dict[str, dict[str, Any]] = {}
        for head, directory in self.graph_dirs.items():
            manifest = manifest_io.read_manifest(directory)
            if manifest is None or manifest.get("kind") != "head":
                raise CheckpointError(f"'{directory}' holds no exported head graph (no valid manifest); export it with `fastxlt export`")
            wanted = (expected_sources or {}).get(head)
            if wanted is not None and manifest.get("source") != wanted:
                raise CheckpointError(
                    f"'{directory}' was exported from another checkpoint; re-export it (fastxlt export --model ...)"
                )
            self.manifests[head] = manifest
        self._sessions: dict[str, Any] = {}

    @classmethod
    def for_phase(
        cls,
        model_dir: str | Path,
        specs: Sequence[TaskSpec],
        *,
        precision: str = "fp32",
        root: str | Path | None = None,
        data_dirs: Mapping[str, str | Path | None] | None = None,
        max_length: int = 256,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> OnnxModel:
        """Export (or reuse) one graph per head of ``specs`` for the phase model in ``model_dir`` and load them.

        Graphs go to ``root/<head>-<precision>`` (default root: ``<model_dir>/onnx``); each export checks
        parity on the task's first real examples (``data_dirs[task]`` for local files).
        """
        model_dir = Path(model_dir)
        graphs: dict[str, Path] = {}
        task_to_head: dict[str, str] = {}
        for spec in specs:
            head = spec.head_key
            task_to_head[spec.name] = head
            if head in graphs:
                continue
            out_dir = Path(root) / f"{head}-{precision}" if root else default_out_dir(model_dir, head, precision)
            result = export_onnx(
                model_dir, out_dir, task=spec, quantize="int8" if precision == "int8" else None, fp16=precision == "fp16",
                data_dir=(data_dirs or {}).get(spec.name), max_length=max_length, threads=threads,
            )
            graphs[head] = result.out_dir
        return cls(graphs, task_to_head, threads=threads, providers=providers)

    # --- TransferModel's evaluation contract -------------------------------------------------

    def __call__(
        self,
        head: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[None, torch.Tensor | tuple[torch.Tensor, ...]]:
        """``(None, logits)``: a single output as one tensor, several as a tuple (as the head returns them)."""
        outputs = run_session(
            self.session(head), {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        )
        tensors = tuple(torch.from_numpy(output) for output in outputs)
        return None, tensors[0] if len(tensors) == 1 else tensors

    def head_for(self, task: str) -> str:
        try:
            return self.task_to_head[task]
        except KeyError:
            raise CheckpointError(
                f"no exported graph for task '{task}'; export it (fastxlt export --task {task}) or evaluate another task"
            ) from None

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise RuntimeError("an exported ONNX graph cannot be trained; train the PyTorch model")
        return self

    # --- sessions ---------------------------------------------------------------------------

    def session(self, head: str):
        """The head's inference session, created on first use and kept (one per head, for every language)."""
        if head not in self._sessions:
            if head not in self.graph_dirs:
                raise CheckpointError(f"no exported graph for head '{head}'; export it with `fastxlt export`")
            directory = self.graph_dirs[head]
            self._sessions[head] = create_session(directory / self.manifests[head]["graph"], threads=self.threads, providers=self.providers)
        return self._sessions[head]

    def precision(self, head: str) -> str:
        return self.manifests[head]["precision"]
