"""ONNX models: export from PyTorch, verify against it, quantize with ONNX Runtime, save, load.

A model directory in this format holds ``model.onnx`` and a ``model.json`` whose ``format`` is
``onnx`` (input names and shapes, opset, the ONNX Runtime and torch versions, the ORT
quantization and graph optimization level), with the MANIFEST like every other directory.

``OnnxModule`` wraps the ONNX Runtime session in an ``nn.Module`` whose forward takes and
returns torch tensors, so everything that measures or serves a model - accuracy, the
interleaved latency timer of ``optimizer_job.evaluate``, prediction drift,
``optimizer_job.serving`` - runs the ORT model through the same code as a torch model. It
computes with as many intra-op threads as torch is set to (``torch.set_num_threads``: the
evaluate Job's pinned count, the serving Pod's CPU limit), one session per thread count.
Its execution provider follows the device it is given (``choose_providers``): CUDA when the
device is CUDA and the installed wheel has the provider (onnxruntime-gpu, the ``ort-cuda``
extra), else the CPU; ``provider_note`` says plainly when a CUDA device ends up on the CPU.

Export uses PyTorch's current exporter (``torch.onnx.export(..., dynamo=True)``: torch.export
then onnxscript) with a dynamic batch axis. What the exported graph takes is described by an
``ExportSignature`` (``signature_of`` picks it):

- a zoo or factory model, timm, torchvision: one float32 tensor ``input`` [batch, ...];
- a Hugging Face sequence classifier: the graph Transformers users expect - int64
  ``input_ids``, ``attention_mask`` and ``token_type_ids`` (those its forward takes) with
  dynamic ``batch`` and ``sequence`` axes, ``logits`` out - exported from the Transformers
  model itself, not from the job's wrapper;
- a Hugging Face image classifier: float32 ``pixel_values`` [batch, channels, h, w].

The job itself feeds every model rows of one float32 array (token ids for text, as
``optimizer_job.hf.tokenize`` writes them). A ``Feed``, recorded in model.json, turns those
rows into the graph's inputs (the attention mask is ``ids != pad_token_id``, token types
zeros - what the torch wrapper computes), so accuracy, latency and serving run an exported
text model like any other.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from optimizer_job import hf
from optimizer_job.contract import BadInputError

ONNX_FORMAT: Final = "onnx"
ONNX_NAME: Final = "model.onnx"
# The opset the exporter targets; recorded in model.json. Opset 18 is the torch 2.13
# exporter's default and what ONNX Runtime 1.31 runs fully optimized on CPU.
EXPORT_OPSET: Final = 18
# fp32 outputs of ORT and PyTorch on the same rows may differ by rounding only.
VERIFY_TOLERANCE: Final = 1e-4
VERIFY_ROWS: Final = 256
CALIBRATION_ROWS: Final = 256
ORT_VERSION: Final[str] = str(ort.__version__)
MAX_ONNX_BYTES: Final = 2**31 - 1  # protobuf's limit for a model held in one file

GraphOptimization = Literal["disabled", "basic", "extended", "all"]
OrtQuantization = Literal["none", "dynamic-int8", "static-int8"]

CPU_PROVIDER: Final = "CPUExecutionProvider"
CUDA_PROVIDER: Final = "CUDAExecutionProvider"
# fp32 on the CUDA provider computes in fp32: no TF32 matrix products, whose 10-bit mantissa
# would not reproduce PyTorch within VERIFY_TOLERANCE.
CUDA_PROVIDER_OPTIONS: Final = {"use_tf32": "0"}

_LEVELS: Final = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


TEXT_INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")
MAX_DIM: Final = 1 << 20


@dataclass(frozen=True)
class Feed:
    """How rows of the job's one float32 array become the graph's inputs.

    ``tensor``: the rows are the graph's one float32 input. ``text``: the rows are token ids
    (padded with ``pad_token_id``); the graph gets int64 ``input_ids``, ``attention_mask``
    (1 where the id is not padding) and ``token_type_ids`` (zeros), those it takes.
    """

    kind: Literal["tensor", "text"] = "tensor"
    pad_token_id: int = 0

    def to_json(self) -> dict[str, Any]:
        if self.kind == "tensor":
            return {"kind": "tensor"}
        return {"kind": "text", "pad_token_id": self.pad_token_id}

    @classmethod
    def from_json(cls, block: Any) -> Feed:
        block = block if isinstance(block, dict) else {}
        kind = str(block.get("kind", "tensor"))
        if kind not in ("tensor", "text"):
            raise BadInputError(f"model.json: unknown onnx.feed kind {kind!r}")
        return cls(kind, int(block.get("pad_token_id", 0)))  # type: ignore[arg-type]

    def check(self, input_names: Sequence[str]) -> None:
        """Refuse a graph whose inputs this feed cannot fill."""
        if self.kind == "tensor" and len(input_names) != 1:
            raise BadInputError(
                f"ONNX model has inputs {list(input_names)}; a tensor model takes one"
            )
        if self.kind == "text" and (
            "input_ids" not in input_names or not set(input_names) <= set(TEXT_INPUTS)
        ):
            raise BadInputError(
                f"ONNX text model has inputs {list(input_names)}; expected input_ids and "
                f"any of {list(TEXT_INPUTS[1:])}"
            )

    def inputs(self, input_names: Sequence[str], rows: np.ndarray) -> dict[str, np.ndarray]:
        if self.kind == "tensor":
            return {input_names[0]: np.ascontiguousarray(rows, dtype=np.float32)}
        ids = np.ascontiguousarray(np.rint(rows), dtype=np.int64)
        values = {
            "input_ids": ids,
            "attention_mask": (ids != self.pad_token_id).astype(np.int64),
            "token_type_ids": np.zeros_like(ids),
        }
        return {name: values[name] for name in input_names}


@dataclass(frozen=True)
class ExportSignature:
    """The inputs of an exported graph: names, an example of each, and which axes are dynamic.

    ``dynamic_axes`` maps an input's position to {axis: name}; ``example`` is what the
    exporter traces with (two rows or more, so the batch axis is not specialised to 1).
    ``axis_max`` bounds an axis by name (a text model's positions); ``prepare`` turns the
    job's model into the module exported (the Transformers model inside its wrapper);
    ``feed`` is how the job's rows reach the exported graph.
    """

    input_names: list[str]
    output_names: list[str]
    example: tuple[Tensor, ...]
    dynamic_axes: list[dict[int, str]] = field(default_factory=list)
    axis_max: dict[str, int] = field(default_factory=dict)
    prepare: Callable[[nn.Module], nn.Module] | None = None
    feed: Feed = field(default_factory=Feed)

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        dims: dict[str, Any] = {}
        shapes = []
        for axes in self.dynamic_axes:
            spec = {}
            for axis, name in axes.items():
                top = self.axis_max.get(name, MAX_DIM)
                dims.setdefault(name, torch.export.Dim(name, min=1, max=top))
                spec[axis] = dims[name]
            shapes.append(spec)
        return tuple(shapes)


def signature_for(sample_shape: Sequence[int], rows: np.ndarray | None = None) -> ExportSignature:
    """One float32 tensor ``input`` of [batch, *sample_shape] -> ``logits`` [batch, classes]."""
    return ExportSignature(
        input_names=["input"],
        output_names=["logits"],
        example=(_example(sample_shape, rows),),
        dynamic_axes=[{0: "batch"}],
    )


def _example(sample_shape: Sequence[int], rows: np.ndarray | None) -> Tensor:
    if rows is not None and len(rows) >= 2:
        return torch.from_numpy(np.ascontiguousarray(rows[:2], dtype=np.float32))
    return torch.zeros((2, *sample_shape), dtype=torch.float32)


class _TextLogits(nn.Module):
    """A Transformers sequence classifier as the exported graph sees it: token tensors in
    (by name, in ``names`` order), logits out."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        given = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }
        logits: Tensor = self.model(**{n: given[n] for n in self.names}).logits
        return logits


def text_signature(model: hf.SequenceClassifier, rows: np.ndarray) -> ExportSignature:
    """input_ids, attention_mask and token_type_ids (those the model's forward takes, in
    that order) with dynamic batch and sequence axes -> logits."""
    accepted = inspect.signature(model.model.forward).parameters
    names = [n for n in TEXT_INPUTS if n in accepted]
    if names[:1] != ["input_ids"]:
        raise BadInputError(f"export: {type(model.model).__name__} takes no input_ids")
    if "token_type_ids" in names and names[:2] != ["input_ids", "attention_mask"]:
        names.remove("token_type_ids")  # positional order of _TextLogits.forward
    feed = Feed("text", model.pad_token_id)
    example = _example([rows.shape[1]], rows)
    tensors = feed.inputs(names, example.numpy())
    config = model.model.config
    positions = getattr(config, "max_position_embeddings", None)
    return ExportSignature(
        input_names=names,
        output_names=["logits"],
        example=tuple(torch.from_numpy(tensors[n]) for n in names),
        dynamic_axes=[{0: "batch", 1: "sequence"} for _ in names],
        axis_max={"sequence": int(positions)} if isinstance(positions, int) else {},
        prepare=lambda wrapped: _TextLogits(wrapped.model, names),  # type: ignore[arg-type]
        feed=feed,
    )


def image_signature(rows: np.ndarray) -> ExportSignature:
    """float32 ``pixel_values`` [batch, channels, height, width] -> logits."""
    return ExportSignature(
        input_names=["pixel_values"],
        output_names=["logits"],
        example=(_example(rows.shape[1:], rows),),
        dynamic_axes=[{0: "batch"}],
    )


def signature_of(model: nn.Module, rows: np.ndarray) -> ExportSignature:
    """The signature ``model`` exports with, ``rows`` being what the job feeds it."""
    if isinstance(model, hf.SequenceClassifier):
        return text_signature(model, rows)
    if isinstance(model, hf.ImageClassifier):
        return image_signature(rows)
    return signature_for(list(rows.shape[1:]), rows)


def export(model: nn.Module, signature: ExportSignature) -> bytes:
    """The serialized ONNX graph of ``model`` (float32, eval mode, on the CPU)."""
    model = model.eval().to("cpu")
    if signature.prepare is not None:
        model = signature.prepare(model).eval()
    try:
        program = torch.onnx.export(
            model,
            signature.example,
            dynamo=True,
            input_names=signature.input_names,
            output_names=signature.output_names,
            dynamic_shapes=signature.dynamic_shapes(),
            opset_version=EXPORT_OPSET,
            optimize=True,
            verbose=False,
        )
    except Exception as error:
        # The model's code is the input: an operator or control flow the exporter cannot
        # capture fails the same way on every retry.
        raise BadInputError(f"export: torch.onnx.export failed: {_one_line(error)}") from error
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    data: bytes = program.model_proto.SerializeToString()
    if len(data) > MAX_ONNX_BYTES:
        raise BadInputError(f"export: the ONNX graph is {len(data)} bytes, over protobuf's 2 GiB")
    return data


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def graph_info(data: bytes) -> dict[str, Any]:
    """Input and output names and shapes (symbolic axes by name) and the opset of a graph."""
    proto = onnx.load_model_from_string(data)

    def describe(values: Any) -> list[dict[str, Any]]:
        described = []
        for value in values:
            tensor = value.type.tensor_type
            shape: list[int | str] = [
                d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim
            ]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            described.append({"name": value.name, "shape": shape, "dtype": dtype})
        return described

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "inputs": describe(proto.graph.input),
        "outputs": describe(proto.graph.output),
        "opset": opset,
        "parameters": int(sum(int(np.prod(t.dims)) for t in proto.graph.initializer)),
    }


