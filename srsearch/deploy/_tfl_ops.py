"""Lower a torch custom op to one LiteRT (``tfl.*``) op through litert-torch's lowering registry.

The mechanism litert-torch uses for its own ``torch.ops.tfl.*`` ops
(litert_torch/backend/experimental/torch_tfl); `srsearch.deploy.depth_to_space` (DEPTH_TO_SPACE) and
`srsearch.deploy._prelu` (PRELU) use it for ops litert-torch 0.10 otherwise decomposes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def lower_to_tfl(op: Any, tfl_name: str, attributes: Callable[..., dict] | None = None) -> None:
    """Register: ``op(*tensors, *scalars)`` becomes ``tfl_name(*tensors)`` with the attributes
    ``attributes(ir, *scalars)`` returns (``ir`` is litert-converter's MLIR module)."""
    from srsearch.common.quiet import import_converter

    import_converter()  # first, so that its runtime's C++ log lines go to the library log
    from litert_converter.mlir import ir
    from litert_torch.backend.experimental.torch_tfl._lowerings import _ir_operation
    from litert_torch.backend.lowerings import registry
    from litert_torch.backend.lowerings import utils as lowering_utils

    @registry.lower(op)
    def _lower(lctx, *args):
        operands = [a for a in args if isinstance(a, ir.Value)]
        scalars = [a for a in args if not isinstance(a, ir.Value)]
        return _ir_operation(
            tfl_name,
            results=lowering_utils.node_meta_to_ir_types(lctx.node),
            operands=operands,
            attributes=attributes(ir, *scalars) if attributes else {},
        )
