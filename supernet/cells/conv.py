"""The ``conv`` cell: 3x3 conv (in -> width) + ReLU. The only kind that changes the width."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from supernet.cells.base import (
    IN,
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


class ElasticConvCell(nn.Module):
    """3x3 conv (in -> width) + ReLU.

    Initialised near identity (Net2Net's function-preserving deepening): channel j of the
    output starts as channel j of the input plus ``IDENTITY_NOISE`` x the default init, bias 0.
    The trunk it reads is mostly non-negative (the head ends in a ReLU), so an untrained conv
    cell passes it on, and every later shared cell and the tail see the features they were
    trained on. With the default init, conv cells that weight sharing trains rarely (deep
    positions) shrank the trunk layer by layer until the body's output vanished
    (docs/search_space.md, "Conv cells start near identity").
    """

    IDENTITY_NOISE = 0.1

    def __init__(self, max_width: int, max_inner: int) -> None:
        super().__init__()
        self.conv = ElasticConv2d(max_width, max_width, 3)
        with torch.no_grad():
            self.conv.weight.mul_(self.IDENTITY_NOISE)
            centre = self.conv.weight[:, :, 1, 1]
            centre.diagonal().add_(1.0)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, cell: Cell) -> torch.Tensor:
        return F.relu(self.conv(x, cell.width))


class ConvCell(nn.Module):
    """3x3 conv (in -> width) + ReLU (or the architecture's activation)."""

    def __init__(self, cin: int, cell: Cell, conv3x3: Conv3x3 = plain_conv3x3,
                 act: Act = relu_act) -> None:
        super().__init__()
        self.conv = conv3x3(cin, cell.width)
        self.act = act(cell.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


CONV = CellKind(
    name="conv",
    convs=(ConvSpec("conv", IN, OUT, 3, relu=True),),
    residual=False,
    inner_field=None,
    elastic=ElasticConvCell,
    plain=ConvCell,
)
