"""``export_onnx``: a fastxlt phase model (encoder + a task head) or any Hugging Face encoder to ONNX.

The steps, in order:

1. Reuse: when ``out_dir`` already holds a graph whose manifest names the same source checkpoint,
   task/layers and precision, nothing is exported ("exported once, reused for every language").
2. Load the model in float32 with eager attention (the attention the exporters and ONNX Runtime's
   fusions understand), in eval mode.
3. Trace it with ``torch.onnx.export(dynamo=True)`` with dynamic batch / sequence (/ choices) axes;
   the TorchScript exporter is the fallback for a model the dynamo exporter cannot capture. Weights
   go to an external data file when they exceed ONNX's 2 GB protobuf limit (XLM-R Large in fp32).
4. Optionally run ONNX Runtime's transformer optimiser (BERT-family fusions), then int8 dynamic
   quantisation (CPU, VNNI) or fp16 conversion (CUDA provider).
5. Parity: run the final graph in ONNX Runtime and the PyTorch model on the same real batches,
   compare outputs and predictions (``fastxlt.export.parity``) and refuse to save a graph that
   misses the precision's tolerance.
6. Move the graph into ``out_dir`` and write the manifest last.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

import fastxlt.export.manifest as manifest_io
from fastxlt.errors import CheckpointError, ConfigError, DataNotFoundError
from fastxlt.export.graphs import (
    EmbeddingGraph,
    HeadGraph,
    as_tuple,
    dynamic_axes,
    dynamic_shapes,
    graph_inputs,
    output_names,
)
from fastxlt.export.manifest import GRAPH_FILENAME
from fastxlt.export.parity import ParityError, check, measure
from fastxlt.export.session import create_session, run_session
from fastxlt.inference.embed import POOLINGS, check_layer, default_layer
from fastxlt.models.encoder import ENCODER_DIRNAME, load_encoder, load_tokenizer, resolve_encoder_path
from fastxlt.models.family import check_pooling, check_precision, model_type_of
from fastxlt.models.transfer import HEADS_FILENAME, load_transfer_model
from fastxlt.tasks.base import TaskSpec, get_task
from fastxlt.tasks.features import FamilyOps, Feature, ops_for, pad_ids
from fastxlt.utils.io import follow_umask

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "fp16")
OPSET = 18
PARITY_EXAMPLES = 64  # real examples the parity check runs (in dataset order, so batches mix lengths)
PARITY_BATCH = 16
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's limit is 2 GiB; leave room for the graph itself
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert")

# Real sentences of different lengths and scripts for the parity check of embedding graphs.
PARITY_SENTENCES = (
    "The cat sat on the mat.",
    "Der schnelle braune Fuchs springt über den faulen Hund, der in der Sonne schläft.",
    "Je pense, donc je suis.",
    "¿Dónde está la biblioteca más cercana a la estación de tren?",
    "我们明天早上八点在火车站见面。",
    "Москва — столица России и крупнейший город страны.",
    "Yes.",
    "A multilingual encoder maps sentences with the same meaning in different languages to nearby vectors, "
    "which is why zero-shot transfer from English works at all.",
    "東京は日本の首都です。",
    "الطقس جميل اليوم في المدينة",
    "Il pleut depuis trois jours et la rivière commence à déborder.",
    "मुझे किताबें पढ़ना पसंद है।",
)


@dataclass
class ExportResult:
    """Where the graph is and what its manifest says (``reused`` when nothing had to be exported)."""

    out_dir: Path
    manifest: dict[str, Any]
    reused: bool

    @property
    def graph(self) -> Path:
        return self.out_dir / self.manifest["graph"]


def precision_name(quantize: str | None, fp16: bool) -> str:
    """``quantize=None|"int8"`` and ``fp16`` -> the precision recorded in the manifest."""
    if quantize not in (None, "int8"):
        raise ConfigError(f"unknown quantisation '{quantize}'; choose int8 (or leave it out for fp32)")
    if quantize and fp16:
        raise ConfigError("choose one reduced precision: --quantize int8 (CPU) or --fp16 (CUDA), not both")
    return "int8" if quantize else "fp16" if fp16 else "fp32"


def export_onnx(
    model: str | Path,
    out_dir: str | Path | None = None,
    *,
    task: str | TaskSpec | None = None,
    quantize: str | None = None,
    fp16: bool = False,
    parity_features: Sequence[Feature] | None = None,
    data_dir: str | Path | None = None,
    max_length: int = 256,
    layers: Sequence[int] | None = None,
    pooling: str = "mean",
    optimize: bool = False,
    threads: int | None = None,
    force: bool = False,
) -> ExportResult:
    """Export ``model`` (a phase model directory with ``task``, or any encoder without) to ``out_dir``.

    With ``task``: the task's head on top of the phase's encoder; parity runs on ``parity_features``
    or, when none are given, on the first real examples of the task (its English dev split, else its
    test split; ``data_dir`` for local files). Without ``task``: pooled, L2-normalised embeddings of
    the hidden ``layers`` (default: the retrieval layer, ``fastxlt.retrieval.embed.default_layer``);
    parity runs on ``PARITY_SENTENCES``. ``optimize`` runs ONNX Runtime's BERT-family fusions (see
    benchmarks/eval_throughput.py for whether they pay on a machine). Raises ``ParityError`` instead of
    saving an unfaithful graph.
    """
    precision = precision_name(quantize, fp16)
    model_path = Path(model)
    _check_family_precision(model, precision)
    if task is not None:
        spec = get_task(task) if isinstance(task, str) else task
        out_dir = Path(out_dir) if out_dir else default_out_dir(model_path, spec.head_key, precision)
        return _export_head(model_path, out_dir, spec, precision, parity_features, data_dir, max_length, optimize, threads, force)
    out_dir = Path(out_dir) if out_dir else default_out_dir(model_path, "embeddings", precision)
    return _export_embeddings(str(model), out_dir, precision, layers, pooling, optimize, threads, force)


def _check_family_precision(model: str | Path, precision: str) -> None:
    """fp16 graphs of a T5-family encoder overflow (as its fp16 training does): refuse them before any work."""
    check_precision(model_type_of(model), precision, field="--fp16")


def default_out_dir(model_dir: Path, name: str, precision: str) -> Path:
    """``<model dir>/onnx/<head or "embeddings">-<precision>``: graphs live beside the checkpoint they came from."""
    return Path(model_dir) / "onnx" / f"{name}-{precision}"


# ----------------------------------------------------------------------------------- head graphs


def _export_head(
    model_dir: Path, out_dir: Path, spec: TaskSpec, precision: str, parity_features, data_dir, max_length, optimize, threads, force
) -> ExportResult:
    if not (model_dir / HEADS_FILENAME).is_file():
        raise CheckpointError(
            f"'{model_dir}' is not a fastxlt phase model (no {HEADS_FILENAME}); point at a run directory or a phase's model directory "
            "or export an encoder without --task"
        )
    wanted = {
        "kind": "head", "source": manifest_io.source_fingerprint([model_dir / ENCODER_DIRNAME, model_dir / HEADS_FILENAME]),
        "task": spec.name, "head": spec.head_key, "precision": precision, "optimized": bool(optimize),
    }
    reused = _reusable(out_dir, wanted, force)
    if reused is not None:
        return reused
    ops = ops_for(spec)
    transfer = load_transfer_model(model_dir, [spec]).eval()
    use_eager_attention(transfer.encoder)
    tokenizer = load_tokenizer(model_dir / ENCODER_DIRNAME)
    if parity_features is None:
        parity_features = load_parity_features(spec, tokenizer, data_dir=data_dir, max_length=max_length)
    batches = parity_batches(ops, parity_features, tokenizer)
    graph = HeadGraph(transfer, spec.head_key).eval()

    def predictions(outputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> list[Any]:
        logits = outputs[0] if len(outputs) == 1 else outputs
        return ops.predict(logits.float() if isinstance(logits, torch.Tensor) else logits, batch)

    extra = {"family": spec.family.value, "model_type": transfer.encoder.config.model_type, "source_path": str(model_dir.resolve())}
    return _export(graph, transfer.encoder, batches, predictions, out_dir, precision, optimize, threads, wanted | extra, "logits",
                   what=f"the exported graph of task '{spec.name}'", gate_cosine=False)


def load_parity_features(
    spec: TaskSpec, tokenizer, *, data_dir: str | Path | None = None, max_length: int = 256, limit: int = PARITY_EXAMPLES
) -> list[Feature]:
    """The first ``limit`` real examples of the task, featurised: English dev, else English test, else any test."""
    ops = ops_for(spec)
    attempts = [(spec.dev_split, spec.train_language), (spec.test_split, spec.train_language), (spec.test_split, spec.languages[0])]
    problem = "no split to read"
    for split, language in dict.fromkeys(attempts):
        if split not in spec.splits or language not in spec.languages:
            continue
        try:
            examples = spec.load(split, language, data_dir)
        except Exception as error:  # noqa: BLE001 - hub and file readers raise many types; try the next split
            problem = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            continue
        features = ops.featurize(spec, list(examples)[:limit], tokenizer, max_length)
        if features:
            return features
    raise DataNotFoundError(
        f"no examples of task '{spec.name}' to check the exported graph against PyTorch ({problem}); "
        "pass the task's local files with --data DIR"
    )


def parity_batches(ops: FamilyOps, features: Sequence[Feature], tokenizer) -> list[dict[str, torch.Tensor]]:
    """Batches of ``PARITY_BATCH`` features in dataset order, so each batch mixes lengths and padding."""
    features = list(features)
    if not features:
        raise DataNotFoundError("the parity check got no examples; pass some real examples of the task")
    if len(features) == 1:
        features = features * 2  # a batch of one would make torch.export fix the batch axis to 1
    batches = []
    for start in range(0, len(features), PARITY_BATCH):
        chunk = features[start : start + PARITY_BATCH]
        if len(chunk) == 1:
            chunk = features[start - 1 : start + 1]
        batches.append(graph_inputs(ops.collate(chunk, tokenizer)))
    return batches


# ------------------------------------------------------------------------------ embedding graphs


def _export_embeddings(
    name_or_path: str, out_dir: Path, precision: str, layers, pooling: str, optimize: bool, threads, force
) -> ExportResult:
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling '{pooling}'; choose {' or '.join(POOLINGS)}")
    resolved = resolve_encoder_path(name_or_path)
    encoder = load_encoder(resolved)
    check_pooling(encoder.config.model_type, pooling, field="--pooling")  # mT5 has no CLS token
    num_layers = int(encoder.config.num_hidden_layers)
    layers = sorted({check_layer(layer, num_layers) for layer in (layers or [default_layer(num_layers)])})
    wanted = {
        "kind": "embeddings", "source": manifest_io.source_fingerprint(resolved), "layers": layers, "pooling": pooling,
        "precision": precision, "optimized": bool(optimize),
    }
    reused = _reusable(out_dir, wanted, force)
    if reused is not None:
        return reused
    encoder.eval()
    use_eager_attention(encoder)
    tokenizer = load_tokenizer(resolved)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(PARITY_SENTENCES), 4):
        ids = tokenizer(list(PARITY_SENTENCES[start : start + 4]), truncation=True, max_length=128)["input_ids"]
        input_ids, attention_mask = pad_ids(ids, pad_id)
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask})
    graph = EmbeddingGraph(encoder, layers, pooling).eval()

    def predictions(outputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> list[Any]:
        # nearest other row of the batch, per layer: what retrieval decides from the embeddings
        picks = []
        for vectors in outputs:
            scores = vectors.float() @ vectors.float().T
            scores.fill_diagonal_(-float("inf"))
            picks.append(scores.argmax(dim=1))
        return torch.stack(picks, dim=1).tolist()

    extra = {"model_type": encoder.config.model_type, "source_path": resolved, "hidden_size": int(encoder.config.hidden_size),
             "num_layers": num_layers}
    return _export(graph, encoder, batches, predictions, out_dir, precision, optimize, threads, wanted | extra, "embedding",
                   what=f"the exported embedding graph of '{name_or_path}'", gate_cosine=True,
                   names=[f"sentence_embedding_layer{layer}" for layer in layers])


# ------------------------------------------------------------------------------------ the steps


def _reusable(out_dir: Path, wanted: dict[str, Any], force: bool) -> ExportResult | None:
    existing = manifest_io.read_manifest(out_dir)
    if not force and manifest_io.matches(existing, wanted):
        return ExportResult(out_dir, existing, reused=True)
    if existing is not None:
        log.info("re-exporting %s: its graph came from another checkpoint or settings", out_dir)
    return None


def _export(
    graph: nn.Module,
    encoder: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    predictions: Callable[[tuple[torch.Tensor, ...], dict[str, torch.Tensor]], list[Any]],
    out_dir: Path,
    precision: str,
    optimize: bool,
    threads: int | None,
    manifest: dict[str, Any],
    output_prefix: str,
    *,
    what: str,
    gate_cosine: bool,
    names: list[str] | None = None,
) -> ExportResult:
    """Trace, transform, check and save; the staging directory is removed whatever happens."""
    started = time.perf_counter()
    with torch.no_grad():
        reference = [as_tuple(graph(**batch)) for batch in batches]
    names = names or output_names(reference[0][0] if len(reference[0]) == 1 else reference[0], output_prefix)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        trace_batch = max(batches, key=lambda b: b["input_ids"].shape[0])
        external = _parameter_bytes(graph) > EXTERNAL_DATA_BYTES
        fp32_path, exporter = trace(graph, trace_batch, names, staging / "fp32.onnx", external)
        final = fp32_path
        if optimize:
            final = optimize_graph(final, encoder.config, staging / "optimized.onnx", external)
        if precision == "int8":
            final = quantize_int8(final, staging / "int8.onnx", external, encoder.config)
        elif precision == "fp16":
            final = convert_fp16(final, staging / "fp16.onnx", external)
        session = create_session(final, threads=threads)
        candidate = [run_session(session, batch) for batch in batches]
        report = measure(
            precision,
            [[t.float().numpy() for t in outputs] for outputs in reference],
            candidate,
            [p for outputs, batch in zip(reference, batches) for p in predictions(outputs, batch)],
            [p for outputs, batch in zip(candidate, batches)
             for p in predictions(tuple(torch.from_numpy(np.asarray(o)) for o in outputs), batch)],
        )
        check(report, what, gate_cosine=gate_cosine)
        del session
        _install(final, out_dir, external)
        follow_umask(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = {
        **manifest, "graph": GRAPH_FILENAME, "exporter": exporter, "opset": OPSET, "inputs": list(trace_batch),
        "input_ranks": {name: int(t.dim()) for name, t in trace_batch.items()}, "outputs": names,
        "external_data": external, "parity": report.as_dict(), "export_seconds": round(time.perf_counter() - started, 2),
        "versions": _versions(),
    }
    manifest_io.write_manifest(out_dir, record)
    return ExportResult(out_dir, manifest_io.read_manifest(out_dir) or record, reused=False)


def trace(graph: nn.Module, batch: dict[str, torch.Tensor], names: list[str], path: Path, external: bool) -> tuple[Path, str]:
    """Export with the dynamo exporter; fall back to the TorchScript exporter if it cannot capture the model."""
    args = tuple(batch.values())
    try:
        program = torch.onnx.export(
            graph, args, dynamo=True, input_names=list(batch), output_names=names, opset_version=OPSET,
            dynamic_shapes=dynamic_shapes(batch), verbose=False,
        )
        program.save(str(path), external_data=external)
        return path, "dynamo"
    except Exception as error:  # noqa: BLE001 - any capture failure: try the other exporter
        log.warning("dynamo ONNX export failed (%s); using the TorchScript exporter", str(error).splitlines()[0] if str(error) else error)
    torch.onnx.export(
        graph, args, str(path), dynamo=False, input_names=list(batch), output_names=names, opset_version=OPSET,
        dynamic_axes=dynamic_axes(batch, names), external_data=external, do_constant_folding=True,
    )
    return path, "torchscript"


def optimize_graph(path: Path, config, out: Path, external: bool) -> Path:
    """ONNX Runtime's transformer optimiser (attention / LayerNorm / GELU fusions) for BERT-family encoders."""
    from onnxruntime.transformers.optimizer import optimize_model

    if getattr(config, "model_type", None) not in BERT_FAMILY:
        return path  # no fusion patterns for this architecture; the session's own optimisations still run
    optimized = optimize_model(
        str(path), model_type="bert", num_heads=int(config.num_attention_heads), hidden_size=int(config.hidden_size),
        opt_level=1, use_gpu=False,
    )
    optimized.save_model_to_file(str(out), use_external_data_format=external)
    return out


