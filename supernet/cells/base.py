"""What a cell kind declares (`CellKind`), and the pieces every kind's modules share.

A kind is data plus two module classes: its convs in order (`ConvSpec`: which channel space
each reads and writes), whether it adds its input to its output, where its inner-width choices
live in the `SearchSpace`, how its derived low-rank width follows its width, its elastic module
(the supernet's, sliced) and its plain module (what a subnet holds, exported). The space's layer
specs, the supernet's channel reordering, stage 2's genes and stage 3's channel groups and
pruning are all derived from these declarations (`supernet.space`, `srsearch.search`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

# Builds a module equivalent to a 3x3 conv (cin -> cout, padding 1). The plain form is
# nn.Conv2d; a training-time form may be a sum of linear branches that collapses into one
# (srsearch.models.subnet.RepSubNet).
Conv3x3 = Callable[[int, int], nn.Module]


def plain_conv3x3(cin: int, cout: int) -> nn.Module:
    return nn.Conv2d(cin, cout, 3, padding=1)


# Builds the activation that follows a conv with ``channels`` outputs (`activation`).
Act = Callable[[int], nn.Module]
ACTS: tuple[str, ...] = ("relu", "prelu")


def relu_act(channels: int) -> nn.Module:
    return nn.ReLU()


def prelu_act(channels: int) -> nn.Module:
    return nn.PReLU(channels)


def activation(name: str) -> Act:
    """The activation factory of an architecture's ``act``: "relu" (no parameters, fused into
    the conv by the compiler) or "prelu" (one learned slope per channel, as in ECBSR; one PRELU
    op after the conv in the exported file)."""
    if name == "relu":
        return relu_act
    if name == "prelu":
        return prelu_act
    raise ValueError(f"unknown activation {name!r}; choose one of {list(ACTS)}")


class Cell(Protocol):
    """What a cell module reads of its `supernet.space.CellConfig`."""

    block: str
    width: int
    inner: int | None


# Channel spaces a conv of a cell reads or writes.
IN, OUT, INNER, LOW = "in", "out", "inner", "low"


@dataclass(frozen=True)
class ConvSpec:
    """One conv of a cell, in execution order.

    Attributes:
        name: Its attribute name in the elastic and the plain module (weights copy by name).
        cin, cout: The channel spaces it reads and writes: "in" (the cell's input), "out" (its
            output, the same channels as "in" in a residual cell), "inner" or "low".
        k: Kernel size.
        relu: Whether a ReLU follows it.
    """

    name: str
    cin: str
    cout: str
    k: int
    relu: bool


@dataclass(frozen=True)
class CellKind:
    """One kind of body cell.

    Attributes:
        name: The ``block`` of a `CellConfig`.
        convs: Its convs, in order.
        residual: It adds its input to its output, so it keeps its input width (only kinds
            that are not residual change the trunk width).
        inner_field: The `SearchSpace` field holding its inner-width choices (None: it has no
            inner width; a `CellConfig`'s inner then equals its width).
        low: Its derived low-rank width from its width (None: it has none).
        elastic: The supernet's module: ``elastic(max_width, max_inner)``, called as
            ``module(x, cell)``.
        plain: The subnet's module: ``plain(cin, cell, conv3x3)``, called as ``module(x)``.
    """

    name: str
    convs: tuple[ConvSpec, ...]
    residual: bool
    inner_field: str | None
    elastic: type[nn.Module]
    plain: type[nn.Module]
    low: Callable[[int], int] | None = None

    @property
    def has_inner(self) -> bool:
        return self.inner_field is not None

    def inner_choices(self, space: Any, width: int) -> tuple[int, ...]:
        """The inner widths a cell of this kind and output ``width`` may take in ``space``."""
        return tuple(getattr(space, self.inner_field)) if self.inner_field else (width,)

    def channels(self, cin: int, cell: Cell) -> dict[str, int]:
        """Width of each channel space of a cell with input ``cin``."""
        out = {IN: cin, OUT: cell.width, INNER: cell.inner if self.has_inner else cell.width}
        if self.low is not None:
            out[LOW] = self.low(cell.width)
        return out

    def writer(self, space: str) -> ConvSpec:
        """The conv that writes channel space ``space``."""
        return next(c for c in self.convs if c.cout == space)

    def writers(self) -> tuple[str, ...]:
        """The convs writing the cell's output (the trunk's channels)."""
        return tuple(c.name for c in self.convs if c.cout == OUT)

    def readers(self) -> tuple[str, ...]:
        """The convs reading the cell's input."""
        return tuple(c.name for c in self.convs if c.cin == IN)

    def internal(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Each block-internal channel space -> (the conv writing it, the convs reading it)."""
        return {space: (self.writer(space).name,
                        tuple(c.name for c in self.convs if c.cin == space))
                for space in (INNER, LOW) if any(c.cout == space for c in self.convs)}
