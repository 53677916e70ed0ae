"""PyTorch -> LiteRT (TFLite flatbuffer) conversion, shared by `latency build` and `export`.

One converter for the whole project, so that the models the latency table is measured on and the
model that ships are lowered by the same code path (same ops, same layouts). It uses
`litert-torch` (torch.export -> StableHLO -> TFLite ops, no TensorFlow needed).

Shapes are static: LiteRT's CPU/GPU delegates plan memory for one input size, and the latency
of an SR net depends on that size, so each (model, input size) pair is its own file.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from srsearch.errors import UserError

# Only fp32 for now. fp16 / int8 slot in here: `_quant_config` maps a precision to the
# `quant_config` that `litert_torch.convert` takes, and `check_tolerance` gets a looser atol.
Precision = Literal["fp32"]
PRECISIONS: tuple[str, ...] = ("fp32",)

# Max abs difference accepted between PyTorch and LiteRT outputs for an fp32 model with outputs
# in [0, 1]. Measured differences are ~1e-6 (reordered float sums in XNNPACK).
FP32_ATOL = 1e-4


class ConversionError(UserError):
    """The model could not be converted, or the converted file disagrees with PyTorch."""


def convert(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    path: Path,
    *,
    channels_last_io: bool = False,
    precision: Precision = "fp32",
    check: bool = True,
    atol: float = FP32_ATOL,
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
            starts with, but a net ending in PixelShuffle gains one at the output instead:
            litert-torch lowers PixelShuffle as NCHW RESHAPE/TRANSPOSE ops either way.
        precision: Numeric precision of the file. Only "fp32" so far.
        check: Run the converted file on a random input with LiteRT and compare with PyTorch;
            raise `ConversionError` when the max abs difference exceeds `atol`.
        atol: Tolerance for `check`.

    Returns:
        `path`.
    """
    if precision not in PRECISIONS:
        raise ConversionError(
            f"precision {precision!r} is not supported yet; use one of {', '.join(PRECISIONS)}"
        )
    shape = _check_shape(input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    sample = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with _eval_mode(model), torch.no_grad():
        reference = model(sample)
        module: nn.Module = model
        if channels_last_io:
            module, sample, reference = _channels_last(module, sample, reference)
        try:
            _litert_convert(module, sample, precision, tmp)
        except Exception as exc:  # litert-torch raises many types; name the model and shape.
            tmp.unlink(missing_ok=True)
            raise ConversionError(
                f"litert-torch could not convert {type(model).__name__} at input shape "
                f"{shape} to {path}: {type(exc).__name__}: {exc}. The exporter needs a model "
                "that torch.export can trace with static shapes (no data-dependent Python "
                "control flow)."
            ) from exc
    try:
        if check:
            got = run_tflite(tmp, sample.numpy())
            diff = float(np.max(np.abs(got - reference.numpy())))
            if not diff <= atol:
                raise ConversionError(
                    f"converted {type(model).__name__} disagrees with PyTorch at input shape "
                    f"{shape}: max abs difference {diff:.3g} > atol {atol:g}; {path} not "
                    "written. Report the model config; pass check=False to keep the file "
                    "for inspection."
                )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run_tflite(path: Path, x: np.ndarray, threads: int = 2) -> np.ndarray:
    """Run a single-input, single-output LiteRT model once on `x` (reference inference).

    Args:
        path: The `.tflite` file.
        x: Input with exactly the file's static input shape; cast to the input dtype.
        threads: CPU threads for the interpreter (XNNPACK is applied by default).

    Returns:
        The first output tensor, copied.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    if tuple(inp["shape"]) != tuple(x.shape):
        raise ValueError(
            f"{path} takes input shape {tuple(int(d) for d in inp['shape'])}, got {x.shape}"
        )
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    return np.array(interpreter.get_tensor(out["index"]))


def op_histogram(path: Path) -> dict[str, int]:
    """Count the operators in a LiteRT flatbuffer, over all subgraphs.

    Reads the file with the flatbuffer schema that ships in `ai_edge_litert`, without building
    an interpreter, so it reflects the converter's output (before any delegate fuses ops).
    Builtin ops use their schema names ("CONV_2D", "DEPTH_TO_SPACE"); custom ops their custom
    code.

    Returns:
        {op name: count}, most frequent first.
    """
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UserError(f"{path} is not a LiteRT/TFLite flatbuffer (no TFL3 identifier)")
    names = {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(code, int)
    }
    model = schema.Model.GetRootAs(buf, 0)
    op_names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes >= 127 live in BuiltinCode; older files only fill DeprecatedBuiltinCode.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            op_names.append((code.CustomCode() or b"CUSTOM").decode())
        else:
            op_names.append(names.get(builtin, f"BUILTIN_{builtin}"))
    counts: Counter[str] = Counter()
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for j in range(subgraph.OperatorsLength()):
            counts[op_names[subgraph.Operators(j).OpcodeIndex()]] += 1
    return dict(counts.most_common())


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

    wrapped = litert_torch.to_channel_last_io(module, args=[0], outputs=[0])
    # (N, C, H, W) -> (N, H, W, C) for both ends.
    return wrapped, sample.permute(0, 2, 3, 1).contiguous(), reference.permute(0, 2, 3, 1)


def _litert_convert(
    module: nn.Module, sample: torch.Tensor, precision: Precision, out: Path
) -> None:
    import litert_torch

    quant_config = _quant_config(precision)
    with _quiet_progress(litert_torch):
        edge_model = litert_torch.convert(module, (sample,), quant_config=quant_config)
        edge_model.export(str(out))


def _quant_config(precision: Precision) -> None:
    """The `quant_config` for `precision`; None is plain fp32."""
    return None


@contextlib.contextmanager
def _quiet_progress(litert_torch) -> Iterator[None]:
    """Silence litert-torch's per-stage progress lines (dozens per model) for one call."""
    config = litert_torch.config
    before = config.show_progress
    config.show_progress = False
    try:
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
