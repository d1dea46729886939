"""The quantize stage: int8 dynamic quantization, or a cast to fp16 / bf16.

int8 is dynamic (weights quantized once, activations per call): every ``nn.Linear`` becomes
an ``Int8DynamicLinear`` holding int8 weights with one scale per output channel, whose
input rows are quantized at run time. The stored form (plain int8 + float32 tensors) saves
to safetensors as it is; the kernel depends on the device:

- CPU (x86 / fbgemm or onednn engines): PyTorch's own dynamic quantized linear
  (``torch.ops.quantized.linear_prepack`` / ``linear_dynamic``, the kernel behind
  ``torch.ao.quantization.quantize_dynamic``), fed the same per-channel int8 weights. It
  quantizes activations and multiplies in one fused fbgemm call. Measured side by side on a
  BERT-base-sized classifier (bench/int8_bert_bench.py, bench/RESULTS.md "Bring your own
  model: pruning and int8"), it is the fastest of the paths tried; our earlier
  ``torch._int_mm`` path ran slower than float32 there (0.5-0.8x), and torchao's eager
  ``Int8DynamicActivationInt8WeightConfig`` slower still.
- CUDA (and CPUs without those engines): rows quantized symmetrically per call and
  multiplied with ``torch._int_mm`` (int8 x int8 -> int32), the kernel torchao's int8
  dynamic config runs on too.

Conv layers stay float: dynamic quantization pays off on Linear layers.

fp16 / bf16 cast the whole model and wrap its forward so callers keep passing and getting
float32. Whether that is faster depends on the device (fp16 on most CPUs is much slower),
so the stage times the model before and after and says so in its notes; the gates decide.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from optimizer_job.contract import BadInputError, QuantizeStage
from optimizer_job.evaluate import pinned_threads
from optimizer_job.strategies.base import StageContext, StageOutcome

INT8_BACKEND = "int8-dynamic-per-channel"
# Engines whose dynamic quantized linear takes per-channel qint8 weights on the CPU.
_PACKED_ENGINES = ("x86", "fbgemm", "onednn")
# The quantization block a model made here carries; ``export_state`` returns it.
QUANTIZATION_ATTR = "driftwarden_quantization"
_HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Int8DynamicLinear(nn.Module):
    """``y = x W^T + b`` with W in int8 (symmetric, per output channel) and x quantized on
    every call (on the CPU per tensor by the engine's fused kernel, else per row).

    Buffers are named ``weight`` (int8, [out, in]), ``weight_scale`` (float32, [out]) and
    ``bias`` (float32, optional), so the state dict keeps the float model's keys and shapes.
    """

    weight: Tensor
    weight_scale: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        # False: always the torch._int_mm path (benchmarks compare the two).
        self.use_packed = True
        self._packed: Any = None

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8DynamicLinear:
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        module = cls(linear.in_features, linear.out_features, linear.bias is not None)
        module.to(weight.device)
        module.weight.copy_(torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        module.weight_scale.copy_(scale)
        if linear.bias is not None and module.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and self.use_packed and _packed_engine():
            if self._packed is None:
                self._packed = self._pack()
            out: Tensor = torch.ops.quantized.linear_dynamic(
                x.float(), self._packed, reduce_range=True
            )
            return out
        return self._int_mm_forward(x)

    def _pack(self) -> Any:
        """The CPU engine's packed form of the same int8 weights (zero points 0)."""
        with warnings.catch_warnings():
            # Quantized tensor types are marked deprecated; this one only feeds the packing.
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch._make_per_channel_quantized_tensor(
                self.weight,
                self.weight_scale.double(),
                torch.zeros(self.out_features, dtype=torch.long),
                0,
            )
            return torch.ops.quantized.linear_prepack(qweight, self.bias)

    def _int_mm_forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()
        row_max = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
        # In-place steps: at batch 32 the elementwise work costs as much as the GEMM.
        quantized = (rows * (127.0 / row_max)).round_().clamp_(-127, 127).to(torch.int8)
        row_scale = row_max.div_(127.0)
        if _int_mm_fits(quantized, self.weight):
            out = torch._int_mm(quantized, self.weight.t()).float()
            out.mul_(row_scale).mul_(self.weight_scale)
        else:
            # cuBLASLt's int8 GEMM wants > 16 rows and sizes divisible by 8: compute the
            # same product in float instead (correct, not faster).
            dequantized = self.weight.float() * self.weight_scale[:, None]
            out = (quantized.float() * row_scale) @ dequantized.t()
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    # The packed weights are a cache of the buffers: rebuilt after a load or a move, never
    # copied or saved.
    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self._packed = None
        return super()._apply(fn, recurse)  # type: ignore[no-untyped-call]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # type: ignore[no-untyped-call]
        state["_packed"] = None
        return state

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _packed_engine() -> bool:
    return torch.backends.quantized.engine in _PACKED_ENGINES


def _int_mm_fits(rows: Tensor, weight: Tensor) -> bool:
    if rows.device.type == "cpu":
        return True
    m, k = rows.shape
    n = weight.shape[0]
    return m > 16 and k % 8 == 0 and n % 8 == 0


def quantize_int8(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` with every ``nn.Linear`` replaced by ``Int8DynamicLinear``."""
    quantized: nn.Module = copy.deepcopy(model).eval()
    if isinstance(quantized, nn.Linear):
        names = [""]
        quantized = Int8DynamicLinear.from_float(quantized)
    else:
        names = [name for name, m in quantized.named_modules() if isinstance(m, nn.Linear)]
        for name in names:
            linear = quantized.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            _replace(quantized, name, Int8DynamicLinear.from_float(linear))
    _mark(quantized, {"mode": "int8", "backend": INT8_BACKEND, "layers": names})
    return quantized, names


def cast_half(model: nn.Module, mode: str) -> nn.Module:
    """A copy of ``model`` in fp16 / bf16 that takes and returns float32 tensors."""
    cast = copy.deepcopy(model).eval()
    _cast(cast, mode)
    return cast


def export_state(module: nn.Module) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """What a model directory stores of a quantized model: its tensors (contiguous, on the
    CPU, plain int8 / float dtypes that safetensors takes) and a JSON-able block saying how
    it was quantized (mode, backend, quantized layers); ``restore`` reverses it.

    A model this module did not make gets the block ``{"mode": "none"}``: save it as floats.
    """
    block = getattr(module, QUANTIZATION_ATTR, None)
    if not isinstance(block, dict):
        block = {"mode": "none"}
    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        if tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()  # safetensors refuses tensors that share memory
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors, dict(block)


def restore(float_module: nn.Module, tensors: dict[str, Tensor], meta: dict[str, Any]) -> nn.Module:
    """Rebuild on ``float_module`` (the float architecture, already at the saved shapes)
    the model ``export_state`` described, and load ``tensors`` into it strictly.

    ``meta`` is the block ``export_state`` returned, or a whole model.json holding it
    under ``"quantization"``.
    """
    block = meta.get("quantization", meta)
    mode = block.get("mode")
    module = float_module.eval()
    if mode == "int8":
        layers = [str(name) for name in block.get("layers", [])]
        for name in layers:
            linear = module.get_submodule(name)
            if not isinstance(linear, nn.Linear):
                raise ValueError(f"quantized layer {name!r} is not an nn.Linear in the model")
            empty = Int8DynamicLinear(
                linear.in_features, linear.out_features, linear.bias is not None
            )
            if name:
                _replace(module, name, empty)
            else:
                module = empty
        _mark(
            module,
            {"mode": "int8", "backend": block.get("backend", INT8_BACKEND), "layers": layers},
        )
    elif mode in _HALF_DTYPES:
        _cast(module, str(mode))
    else:
        raise ValueError(f"unknown quantization mode {mode!r}")
    module.load_state_dict(tensors, strict=True)
    return module


def weight_bytes(module: nn.Module) -> int:
    """Bytes of every tensor in the state dict: what the weights file holds."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def quantization_of(model: nn.Module) -> str | None:
    """The mode a model was quantized with by this module, or None for a float model."""
    block = getattr(model, QUANTIZATION_ATTR, None)
    return str(block.get("mode")) if isinstance(block, dict) else None


def apply(stage: QuantizeStage, model: nn.Module, ctx: StageContext) -> StageOutcome:
    already = quantization_of(model)
    if already is not None:
        raise BadInputError(
            f"quantize: the model is already quantized ({already}); quantize once, as the "
            "pipeline's last stage"
        )
    device = torch.device(ctx.device)
    model = model.to(device).eval()
    notes: dict[str, str | float | int] = {"mode": stage.mode}
    if stage.mode == "int8":
        quantized, layers = quantize_int8(model)
        notes["backend"] = INT8_BACKEND
        notes["int8_layers"] = len(layers)
        if not layers:
            notes["warning"] = "the model has no nn.Linear layer: nothing was quantized"
    else:
        quantized = cast_half(model, stage.mode)
        notes["backend"] = f"cast-{stage.mode}"
    before_bytes, after_bytes = weight_bytes(model), weight_bytes(quantized)
    notes["weight_bytes_before"] = before_bytes
    notes["weight_bytes_after"] = after_bytes
    notes["size_ratio"] = round(before_bytes / max(after_bytes, 1), 3)
    ratio = _quick_speed_ratio(model, quantized, ctx, device)
    notes["quick_speedup_b32"] = round(ratio, 3)
    notes["quick_check_threads"] = ctx.threads
    if ratio < 1.0:
        notes["warning"] = (
            f"{stage.mode} runs slower than the input model on {device.type} "
            f"({ratio:.2f}x in a quick check with {ctx.threads} thread(s)); the side-by-side "
            "measurement decides"
        )
    ctx.log.info(
        "quantize %s: weights %d -> %d bytes, quick speed check %.2fx on %s",
        stage.mode,
        before_bytes,
        after_bytes,
        ratio,
        device.type,
    )
    return StageOutcome(model=quantized, ctx=ctx, notes=notes)


def _quick_speed_ratio(
    before: nn.Module, after: nn.Module, ctx: StageContext, device: torch.device
) -> float:
    """Median latency ratio before/after at batch 32, in short ABBA rounds, with the thread
    count the evaluation measures with (``ctx.threads``): a rough check for the notes; the
    side-by-side measurement after the pipeline decides."""
    rows = torch.from_numpy(ctx.train.X[:32]).to(device)
    models = (before, after)
    timings: dict[int, list[float]] = {0: [], 1: []}
    with pinned_threads(ctx.threads), torch.inference_mode():
        for model in models:
            model(rows)  # warm-up: first calls pay for allocation and kernel choice
        for round_index in range(12):
            first = round_index % 2  # A B, B A, A B, ...
            for key in (first, 1 - first):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                for _ in range(3):
                    models[key](rows)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                timings[key].append(time.perf_counter() - start)
    return statistics.median(timings[0]) / max(statistics.median(timings[1]), 1e-12)


def _mark(module: nn.Module, block: dict[str, Any]) -> None:
    """Tag the model so that ``modelio`` saves it through ``export_state``."""
    setattr(module, QUANTIZATION_ATTR, block)


def _cast(module: nn.Module, mode: str) -> None:
    dtype = _HALF_DTYPES[mode]
    module.to(dtype)
    module.register_forward_pre_hook(functools.partial(_cast_inputs, dtype=dtype))
    module.register_forward_hook(_outputs_to_float32)
    _mark(module, {"mode": mode, "backend": f"cast-{mode}", "layers": []})


def _cast_inputs(_module: nn.Module, args: tuple[Any, ...], *, dtype: torch.dtype) -> Any:
    return tuple(
        a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args
    )


def _outputs_to_float32(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
    return output.float() if isinstance(output, Tensor) else output


def _replace(root: nn.Module, name: str, replacement: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, replacement)
