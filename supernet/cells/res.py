"""The ``res`` cell: 3x3 (in -> inner) + ReLU, 3x3 (inner -> in), + identity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from supernet.cells.base import (
    IN,
    INNER,
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


class ElasticResCell(nn.Module):
    """3x3 (in -> inner) + ReLU, 3x3 (inner -> in), + identity."""

    def __init__(self, max_width: int, max_inner: int) -> None:
        super().__init__()
        self.conv1 = ElasticConv2d(max_width, max_inner, 3)
        self.conv2 = ElasticConv2d(max_inner, max_width, 3)

    def forward(self, x: torch.Tensor, cell: Cell) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x, cell.inner)), x.shape[1])


class ResCell(nn.Module):
    """3x3 (in -> inner) + ReLU, 3x3 (inner -> in), + identity."""

    def __init__(self, cin: int, cell: Cell, conv3x3: Conv3x3 = plain_conv3x3,
                 act: Act = relu_act) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cell.inner)
        self.act = act(cell.inner)
        self.conv2 = conv3x3(cell.inner, cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


RES = CellKind(
    name="res",
    convs=(ConvSpec("conv1", IN, INNER, 3, relu=True), ConvSpec("conv2", INNER, OUT, 3, False)),
    residual=True,
    inner_field="res_inners",
    elastic=ElasticResCell,
    plain=ResCell,
)