def quantize_int8(path: Path, out: Path, external: bool, config=None) -> Path:
    """Dynamic int8 quantisation of the MatMul weights (activations quantised per batch at run time).

    Signed int8 weights (per output channel) with unsigned activations: the VNNI instruction
    (vpdpbusd) multiplies u8 x s8, so this is the layout that runs fastest on AVX-512 VNNI CPUs.
    Embedding lookups stay fp32 (quantising them saves memory, not time, and costs accuracy).
    The feed-forward output projections (intermediate -> hidden) stay fp32 too: their input, the GELU
    output, carries outlier activations that one per-tensor int8 scale cannot represent. Measured on
    multilingual-e5-small with an XNLI head (400 test pairs, 4 languages): all MatMuls in int8 kept
    87% of the fp32 predictions (max logit error 1.7); without those 12 projections, 97.5% (0.72),
    accuracy 64.5 vs 64.25 in fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The dynamo exporter records intermediate shapes of the traced example (value_info); the
    # quantiser re-runs shape inference and rejects those that differ from the dynamic ones. Drop them.
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    plain = out.with_name(f"{out.stem}-input.onnx")
    onnx.save(model, str(plain), save_as_external_data=external, location=f"{plain.name}.data" if external else None)
    quantize_dynamic(
        str(plain), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
        nodes_to_exclude=_ffn_output_matmuls(model, config), use_external_data_format=external,
        extra_options={"MatMulConstBOnly": True},
    )
    return out


def _ffn_output_matmuls(model, config) -> list[str]:
    """Names of the MatMuls whose constant weight is (intermediate_size, hidden_size): the FFN down-projections
    (T5's ``wo``, (d_ff, d_model), gets the same treatment: its input is the gated-GELU output)."""
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "d_ff", None)
    hidden = getattr(config, "hidden_size", None)
    if not intermediate or not hidden:
        return []
    shapes = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and len(node.input) > 1 and shapes.get(node.input[1]) == (intermediate, hidden)]