class OnnxModule(nn.Module):
    """An ONNX graph run by ONNX Runtime behind an ``nn.Module`` (first output, float32).

    It has no torch parameters; ``parameter_count`` and ``size_bytes`` describe the graph,
    ``macs`` is what model.json recorded (counted on the torch model it was exported from).
    """

    def __init__(
        self,
        data: bytes,
        *,
        graph_optimization: GraphOptimization = "all",
        device: torch.device | str = "cpu",
        macs: int | None = None,
        feed: Feed | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.graph_optimization: GraphOptimization = graph_optimization
        self.device_type = torch.device(device).type
        self.providers = choose_providers(self.device_type, ort.get_available_providers())
        self.macs = macs
        self.feed = feed or Feed()
        self.info = graph_info(data)
        self._sessions: dict[int, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        self.input_names = [str(i["name"]) for i in self.info["inputs"]]
        self.feed.check(self.input_names)
        self.output_name = str(self.info["outputs"][0]["name"])

    def session(self, threads: int | None = None) -> ort.InferenceSession:
        """The session computing with ``threads`` intra-op threads (torch's count by default)."""
        threads = max(1, threads or torch.get_num_threads())
        with self._lock:
            session = self._sessions.get(threads)
            if session is None:
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = _LEVELS[self.graph_optimization]
                options.log_severity_level = 3
                providers = [
                    (p, CUDA_PROVIDER_OPTIONS) if p == CUDA_PROVIDER else p for p in self.providers
                ]
                try:
                    session = ort.InferenceSession(self.data, options, providers=providers)
                except Exception as error:  # ORT raises its own types for a graph it refuses
                    raise BadInputError(
                        f"ONNX Runtime refused the model: {_one_line(error)}"
                    ) from error
                self._sessions[threads] = session
            return session

    def run(self, x: np.ndarray) -> np.ndarray:
        feed = self.feed.inputs(self.input_names, x)
        out: np.ndarray = self.session().run([self.output_name], feed)[0]
        return out

    def forward(self, x: Tensor) -> Tensor:
        out = self.run(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(out).to(x.device)

    @property
    def parameter_count(self) -> int:
        return int(self.info["parameters"])

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @property
    def execution_provider(self) -> str:
        """The provider the session computes with (ORT drops one it could not start)."""
        return str(self.session().get_providers()[0])

    @property
    def provider_note(self) -> str | None:
        """Why a model meant for the CUDA device computes on the CPU, else None."""
        return provider_note(self.device_type, self.providers, self.execution_provider)

    def provider_notes(self) -> dict[str, str]:
        """The provider (and any shortfall) as stage or evaluation notes: bounded values."""
        notes = {"execution_provider": self.execution_provider}
        note = self.provider_note
        if note is not None:
            notes["execution_provider_note"] = note
        return notes


def choose_providers(device_type: str, available: Sequence[str]) -> list[str]:
    """The execution providers for a model on ``device_type`` ("cuda", "cpu", ...), given
    the providers the installed onnxruntime has: CUDA first on a CUDA device where the wheel
    has it (onnxruntime-gpu), the CPU always (last: ORT places what CUDA cannot run there)."""
    if device_type == "cuda" and CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def provider_note(device_type: str, requested: Sequence[str], actual: str) -> str | None:
    """A plain sentence when a CUDA device's model computes elsewhere, else None."""
    if device_type != "cuda" or actual == CUDA_PROVIDER:
        return None
    if CUDA_PROVIDER not in requested:
        return (
            f"device cuda, but the installed onnxruntime {ORT_VERSION} has no {CUDA_PROVIDER} "
            f"(the CPU wheel; build the Job image with ORT=cuda for onnxruntime-gpu): "
            f"ONNX Runtime runs on {actual}"
        )
    return (
        f"device cuda and onnxruntime has {CUDA_PROVIDER}, but ONNX Runtime could not start "
        f"it (CUDA or cuDNN libraries; see the log): it runs on {actual}"
    )


@dataclass(frozen=True)
class Deviation:
    max_abs_diff: float
    row: int
    output: int
    rows: int

    def describe(self) -> str:
        return (
            f"max abs difference {self.max_abs_diff:.3g} at holdout row {self.row}, "
            f"output {self.output} ({self.rows} rows compared)"
        )


@torch.inference_mode()
def compare(model: nn.Module, onnx_model: OnnxModule, rows: np.ndarray) -> Deviation:
    """The largest |ORT - PyTorch| over ``rows``, run once as one batch and once row by row
    for the first rows (so the dynamic batch axis is exercised)."""
    model = model.eval().to("cpu")
    reference = model(torch.from_numpy(rows)).float().numpy()
    outputs = onnx_model.run(rows)
    if outputs.shape != reference.shape:
        raise BadInputError(
            f"export: ONNX Runtime output shape {list(outputs.shape)} differs from "
            f"PyTorch's {list(reference.shape)}"
        )
    difference = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    difference = difference.reshape(len(rows), -1)
    for index in range(min(4, len(rows))):
        single = onnx_model.run(rows[index : index + 1]).astype(np.float64).reshape(-1)
        alone = np.abs(single - reference[index].astype(np.float64).reshape(-1))
        difference[index] = np.maximum(difference[index], alone)
    if onnx_model.feed.kind == "text" and rows.ndim == 2 and rows.shape[1] >= 4:
        # The sequence axis is dynamic too: the first rows cut to half their length.
        cut = np.ascontiguousarray(rows[:4, : rows.shape[1] // 2])
        expected = model(torch.from_numpy(cut)).float().numpy().astype(np.float64)
        shorter = np.abs(onnx_model.run(cut).astype(np.float64) - expected)
        difference[: len(cut)] = np.maximum(difference[: len(cut)], shorter.reshape(len(cut), -1))
    # NaN compares as the worst deviation there is.
    difference = np.where(np.isnan(difference), np.inf, difference)
    row, output = divmod(int(np.argmax(difference)), difference.shape[1])
    return Deviation(float(difference[row, output]), row, output, len(rows))


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="driftwarden-onnx-") as name:
        yield Path(name)


def quantize(
    data: bytes,
    mode: OrtQuantization,
    calibration: np.ndarray | None,
    feed: Feed | None = None,
) -> bytes:
    """ONNX Runtime int8 quantization of a float graph.

    dynamic-int8: weights int8 per channel, activations quantized per call (MatMul/Gemm,
    where it pays on CPU). static-int8: QDQ format, activations uint8 with ranges calibrated
    on ``calibration`` rows, weights int8 per channel (Conv, MatMul, Gemm).
    """
    if mode == "none":
        return data
    # Imported here: onnxruntime.quantization pulls in more than serving needs.
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    with _workdir() as work:
        source, prepared, target = work / "fp32.onnx", work / "prepared.onnx", work / "int8.onnx"
        source.write_bytes(data)
        # Shape inference and graph fusions first, as ORT's quantization guide advises.
        # ORT's symbolic shape inference does not complete on the exporter's Transformers
        # graphs (and then leaves a file in the working directory): ONNX's own shape
        # inference is used for them.
        text = feed is not None and feed.kind == "text"
        if text:
            # The exporter's intermediate shapes of such a graph disagree with what ONNX's
            # shape inference derives later in quantize_dynamic: it infers them afresh.
            proto = onnx.load_model_from_string(data)
            del proto.graph.value_info[:]
            source.write_bytes(proto.SerializeToString())
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=text)
        if mode == "dynamic-int8":
            quantize_dynamic(
                str(prepared),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
        else:
            if calibration is None or len(calibration) == 0:
                raise BadInputError("export.quantize static-int8 needs reference rows to calibrate")
            names = [str(i["name"]) for i in graph_info(data)["inputs"]]
            rows_to_inputs = (feed or Feed()).inputs

            class Calibration(CalibrationDataReader):  # type: ignore[misc]
                def __init__(self, rows: np.ndarray, batch: int = 16) -> None:
                    self._batches: Iterator[dict[str, np.ndarray]] = iter(
                        rows_to_inputs(names, rows[i : i + batch])
                        for i in range(0, len(rows), batch)
                    )

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self._batches, None)

            quantize_static(
                str(prepared),
                str(target),
                Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            )
        return target.read_bytes()


def save(module: OnnxModule, directory: Path, meta: dict[str, Any]) -> None:
    """Write model.onnx and model.json (``meta`` plus what the graph says of itself)."""
    (directory / ONNX_NAME).write_bytes(module.data)
    info = module.info
    block = dict(meta.get("onnx", {}))
    block.update(
        {
            "file": ONNX_NAME,
            "opset": info["opset"],
            "inputs": info["inputs"],
            "outputs": info["outputs"],
            "graph_optimization": module.graph_optimization,
            "feed": module.feed.to_json(),
            "onnxruntime": ORT_VERSION,
            "onnx": onnx.__version__,
            "torch": torch.__version__.split("+")[0],
        }
    )
    full = {**meta, "format": ONNX_FORMAT, "onnx": block, "parameters": module.parameter_count}
    if module.macs is not None:
        full["macs"] = module.macs
    (directory / "model.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")


def load(directory: Path, meta: dict[str, Any], device: torch.device | str = "cpu") -> OnnxModule:
    block = meta.get("onnx", {})
    level = str(block.get("graph_optimization", "all"))
    if level not in _LEVELS:
        raise BadInputError(f"{directory / 'model.json'}: unknown graph_optimization {level!r}")
    macs = meta.get("macs")
    return OnnxModule(
        (directory / ONNX_NAME).read_bytes(),
        graph_optimization=level,  # type: ignore[arg-type]
        device=device,
        macs=None if macs is None else int(macs),
        feed=Feed.from_json(block.get("feed")),
    )
