"""The ``wide`` cell (WDSR-B): 1x1 (in -> inner) + ReLU, 1x1 (inner -> low), 3x3 (low -> in),
+ identity. ``low = wide_low(width)`` is derived, not searched."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from supernet.cells.base import (
    IN,
    INNER,
    LOW,
    OUT,
    Act,
    Cell,
    CellKind,
    Conv3x3,
    ConvSpec,
    plain_conv3x3,
    relu_act,
)
from supernet.elastic import ElasticConv2d


def wide_low(width: int) -> int:
    """Low-rank width of a wide cell: 3/4 of its output width, rounded up to a multiple of 4.

    WDSR-B uses 0.8; 3/4 keeps every low width a multiple of 4 for widths that are.
    """
    return 4 * math.ceil(3 * width / 16)


class ElasticWideCell(nn.Module):
    """1x1 (in -> inner) + ReLU, 1x1 (inner -> low), 3x3 (low -> in), + identity."""

    def __init__(self, max_width: int, max_inner: int) -> None:
        super().__init__()
        self.expand = ElasticConv2d(max_width, max_inner, 1)
        self.reduce = ElasticConv2d(max_inner, wide_low(max_width), 1)
        self.conv = ElasticConv2d(wide_low(max_width), max_width, 3)

    def forward(self, x: torch.Tensor, cell: Cell) -> torch.Tensor:
        y = self.reduce(F.relu(self.expand(x, cell.inner)), wide_low(x.shape[1]))
        return x + self.conv(y, x.shape[1])


class WideCell(nn.Module):
    """WDSR-B: 1x1 (in -> inner) + ReLU, 1x1 (inner -> low), 3x3 (low -> in), + identity."""

    def __init__(self, cin: int, cell: Cell, conv3x3: Conv3x3 = plain_conv3x3,
                 act: Act = relu_act) -> None:
        super().__init__()
        low = wide_low(cin)
        self.expand = nn.Conv2d(cin, cell.inner, 1)
        self.act = act(cell.inner)
        self.reduce = nn.Conv2d(cell.inner, low, 1)
        self.conv = conv3x3(low, cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.reduce(self.act(self.expand(x))))


WIDE = CellKind(
    name="wide",
    convs=(ConvSpec("expand", IN, INNER, 1, relu=True), ConvSpec("reduce", INNER, LOW, 1, False),
           ConvSpec("conv", LOW, OUT, 3, False)),
    residual=True,
    inner_field="wide_inners",
    elastic=ElasticWideCell,
    plain=WideCell,
    low=wide_low,
)
