"""PyTorch -> LiteRT (TFLite flatbuffer) conversion, shared by `latency build` and `export`.

One converter for the whole project, so that the models the latency table is measured on and the
model that ships are lowered by the same code path (same ops, same layouts). It uses
`litert-torch` (torch.export -> StableHLO -> TFLite ops, no TensorFlow needed); see
docs/export.md for the measurements behind that choice.

Shapes are static: LiteRT's CPU/GPU delegates plan memory for one input size, and the latency
of an SR net depends on that size, so each (model, input size) pair is its own file.

Precisions:

- fp32: plain float file, checked against PyTorch to `FP32_ATOL`.
- fp16: litert-torch's own fp16 recipe (ai-edge-quantizer float casting): weights stored as
  float16 behind DEQUANTIZE ops, activations float. The GPU delegate computes in fp16 anyway;
  XNNPACK on a CPU without fp16 arithmetic unpacks the weights once at load. Checked to
  `FP16_ATOL`.
- int8: static post-training quantisation through litert-torch's PT2E quantizer (per-channel
  symmetric int8 weights, per-tensor int8 activations calibrated with a histogram observer on
  a representative set). The file takes and returns int8 tensors; `run_tflite` (de)quantises
  them with the file's scale and zero point. Checked against PyTorch's simulation of the same
  quantised graph to `INT8_ATOL`; its accuracy cost is what `srsearch export` measures.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from srsearch.common.errors import ConversionError, UserError
from srsearch.common.quiet import import_converter

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

# Max abs difference accepted between PyTorch and LiteRT outputs for an fp32 model with outputs
# in [0, 1]. Measured differences are ~1e-6 (reordered float sums in XNNPACK).
FP32_ATOL = 1e-4
# fp16 weights: measured ~1e-4 on trained SR nets; 1e-2 is ~2.5 grey levels of 8-bit output.
FP16_ATOL = 1e-2
# int8 file vs PyTorch's simulation of the same quantised graph (float maths with the same
# scales): integer requantisation rounds differently, a few output steps (~0.004 each) at most.
INT8_ATOL = 0.05
ATOL: dict[str, float] = {"fp32": FP32_ATOL, "fp16": FP16_ATOL, "int8": INT8_ATOL}

# Operators the LiteRT GPU delegate accepts, by flatbuffer schema name: one list, owned by the
# device layer (android_bench.delegates, where its source is cited), so that the export's screen
# and the fake phone's delegate agree.
from android_bench.delegates import GPU_DELEGATE_OPS  # noqa: E402

# The GPU delegate works on BHWC tensors: anything of higher rank stays on the CPU.
GPU_MAX_RANK = 4


def convert(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    path: Path,
    *,
    channels_last_io: bool = False,
    precision: Precision = "fp32",
    representative: Sequence[torch.Tensor] | None = None,
    depth_to_space: bool = False,
    native_prelu: bool = True,
    check: bool = True,
    atol: float | None = None,
) -> Path:
    """Convert `model` to a static-shape LiteRT flatbuffer at `path`.

    The file is written atomically (temporary file + rename), so an interrupted run never
    leaves a truncated model behind. The model's train/eval mode is restored afterwards.

    Args:
        model: Module taking one float32 NCHW tensor and returning one tensor.
        input_shape: The PyTorch (NCHW) input shape, e.g. (1, 3, 180, 320). Static.
        path: Destination `.tflite`; parent folders are created.
        channels_last_io: Make the file's input and output NHWC (what a camera pipeline
            hands a phone model) instead of NCHW. This removes the TRANSPOSE an NCHW file
            starts with; with `depth_to_space` the file has no layout ops at all.
        precision: "fp32", "fp16" or "int8" (see the module docstring).
        representative: NCHW float inputs of `input_shape` that calibrate int8 activation
            ranges (static quantisation; required for int8, ignored otherwise).
        depth_to_space: Lower every pixel shuffle to one DEPTH_TO_SPACE op (NHWC) instead of
            litert-torch's RESHAPE/TRANSPOSE chain, by permuting the output channels of the
            layers that feed it (`srsearch.deploy.depth_to_space`). Raises `ConversionError` when
            the model's graph does not allow it.
        native_prelu: Lower every ``nn.PReLU`` to one PRELU op (`srsearch.deploy._prelu`) instead of
            litert-torch's RELU/SUB/MUL/MUL. fp32 and fp16 only: int8 keeps the decomposed
            form, which PT2E quantises.
        check: Run the converted file on a random input with LiteRT and compare with PyTorch
            (for int8: PyTorch's simulation of the quantised graph); raise `ConversionError`
            when the max abs difference exceeds `atol`.
        atol: Tolerance for `check`; default `ATOL[precision]`.

    Returns:
        `path`.
    """
    if precision not in PRECISIONS:
        raise ConversionError(
            f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}"
        )
    if precision == "int8" and not representative:
        raise ConversionError(
            "precision 'int8' is static post-training quantisation and needs representative "
            "inputs to calibrate activation ranges: pass representative=[tensors of the input "
            "shape], or use fp32 / fp16"
        )
    atol = ATOL[precision] if atol is None else atol
    shape = _check_shape(input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    import_converter()  # its runtime's C++ log lines go to the library log

    sample = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with _eval_mode(model), torch.no_grad():
        reference = model(sample)
        module: nn.Module = model
        if depth_to_space:
            from srsearch.deploy.depth_to_space import depth_to_space_form

            module = depth_to_space_form(model, sample)
        if native_prelu and precision != "int8":
            from srsearch.deploy._prelu import native_prelu_form

            module = native_prelu_form(module)
        calib = list(representative or [])
        if channels_last_io:
            module, sample, reference = _channels_last(module, sample, reference)
            calib = [x.permute(0, 2, 3, 1).contiguous() for x in calib]
        try:
            module, reference = _litert_convert(module, sample, reference, precision, calib, tmp)
        except Exception as exc:  # litert-torch raises many types; name the model and shape.
            tmp.unlink(missing_ok=True)
            raise ConversionError(
                f"litert-torch could not convert {type(model).__name__} at input shape "
                f"{shape} ({precision}) to {path}: {type(exc).__name__}: {exc}. The exporter "
                "needs a model that torch.export can trace with static shapes (no "
                "data-dependent Python control flow)."
            ) from exc
    try:
        if check:
            got = run_tflite(tmp, sample.numpy())
            diff = float(np.max(np.abs(got - reference.numpy())))
            if not diff <= atol:
                raise ConversionError(
                    f"converted {type(model).__name__} ({precision}) disagrees with PyTorch at "
                    f"input shape {shape}: max abs difference {diff:.3g} > atol {atol:g}; "
                    f"{path} not written. Report the model config; pass check=False to keep "
                    "the file for inspection."
                )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run_tflite(path: Path, x: np.ndarray, threads: int = 2) -> np.ndarray:
    """Run a single-input, single-output LiteRT model once on `x` (reference inference).

    Args:
        path: The `.tflite` file.
        x: Float input with exactly the file's static input shape. Quantised (int8/uint8)
            inputs are quantised with the file's scale and zero point.
        threads: CPU threads for the interpreter (XNNPACK is applied by default).

    Returns:
        The first output tensor, copied; dequantised to float32 when the file's output is
        quantised.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    if tuple(inp["shape"]) != tuple(x.shape):
        raise ValueError(
            f"{path} takes input shape {tuple(int(d) for d in inp['shape'])}, got {x.shape}"
        )
    return invoke(interpreter, x)


def invoke(interpreter, x: np.ndarray) -> np.ndarray:
    """One inference on an allocated single-input interpreter, float in, float out.

    Quantised inputs are quantised (round to nearest, saturate) and quantised outputs
    dequantised with the tensor's own scale and zero point.
    """
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    dtype = np.dtype(inp["dtype"])
    if dtype.kind in "iu":
        scale, zero = inp["quantization"]
        info = np.iinfo(dtype)
        x = np.clip(np.round(np.asarray(x, np.float32) / scale) + zero, info.min, info.max)
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=dtype))
    interpreter.invoke()
    y = np.array(interpreter.get_tensor(out["index"]))
    if y.dtype.kind in "iu":
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * np.float32(scale)
    return y


