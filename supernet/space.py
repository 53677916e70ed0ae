"""The search space: the set of architectures one supernet holds (`SearchSpace`), and the one
way the CLI and the pipeline build it (`make_space`).

Architectures themselves (`ArchConfig`, `CellConfig`, `LayerSpec`, `layers`, `macs`, `params`)
live in `supernet.arch` and are re-exported here; cell kinds in `supernet.cells`.

See docs/search_space.md for the choices and the size of the default space.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from srcore.errors import UserError
from srcore.layers import SKIPS
from supernet.arch import (  # noqa: F401  (re-exported: the names code has imported from here)
    BLOCKS,
    KEEPS_WIDTH,
    SCALES,
    ArchConfig,
    CellConfig,
    LayerSpec,
    _check_int,
    layers,
    macs,
    params,
)
from supernet.cells import KINDS, wide_low  # noqa: F401  (wide_low: re-exported)

WIDTHS: tuple[int, ...] = tuple(range(8, 33, 4))  # head and cell output widths: 8, 12, ..., 32
RES_INNERS: tuple[int, ...] = tuple(range(8, 33, 4))  # mid width of a res cell
WIDE_INNERS: tuple[int, ...] = tuple(range(16, 65, 4))  # expansion width of a wide cell
# The global skip of the spaces the CLI and the pipeline build (`make_space`): the nets learn
# the residual over bicubic upsampling (docs/search_space.md, "The global skip"). A
# `SearchSpace` without the field (older supernet files) means "nearest".
DEFAULT_SKIP = "bicubic"


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
                    arch = ArchConfig(space.scale, cin, (CellConfig(block, width, inner),),
                                      skip=space.skip)
                    keys.update(dict.fromkeys(layers(arch, lr_hw)))
    return list(keys)


def prelu_plain_keys(space: SearchSpace, lr_hw: tuple[int, int]) -> list[LayerSpec]:
    """The op keys of the ECBSR-style plain nets over ``space``'s widths that the space's own
    nets lack: their PReLU convs (head 3 -> C and conv C -> C, each followed by a PReLU) and
    their nearest skip (when the space's skip is another), so that the latency table prices the
    hand-designed family a user would scale to the budget with its real ops. Only these: the
    search itself runs ReLU nets with the space's skip (docs/search_space.md)."""
    keys: dict[LayerSpec, None] = {}
    for c in space.widths:
        arch = ArchConfig(space.scale, c, (CellConfig("conv", c),), "prelu")
        keys.update(dict.fromkeys(k for k in layers(arch, lr_hw)
                                  if k.act == "prelu" or k.op == "skip"))
    return list(keys)


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
        skip: The global LR skip of every architecture (``ArchConfig.skip``): "nearest" or
            "bicubic". Not searched: one supernet trains with one skip.
    """

    scale: int = 2
    min_depth: int = 1
    max_depth: int = 8
    widths: tuple[int, ...] = WIDTHS
    blocks: tuple[str, ...] = BLOCKS
    res_inners: tuple[int, ...] = RES_INNERS
    wide_inners: tuple[int, ...] = WIDE_INNERS
    skip: str = "nearest"

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
        if self.skip not in SKIPS:
            raise UserError(f"search space skip is {self.skip!r}: choose one of {list(SKIPS)}")
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
        return ArchConfig(self.scale, head, tuple(cells), skip=self.skip)

    def _uniform(self, depth: int, block: str, pick: Any) -> ArchConfig:
        width = pick(self.widths)
        cell = CellConfig(block, width, pick(self.inner_choices(block, width)))
        return ArchConfig(self.scale, width, (cell,) * depth, skip=self.skip)

    def chains(self) -> list[ArchConfig]:
        """The ECBSR-style nets of the space: head C, then m conv cells of C, for every depth m
        and width C (the space's skip; ReLU). ECBSR-MmCC collapses to the same ops with PReLU
        and the nearest skip (`prelu_plain_keys`). Empty when conv cells are not in the
        space."""
        if "conv" not in self.blocks:
            return []
        return [ArchConfig(self.scale, c, (CellConfig("conv", c, c),) * m, skip=self.skip)
                for m in range(self.min_depth, self.max_depth + 1) for c in self.widths]

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
        if arch.skip != self.skip:
            out.append(f"skip {arch.skip!r} but the space's is {self.skip!r}")
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
        if self.skip != other.skip:
            out.append(f"skip {self.skip!r} (the other has {other.skip!r})")
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
               blocks: tuple[str, ...] | None = None, skip: str | None = None) -> SearchSpace:
    """The one way the CLI and the pipeline build a space: the default space at ``scale``,
    narrowed or widened to ``max_width`` (widths 8, 12, ..., max_width; res inner widths the
    same; wide inner widths 16, 20, ..., 2 * max_width), cut to ``max_depth`` cells and to the
    cell kinds ``blocks``, with the global skip ``skip`` (default ``DEFAULT_SKIP``). The
    supernet, the latency table and the search all take it from here, so a table built with
    the supernet's flags covers the supernet's space.
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
    kw["skip"] = DEFAULT_SKIP if skip is None else skip
    return SearchSpace(**kw)
