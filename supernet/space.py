"""The SR search space: architectures as small, frozen, JSON-serialisable data.

An architecture is a head 3x3 conv (3 -> head_width) + ReLU, D cells, a tail 3x3 conv
(last width -> 3*s*s), a global skip that repeats each LR input channel s*s times (a fixed 1x1
conv), and a pixel shuffle. Everything but the shuffle runs at LR resolution. Cell kinds:

- ``conv``: 3x3 conv (in -> width) + ReLU.
- ``res``: 3x3 (in -> inner) + ReLU, 3x3 (inner -> in), + identity. Keeps its input width.
- ``wide`` (WDSR-B): 1x1 (in -> inner) + ReLU, 1x1 (inner -> low), 3x3 (low -> in),
  + identity. Keeps its input width. ``low = wide_low(width)`` is derived, not searched.

Widths change only in the head and in conv cells (`KEEPS_WIDTH`). Each kind is declared once,
in its own file under `supernet.cells` (its convs, inner widths and modules); this module derives
the layer specs and the space's counts from those declarations.

See docs/search_space.md for the choices and the size of the default space.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from srcore.errors import UserError
from supernet.cells import KINDS, kind, wide_low  # noqa: F401  (wide_low: re-exported)

SCALES: tuple[int, ...] = (2, 3, 4)
BLOCKS: tuple[str, ...] = tuple(KINDS)  # ("conv", "res", "wide"), the registry's order
WIDTHS: tuple[int, ...] = tuple(range(8, 33, 4))  # head and cell output widths: 8, 12, ..., 32
RES_INNERS: tuple[int, ...] = tuple(range(8, 33, 4))  # mid width of a res cell
WIDE_INNERS: tuple[int, ...] = tuple(range(16, 65, 4))  # expansion width of a wide cell
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
    """

    scale: int
    head_width: int
    cells: tuple[CellConfig, ...]

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or self.scale not in SCALES:
            raise UserError(f"scale is {self.scale!r}; it must be one of {list(SCALES)}")
        _check_int("head_width", self.head_width)
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
        return {
            "scale": self.scale,
            "head_width": self.head_width,
            "cells": [c.to_dict() for c in self.cells],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArchConfig:
        """Parse and validate; errors name the bad key or cell."""
        if not isinstance(d, Mapping):
            raise UserError(f"architecture config must be a JSON object, got {type(d).__name__}")
        keys = {"scale", "head_width", "cells"}
        if set(d) != keys:
            raise UserError(
                f"architecture config has keys {sorted(d)}; it needs exactly {sorted(keys)}"
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
        return cls(d["scale"], d["head_width"], tuple(cells))

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
        act: "relu" when a ReLU follows (fused by the compiler), else None.
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
    out = [LayerSpec("conv", 3, arch.head_width, 3, h, w, "relu", "head")]
    cin = arch.head_width
    for i, c in enumerate(arch.cells):
        tag = f"cell{i}.{c.block}"
        k = KINDS[c.block]
        ch = k.channels(cin, c)
        for conv in k.convs:
            out.append(LayerSpec("conv", ch[conv.cin], ch[conv.cout], conv.k, h, w,
                                 "relu" if conv.relu else None, tag))
        if k.residual:
            out.append(LayerSpec("add", cin, cin, 0, h, w, None, tag))
        cin = c.width
    return out + [
        LayerSpec("conv", cin, 3 * s2, 3, h, w, None, "tail"),
        LayerSpec("skip", 3, 3 * s2, 1, h, w, None, "skip"),
        LayerSpec("add", 3 * s2, 3 * s2, 0, h, w, None, "skip"),
        LayerSpec("pixel_shuffle", 3 * s2, 3, 0, h, w, None, "upsample"),
    ]


def distinct_keys(space: SearchSpace, lr_hw: tuple[int, int]) -> list[LayerSpec]:
    """Every distinct op key any architecture of ``space`` has at ``lr_hw``, in a fixed order.

    An op's key depends only on its cell's input width, kind, width and inner width (the head
    on the head width, the tail on the last width), so the one-cell nets of every (input width,
    cell) pair already hold every key of every depth.
    """
    keys: dict[LayerSpec, None] = {}
    for cin in space.widths:
        for block in space.blocks:
            for width in (cin,) if block in KEEPS_WIDTH else space.widths:
                for inner in space.inner_choices(block, width):
                    arch = ArchConfig(space.scale, cin, (CellConfig(block, width, inner),))
                    keys.update(dict.fromkeys(layers(arch, lr_hw)))
    return list(keys)


def macs(arch: ArchConfig, lr_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass on an LR input of ``lr_hw`` (convs and skip)."""
    return sum(spec.macs for spec in layers(arch, lr_hw))


def params(arch: ArchConfig) -> int:
    """Number of learned parameters (conv weights and biases; the skip is fixed)."""
    return sum(s.macs + s.cout for s in layers(arch, (1, 1)) if s.op == "conv")


def _choices(name: str, values: Any) -> tuple[int, ...]:
    values = tuple(values)
    if not values:
        raise UserError(f"search space {name} is empty; give at least one value")
    for v in values:
        _check_int(f"search space {name} value", v)
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class SearchSpace:
    """The set of architectures one supernet holds.

    Attributes:
        scale: Upscaling factor; one supernet per scale (the tail's width depends on it).
        min_depth, max_depth: Range of the number of cells.
        widths: Choices for the head width and every cell's output width.
        blocks: Cell kinds allowed.
        res_inners: Choices for a res cell's mid width.
        wide_inners: Choices for a wide cell's expansion width.
    """

    scale: int = 2
    min_depth: int = 1
    max_depth: int = 8
    widths: tuple[int, ...] = WIDTHS
    blocks: tuple[str, ...] = BLOCKS
    res_inners: tuple[int, ...] = RES_INNERS
    wide_inners: tuple[int, ...] = WIDE_INNERS

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or self.scale not in SCALES:
            raise UserError(f"search space scale is {self.scale!r}; choose one of {list(SCALES)}")
        _check_int("min_depth", self.min_depth)
        _check_int("max_depth", self.max_depth, f"an integer >= min_depth ({self.min_depth})")
        if self.max_depth < self.min_depth:
            raise UserError(f"max_depth {self.max_depth} is below min_depth {self.min_depth}")
        blocks = tuple(dict.fromkeys(self.blocks))
        if not blocks or not set(blocks) <= set(BLOCKS):
            raise UserError(f"search space blocks {self.blocks!r}: choose from {list(BLOCKS)}")
        object.__setattr__(self, "blocks", blocks)
        for name in ("widths", "res_inners", "wide_inners"):
            object.__setattr__(self, name, _choices(name, getattr(self, name)))

    def inner_choices(self, block: str, width: int) -> tuple[int, ...]:
        """The inner widths a ``block`` cell of output ``width`` may take in this space."""
        return KINDS[block].inner_choices(self, width)

    def sample(self, rng: random.Random, depth: int | None = None) -> ArchConfig:
        """A random architecture: depth (or the given one), head width, then each cell's kind
        and widths, uniformly."""
        if depth is None:
            depth = rng.randint(self.min_depth, self.max_depth)
        elif not self.min_depth <= depth <= self.max_depth:
            raise UserError(f"depth {depth} is outside {self.min_depth}..{self.max_depth}")
        head = rng.choice(self.widths)
        cells, cin = [], head
        for _ in range(depth):
            block = rng.choice(self.blocks)
            width = cin if block in KEEPS_WIDTH else rng.choice(self.widths)
            cells.append(CellConfig(block, width, rng.choice(self.inner_choices(block, width))))
            cin = width
        return ArchConfig(self.scale, head, tuple(cells))

    def _uniform(self, depth: int, block: str, pick: Any) -> ArchConfig:
        width = pick(self.widths)
        cell = CellConfig(block, width, pick(self.inner_choices(block, width)))
        return ArchConfig(self.scale, width, (cell,) * depth)

    def max_arch(self) -> ArchConfig:
        """Deepest and widest: max depth, max widths, every cell of the kind with most MACs."""
        archs = [self._uniform(self.max_depth, b, max) for b in self.blocks]
        return max(archs, key=lambda a: macs(a, (1, 1)))

    def min_arch(self) -> ArchConfig:
        """Shallowest and narrowest: min depth, min widths, the kind with fewest MACs."""
        archs = [self._uniform(self.min_depth, b, min) for b in self.blocks]
        return min(archs, key=lambda a: macs(a, (1, 1)))

    def size(self) -> int:
        """Exact number of distinct architectures, counted per depth over the running width."""
        # choices per cell of each kind: its inner widths (1 when it has none)
        n = {b: len(self.inner_choices(b, 0)) if KINDS[b].has_inner else 1 for b in self.blocks}
        n_moving = sum(v for b, v in n.items() if not KINDS[b].residual)
        n_keeping = sum(v for b, v in n.items() if KINDS[b].residual)
        count = dict.fromkeys(self.widths, 1)  # architectures so far, by current width
        total = 0
        for depth in range(1, self.max_depth + 1):
            s = sum(count.values())
            # a conv cell may move to any width; res and wide cells stay at theirs
            count = {w: s * n_moving + count[w] * n_keeping for w in self.widths}
            if depth >= self.min_depth:
                total += sum(count.values())
        return total

    def violations(self, arch: ArchConfig) -> list[str]:
        """Why ``arch`` is outside this space (empty when it is inside)."""
        out = []
        if arch.scale != self.scale:
            out.append(f"scale {arch.scale} but the space is for scale {self.scale}")
        if not self.min_depth <= arch.depth <= self.max_depth:
            out.append(f"depth {arch.depth} outside {self.min_depth}..{self.max_depth}")
        if arch.head_width not in self.widths:
            out.append(f"head_width {arch.head_width} not in {list(self.widths)}")
        for i, c in enumerate(arch.cells):
            if c.block not in self.blocks:
                out.append(f"cells[{i}].block {c.block!r} not in {list(self.blocks)}")
                continue
            if c.width not in self.widths:
                out.append(f"cells[{i}].width {c.width} not in {list(self.widths)}")
            inners = self.inner_choices(c.block, c.width)
            if c.inner not in inners:
                out.append(f"cells[{i}].inner {c.inner} not in {list(inners)}")
        return out

    def contains(self, arch: ArchConfig) -> bool:
        return not self.violations(arch)

    def check(self, arch: ArchConfig) -> None:
        """Raise UserError naming every field of ``arch`` that falls outside the space."""
        bad = self.violations(arch)
        if bad:
            raise UserError(
                "architecture is outside the search space: "
                + "; ".join(bad)
                + ". Pick values from the space (docs/search_space.md) or widen the space."
            )

    def missing_from(self, other: SearchSpace) -> list[str]:
        """What of this space ``other`` does not hold (empty when ``other`` covers it)."""
        out = []
        if self.scale != other.scale:
            out.append(f"scale {self.scale} (the other has {other.scale})")
        if self.min_depth < other.min_depth or self.max_depth > other.max_depth:
            out.append(f"depths {self.min_depth}..{self.max_depth} (the other has "
                       f"{other.min_depth}..{other.max_depth})")
        for name in ("widths", "blocks", "res_inners", "wide_inners"):
            extra = [v for v in getattr(self, name) if v not in getattr(other, name)]
            if name.endswith("inners") and name.split("_")[0] not in self.blocks:
                extra = []
            if extra:
                out.append(f"{name} {extra}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """``space`` as plain JSON data (what ``supernet.pt`` and ``train_config.json`` store)."""
    return space.to_dict()


def space_from_dict(d: Mapping[str, Any]) -> SearchSpace:
    """The inverse of `space_to_dict`."""
    return SearchSpace.from_dict(d)


def make_space(scale: int = 2, max_width: int | None = None, max_depth: int | None = None,
               blocks: tuple[str, ...] | None = None) -> SearchSpace:
    """The one way the CLI and the pipeline build a space: the default space at ``scale``,
    narrowed or widened to ``max_width`` (widths 8, 12, ..., max_width; res inner widths the
    same; wide inner widths 16, 20, ..., 2 * max_width), cut to ``max_depth`` cells and to the
    cell kinds ``blocks``. The supernet, the latency table and the search all take it from here,
    so a table built with the supernet's flags covers the supernet's space.
    """
    kw: dict[str, Any] = {"scale": scale}
    if max_width is not None:
        if max_width < 8 or max_width % 4:
            raise UserError(f"--max-width {max_width} must be a multiple of 4, at least 8")
        kw["widths"] = kw["res_inners"] = tuple(range(8, max_width + 1, 4))
        kw["wide_inners"] = tuple(range(16, 2 * max_width + 1, 4))
    if max_depth is not None:
        kw["max_depth"] = max_depth
    if blocks is not None:
        kw["blocks"] = tuple(blocks)
    return SearchSpace(**kw)
