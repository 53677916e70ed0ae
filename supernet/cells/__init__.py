"""The cell kinds of the search space, one file each, in an explicit registry.

Adding a kind: a new file here declaring its `CellKind` (convs, residual or not, inner-width
field, low-rank rule, elastic and plain modules), one line in `KINDS`, and, if it has its own
inner-width choices, that field in `supernet.space.SearchSpace`. The space, the supernet, the
subnet, the latency keys, stage 2 and stage 3 derive everything else from the declaration.
"""

from __future__ import annotations

from srcore.errors import UserError
from supernet.cells.base import CellKind, ConvSpec
from supernet.cells.conv import CONV
from supernet.cells.res import RES
from supernet.cells.wide import WIDE, wide_low

KINDS: dict[str, CellKind] = {k.name: k for k in (CONV, RES, WIDE)}


def kind(name: str) -> CellKind:
    """The registered kind ``name``; a `UserError` listing the kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise UserError(f"cell block {name!r} is unknown; choose one of {list(KINDS)}") from None


__all__ = ["KINDS", "CellKind", "ConvSpec", "kind", "wide_low"]
