"""ONNX Runtime sessions: which execution provider, which options, and running numpy batches.

Why these options: evaluation feeds batches of ever-changing shapes (length-sorted, token-budget
packing), so the CPU memory arena is kept (it reuses freed blocks across shapes) while the memory
*pattern* planner is switched off (it plans for one fixed shape and is rebuilt on every new one).
Intra-op threads default to torch's thread count, which is the number of physical cores unless
``OMP_NUM_THREADS`` says otherwise, so both backends use the same cores; idle threads do not spin.
Full graph optimisation
(constant folding, node fusions, layout) runs once at session creation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from fastxlt.errors import CheckpointError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def default_providers() -> list[str]:
    """The CUDA provider when this onnxruntime build has it and a GPU is visible, else the CPU provider."""
    available = ort.get_available_providers()
    if CUDA in available and torch.cuda.is_available():
        return [CUDA, CPU]
    return [CPU]


def default_threads() -> int:
    return max(1, torch.get_num_threads())


def session_options(threads: int | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # errors only: shape-inference warnings on dynamic axes are expected
    # Idle worker threads sleep instead of spinning: batches are large, so spinning saves little, and on
    # a shared machine a spinning pool burns the CPU time its own next batch needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(
    graph: str | Path, *, threads: int | None = None, providers: list[str] | None = None
) -> ort.InferenceSession:
    """An inference session for ``graph``, with a one-line error when the file is missing or unreadable."""
    graph = Path(graph)
    if not graph.is_file():
        raise CheckpointError(f"ONNX graph '{graph}' does not exist; export it with `fastxlt export`")
    try:
        return ort.InferenceSession(str(graph), sess_options=session_options(threads), providers=providers or default_providers())
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types for bad graphs
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot load ONNX graph '{graph}': {first_line}; delete it and export again") from error


def run_session(session: ort.InferenceSession, inputs: dict[str, torch.Tensor | np.ndarray]) -> list[np.ndarray]:
    """Run one batch; inputs the graph does not take are ignored, int64 ids as the exporters write them."""
    wanted = {item.name for item in session.get_inputs()}
    feed = {}
    for name, value in inputs.items():
        if name in wanted and value is not None:
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            feed[name] = np.ascontiguousarray(array, dtype=np.int64)
    return session.run(None, feed)