def op_histogram(path: Path) -> dict[str, int]:
    """Count the operators in a LiteRT flatbuffer, over all subgraphs.

    Reads the file with the flatbuffer schema that ships in `ai_edge_litert`, without building
    an interpreter, so it reflects the converter's output (before any delegate fuses ops).
    Builtin ops use their schema names ("CONV_2D", "DEPTH_TO_SPACE"); custom ops their custom
    code.

    Returns:
        {op name: count}, most frequent first.
    """
    from android_bench.delegates import opcode_names

    model, schema = _read_model(path)
    op_names = opcode_names(model, schema)
    counts: Counter[str] = Counter()
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for j in range(subgraph.OperatorsLength()):
            counts[op_names[subgraph.Operators(j).OpcodeIndex()]] += 1
    return dict(counts.most_common())


def tensor_ranks(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} for every tensor of every subgraph (constants included)."""
    model, _ = _read_model(path)
    shapes: dict[str, tuple[int, ...]] = {}
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            name = (tensor.Name() or b"").decode(errors="replace") or f"tensor{t}"
            shapes[name] = (
                tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            )
    return shapes


@dataclass(frozen=True)
class GpuReport:
    """What in a file keeps it (partly) off the LiteRT GPU delegate."""

    unsupported_ops: dict[str, int]  # {op: count} not in GPU_DELEGATE_OPS
    high_rank_tensors: dict[str, tuple[int, ...]]  # {tensor: shape} of rank > GPU_MAX_RANK

    @property
    def ok(self) -> bool:
        return not self.unsupported_ops and not self.high_rank_tensors

    def describe(self) -> str:
        """One line per problem, for error messages."""
        lines = [
            f"op {op} (x{n}) is not supported by the LiteRT GPU delegate"
            for op, n in self.unsupported_ops.items()
        ]
        for name, shape in list(self.high_rank_tensors.items())[:5]:
            lines.append(f"tensor {name} has rank {len(shape)} {list(shape)} > {GPU_MAX_RANK}")
        if len(self.high_rank_tensors) > 5:
            lines.append(f"... and {len(self.high_rank_tensors) - 5} more tensors of rank > 4")
        return "\n".join(lines)


def gpu_report(path: Path) -> GpuReport:
    """Screen a file against `GPU_DELEGATE_OPS` and `GPU_MAX_RANK`."""
    ops = op_histogram(path)
    return GpuReport(
        unsupported_ops={op: n for op, n in ops.items() if op not in GPU_DELEGATE_OPS},
        high_rank_tensors={
            name: shape for name, shape in tensor_ranks(path).items() if len(shape) > GPU_MAX_RANK
        },
    )


def _read_model(path: Path):
    from android_bench.delegates import read_flatbuffer

    try:
        return read_flatbuffer(path)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ConversionError(
            f"input shape {tuple(input_shape)} must be 4 positive ints (N, C, H, W), "
            "e.g. (1, 3, 180, 320)"
        )
    return shape  # type: ignore[return-value]


def _channels_last(
    module: nn.Module, sample: torch.Tensor, reference: torch.Tensor
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    import litert_torch

    wrapped = litert_torch.to_channel_last_io(module, args=[0], outputs=[0]).eval()
    # (N, C, H, W) -> (N, H, W, C) for both ends.
    return wrapped, sample.permute(0, 2, 3, 1).contiguous(), reference.permute(0, 2, 3, 1)


def _litert_convert(
    module: nn.Module,
    sample: torch.Tensor,
    reference: torch.Tensor,
    precision: Precision,
    calib: list[torch.Tensor],
    out: Path,
) -> tuple[nn.Module, torch.Tensor]:
    """Convert and write `out`; returns (the module converted, its output on `sample`).

    For int8 that is PyTorch's quantise-dequantise simulation of the calibrated graph, the
    reference the converted file is checked against.
    """
    import litert_torch

    quant_config = None
    with _quiet_progress(litert_torch):
        if precision == "fp16":
            from litert_torch.generative.quantize import quant_recipes

            quant_config = quant_recipes.full_fp16_recipe()
        elif precision == "int8":
            module, quant_config = _pt2e_int8(module, sample, calib)
            reference = module(sample)
        edge_model = litert_torch.convert(module, (sample,), quant_config=quant_config)
        edge_model.export(str(out))
    return module, reference


def _pt2e_int8(module: nn.Module, sample: torch.Tensor, calib: list[torch.Tensor]):
    """Static int8 PTQ: export, insert observers, calibrate on `calib`, fold to Q/DQ."""
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = pq.PT2EQuantizer().set_global(
        pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    graph = torch.export.export(module, (sample,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    for x in calib:
        prepared(x)
    quantized = convert_pt2e(prepared, fold_quantize=False)
    # Exported from an eval-mode module, so the graph holds eval behaviour; an exported graph
    # ignores .eval(), set the flag litert-torch reads to warn about training mode.
    quantized.training = False
    return quantized, QuantConfig(pt2e_quantizer=quantizer)


@contextlib.contextmanager
def _quiet_progress(litert_torch) -> Iterator[None]:
    """Silence litert-torch's per-stage progress lines (dozens per model) and ai-edge-quantizer's
    size report (printed to stdout) for one call. Failures still raise."""
    config = litert_torch.config
    before = config.show_progress
    config.show_progress = False
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        config.show_progress = before


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
