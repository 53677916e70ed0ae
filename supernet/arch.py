"""Architectures as small, frozen, JSON-serialisable data, and the ops they run.

An architecture is a head 3x3 conv (3 -> head_width) + ReLU, D cells, a tail 3x3 conv
(last width -> 3*s*s), a global skip that repeats each LR input channel s*s times (a fixed 1x1
conv), and a pixel shuffle. Everything but the shuffle runs at LR resolution. Cell kinds:

- ``conv``: 3x3 conv (in -> width) + ReLU.
- ``res``: 3x3 (in -> inner) + ReLU, 3x3 (inner -> in), + identity. Keeps its input width.
- ``wide`` (WDSR-B): 1x1 (in -> inner) + ReLU, 1x1 (inner -> low), 3x3 (low -> in),
  + identity. Keeps its input width. ``low = wide_low(width)`` is derived, not searched.

Widths change only in the head and in conv cells (`KEEPS_WIDTH`). Each kind is declared once,
in its own file under `supernet.cells` (its convs, inner widths and modules); this module derives
the layer specs (what the latency model keys on) from those declarations. The set of
architectures a supernet holds is `supernet.space.SearchSpace`.

See docs/search_space.md for the choices and the size of the default space.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from srcore.errors import UserError
from srcore.layers import SKIPS
from supernet.cells import KINDS, kind
from supernet.cells.base import ACTS

SKIP_K = {"nearest": 1, "bicubic": 5}  # kernel side of each skip's fixed conv (srcore.LRSkip)

SCALES: tuple[int, ...] = (2, 3, 4)
BLOCKS: tuple[str, ...] = tuple(KINDS)  # ("conv", "res", "wide"), the registry's order
KEEPS_WIDTH: frozenset[str] = frozenset(k.name for k in KINDS.values() if k.residual)


_CELL_KEYS = frozenset({"block", "width", "inner"})


def _check_int(name: str, value: Any, allowed: str = "a positive integer") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} is {value!r}; it must be {allowed}")


@dataclass(frozen=True)
class CellConfig:
    """One cell of the body.

    Attributes:
        block: "conv", "res" or "wide" (see the module docstring).
        width: Output channels. A res or wide cell's width must equal its input width.
        inner: res: mid width of 3x3 -> ReLU -> 3x3; wide: 1x1 expansion width; conv: unused and
            equal to width (left out, it is filled in).
    """

    block: str
    width: int
    inner: int | None = None

    def __post_init__(self) -> None:
        has_inner = kind(self.block).has_inner
        _check_int("cell width", self.width)
        if self.inner is None:
            if has_inner:
                raise UserError(f"a {self.block!r} cell needs `inner` (a positive integer)")
            object.__setattr__(self, "inner", self.width)
        _check_int("cell inner", self.inner)
        if not has_inner and self.inner != self.width:
            raise UserError(
                f"a {self.block!r} cell has no inner width; inner is {self.inner} but must equal "
                f"width {self.width} (or be left out)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.block, "width": self.width, "inner": self.inner}


@dataclass(frozen=True)
class ArchConfig:
    """One architecture of the space; what the supernet, latency model and exporter meet at.

    Attributes:
        scale: Upscaling factor, 2, 3 or 4.
        head_width: Output channels of the head 3x3 conv.
        cells: The body, in order; depth D = len(cells) >= 1.
        act: The activation after the head and wherever a cell has a ReLU: "relu" (fused into
            the conv by the compiler) or "prelu" (a learned slope per channel, ECBSR's
            choice; one more op per activation in the exported file, so the latency model
            keys it apart). Left out of ``to_dict`` when "relu", so older files read the same.
        skip: The global LR skip (`srcore.layers.LRSkip`): "nearest" (a channel repeat,
            ECBSR's; left out of ``to_dict``) or "bicubic" (a fixed 5x5 conv: the net learns
            the residual over bicubic upsampling). Fixed by the space, not searched.
    """

    scale: int
    head_width: int
    cells: tuple[CellConfig, ...]
    act: str = "relu"
    skip: str = "nearest"

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or self.scale not in SCALES:
            raise UserError(f"scale is {self.scale!r}; it must be one of {list(SCALES)}")
        _check_int("head_width", self.head_width)
        if self.act not in ACTS:
            raise UserError(f"act is {self.act!r}; choose one of {list(ACTS)}")
        if self.skip not in SKIPS:
            raise UserError(f"skip is {self.skip!r}; choose one of {list(SKIPS)}")
        if isinstance(self.cells, list):
            object.__setattr__(self, "cells", tuple(self.cells))
        if not isinstance(self.cells, tuple) or not self.cells:
            raise UserError("cells is empty; an architecture needs at least one cell")
        cin = self.head_width
        for i, cell in enumerate(self.cells):
            if not isinstance(cell, CellConfig):
                raise UserError(f"cells[{i}] is {cell!r}; it must be a CellConfig")
            if cell.block in KEEPS_WIDTH and cell.width != cin:
                raise UserError(
                    f"cells[{i}] is a {cell.block!r} cell of width {cell.width} but its input "
                    f"has {cin} channels; a {cell.block} cell keeps its input width (it adds "
                    f"its input to its output), set its width to {cin}"
                )
            cin = cell.width

    @property
    def depth(self) -> int:
        return len(self.cells)

    def in_widths(self) -> list[int]:
        """Input channels of each cell."""
        return [self.head_width] + [c.width for c in self.cells[:-1]]

    def to_dict(self) -> dict[str, Any]:
        d = {
            "scale": self.scale,
            "head_width": self.head_width,
            "cells": [c.to_dict() for c in self.cells],
        }
        if self.act != "relu":
            d["act"] = self.act
        if self.skip != "nearest":
            d["skip"] = self.skip
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArchConfig:
        """Parse and validate; errors name the bad key or cell."""
        if not isinstance(d, Mapping):
            raise UserError(f"architecture config must be a JSON object, got {type(d).__name__}")
        keys = {"scale", "head_width", "cells"}
        if not keys <= set(d) <= keys | {"act", "skip"}:
            raise UserError(
                f"architecture config has keys {sorted(d)}; it needs exactly {sorted(keys)}"
                " (and optionally act and skip)"
            )
        if not isinstance(d["cells"], list | tuple):
            raise UserError(f"cells is {d['cells']!r}; it must be a list of cell objects")
        cells = []
        for i, c in enumerate(d["cells"]):
            if not isinstance(c, Mapping) or not {"block", "width"} <= set(c) <= _CELL_KEYS:
                raise UserError(
                    f"cells[{i}] is {c!r}; a cell is an object with keys block, width and "
                    "(for res and wide) inner"
                )
            try:
                cells.append(CellConfig(c["block"], c["width"], c.get("inner")))
            except UserError as e:
                raise UserError(f"cells[{i}]: {e}") from None
        return cls(d["scale"], d["head_width"], tuple(cells), d.get("act", "relu"),
                   d.get("skip", "nearest"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"architecture config is not valid JSON: {e}") from None
        return cls.from_dict(d)


@dataclass(frozen=True)
class LayerSpec:
    """One op of an architecture, as the latency model keys it.

    ``block`` tags where the op sits ("head", "cell3.res", "tail", "skip") for reports; it is
    left out of equality and hashing, so identical ops in different cells share a LUT entry.

    Attributes:
        op: "conv" (learned), "skip" (fixed 0/1 1x1 conv repeating each channel cout/cin times),
            "add" (elementwise sum of two (cin, h, w) tensors) or "pixel_shuffle" (cin = cout*s*s
            channels at h x w in).
        cin, cout: Input and output channels.
        k: Kernel size for "conv" and "skip", 0 for other ops.
        h, w: Spatial size of the op's input (the LR size for every op here).
        act: "relu" when a ReLU follows (fused by the compiler), "prelu" when a PReLU does (its
            own op), else None.
    """

    op: str
    cin: int
    cout: int
    k: int
    h: int
    w: int
    act: str | None = None
    block: str = field(default="", compare=False)

    @property
    def macs(self) -> int:
        """Multiply-accumulates; convs and the (fixed 1x1 conv) skip, 0 for other ops."""
        if self.op not in ("conv", "skip"):
            return 0
        return self.cin * self.cout * self.k * self.k * self.h * self.w


def layers(arch: ArchConfig, lr_hw: tuple[int, int]) -> list[LayerSpec]:
    """The ops of ``arch`` on an LR input of ``lr_hw`` = (height, width), in execution order."""
    h, w = lr_hw
    s2 = arch.scale * arch.scale
    out = [LayerSpec("conv", 3, arch.head_width, 3, h, w, arch.act, "head")]
    cin = arch.head_width
    for i, c in enumerate(arch.cells):
        tag = f"cell{i}.{c.block}"
        k = KINDS[c.block]
        ch = k.channels(cin, c)
        for conv in k.convs:
            out.append(LayerSpec("conv", ch[conv.cin], ch[conv.cout], conv.k, h, w,
                                 arch.act if conv.relu else None, tag))
        if k.residual:
            out.append(LayerSpec("add", cin, cin, 0, h, w, None, tag))
        cin = c.width
    return out + [
        LayerSpec("conv", cin, 3 * s2, 3, h, w, None, "tail"),
        LayerSpec("skip", 3, 3 * s2, SKIP_K[arch.skip], h, w, None, "skip"),
        LayerSpec("add", 3 * s2, 3 * s2, 0, h, w, None, "skip"),
        LayerSpec("pixel_shuffle", 3 * s2, 3, 0, h, w, None, "upsample"),
    ]


def macs(arch: ArchConfig, lr_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass on an LR input of ``lr_hw`` (convs and skip)."""
    return sum(spec.macs for spec in layers(arch, lr_hw))


def params(arch: ArchConfig) -> int:
    """Number of learned parameters (conv weights and biases; the skip is fixed)."""
    return sum(s.macs + s.cout for s in layers(arch, (1, 1)) if s.op == "conv")