def convert_fp16(path: Path, out: Path, external: bool) -> Path:
    """Float16 weights and compute for the CUDA provider; inputs and outputs keep their types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(out), save_as_external_data=external, location=f"{out.name}.data" if external else None)
    return out


def use_eager_attention(model: nn.Module) -> None:
    """Switch a Hugging Face model to eager attention: the exporters trace it as plain MatMul/Softmax."""
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        try:
            setter("eager")
            return
        except (ValueError, AttributeError, NotImplementedError):
            pass
    config = getattr(model, "config", None)
    if config is not None:
        config._attn_implementation = "eager"


def _install(graph: Path, out_dir: Path, external: bool) -> None:
    """Replace ``out_dir``'s graph (and its external data) with ``graph``; the manifest comes later."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in (out_dir / manifest_io.MANIFEST_FILENAME, out_dir / GRAPH_FILENAME, out_dir / f"{GRAPH_FILENAME}.data"):
        old.unlink(missing_ok=True)
    if not external:
        shutil.move(str(graph), str(out_dir / GRAPH_FILENAME))
        return
    import onnx

    # The graph names its data file; load and save again so that the pair is model.onnx + model.onnx.data.
    model = onnx.load(str(graph))
    onnx.save(model, str(out_dir / GRAPH_FILENAME), save_as_external_data=True, location=f"{GRAPH_FILENAME}.data",
              all_tensors_to_one_file=True)


def _parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _versions() -> dict[str, str]:
    import onnxruntime
    import transformers

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__}


__all__ = ["ExportResult", "ParityError", "PRECISIONS", "export_onnx", "load_parity_features", "precision_name"]
