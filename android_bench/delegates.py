"""What the LiteRT delegates accept, and the operators of a `.tflite` file in execution order.

`GPU_DELEGATE_OPS` is the op-level screen of the LiteRT GPU delegate. `srsearch.deploy.tflite` keeps
the same set for `srsearch export`'s GPU screen (a test asserts the two are equal), and the fake
phone in `tests/fake_adb` refuses exactly the ops outside it, so the export screen, the fake
and the harness agree on what "the GPU delegate refuses this op" means. A real phone's delegate
also checks versions, types and shapes per node: the phone stays the final word.

Imports only the flatbuffer schema that ships with `ai_edge_litert` (no torch, no srsearch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Operators the LiteRT GPU delegate accepts, by flatbuffer schema name. Source: the switch in
# CheckGpuDelegateCompatibility(), google-ai-edge/LiteRT tflite/tools/versioning/
# gpu_compatibility.cc. Left out on purpose: CAST (only bool<->float and float32<->int32
# pass) and BROADCAST_TO (not in the switch). The last line: custom ops the delegate has.
GPU_DELEGATE_OPS: frozenset[str] = frozenset(
    """
    ABS ADD ADD_N ATAN2 AVERAGE_POOL_2D BATCH_MATMUL BITCAST CEIL CONCATENATION CONV_2D COS
    CUMSUM DENSIFY DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU
    EMBEDDING_LOOKUP EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GELU GREATER
    GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR
    LOGISTIC LSTM MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT PACK PAD
    PADV2 POW PRELU QUANTIZE REDUCE_ALL REDUCE_ANY REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6
    RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 RIGHT_SHIFT ROUND
    RSQRT SELECT SELECT_V2 SIGN SIN SLICE SOFTMAX SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE
    SQUARED_DIFFERENCE STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CBRT STABLEHLO_CLAMP
    STABLEHLO_REMAINDER STABLEHLO_SHIFT_LEFT STRIDED_SLICE SUB SUM TANH TILE TOPK_V2 TRANSPOSE
    TRANSPOSE_CONV
    Convolution2DTransposeBias MaxPoolingWithArgmax2D MaxUnpooling2D Resampler
    """.split()
)

DELEGATE_NAMES = {"gpu": "GPU", "nnapi": "NNAPI"}
"""benchmark_model's name for each delegate (DelegateProvider::GetName())."""


def read_flatbuffer(path: Path) -> tuple[Any, Any]:
    """(model, schema module) of a LiteRT flatbuffer, read with the schema that ships in
    `ai_edge_litert` (no interpreter is built).

    Raises:
        ValueError: not a LiteRT flatbuffer.
    """
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path} is not a LiteRT/TFLite flatbuffer (no TFL3 identifier)")
    return schema.Model.GetRootAs(buf, 0), schema


def opcode_names(model: Any, schema: Any) -> list[str]:
    """The name of each entry of the model's operator-code table: builtin ops by their schema
    name ("CONV_2D"), custom ops by their custom code."""
    names = {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(code, int)
    }
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes >= 127 live in BuiltinCode; older files only fill DeprecatedBuiltinCode.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append((code.CustomCode() or b"CUSTOM").decode())
        else:
            codes.append(names.get(builtin, f"BUILTIN_{builtin}"))
    return codes


def graph_ops(path: Path) -> list[str]:
    """Operator names of the main subgraph in execution order (builtin schema names).

    This is the node order `benchmark_model` hands a delegate, so partitions (runs of
    consecutive accepted nodes) can be counted from it.

    Raises:
        ValueError: not a LiteRT flatbuffer.
    """
    model, schema = read_flatbuffer(path)
    codes = opcode_names(model, schema)
    if model.SubgraphsLength() == 0:
        return []
    subgraph = model.Subgraphs(0)
    return [codes[subgraph.Operators(j).OpcodeIndex()] for j in range(subgraph.OperatorsLength())]


def partitions(accepted: list[bool]) -> int:
    """Runs of consecutive accepted nodes: the delegate kernels a graph is cut into."""
    return sum(1 for i, ok in enumerate(accepted) if ok and (i == 0 or not accepted[i - 1]))
