"""Elastic layers: one full-size weight each, sliced to the active widths (once-for-all style).

Slicing always keeps a prefix (``weight[:out, :in]``), so which channels a narrow subnet keeps
is decided by the channel order; ``SuperNet.reorder_channels`` puts the important ones first.

Each elastic cell names, for that reordering, the convs that write its output (``writers``),
read its input (``readers``), and its block-internal channel spaces (``internal``:
name -> (writer, readers)). The child names match the plain cells of ``supernet.subnet``, so a
subnet's weights are copied by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from supernet.space import CellConfig, wide_low


class ElasticConv2d(nn.Module):
    """A ``k x k`` conv (stride 1, same padding) of up to ``max_in -> max_out`` channels."""

    def __init__(self, max_in: int, max_out: int, k: int) -> None:
        super().__init__()
        self.max_in, self.max_out, self.k = max_in, max_out, k
        self.weight = nn.Parameter(torch.empty(max_out, max_in, k, k))
        self.bias = nn.Parameter(torch.empty(max_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The ``nn.Conv2d`` default, for the full-size weight."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.max_in * self.k * self.k)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """Conv with the first ``x.shape[1]`` input and ``out_channels`` output channels."""
        cin, cout = x.shape[1], self.max_out if out_channels is None else out_channels
        if cin > self.max_in or cout > self.max_out:
            raise ValueError(
                f"{cin}->{cout} channels exceeds this layer's {self.max_in}->{self.max_out}"
            )
        return F.conv2d(x, self.weight[:cout, :cin], self.bias[:cout], padding=self.k // 2)

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d) -> None:
        """Copy the slice matching ``conv``'s shape into a plain conv."""
        cout, cin = conv.weight.shape[:2]
        conv.weight.copy_(self.weight[:cout, :cin])
        conv.bias.copy_(self.bias[:cout])

    def importance(self) -> torch.Tensor:
        """L1 norm of each output filter.  # (max_out,)"""
        return self.weight.detach().abs().sum(dim=(1, 2, 3))

    @torch.no_grad()
    def permute_out(self, perm: torch.Tensor) -> None:
        self.weight.copy_(self.weight[perm])
        self.bias.copy_(self.bias[perm])

    @torch.no_grad()
    def permute_in(self, perm: torch.Tensor) -> None:
        self.weight.copy_(self.weight[:, perm])

    def extra_repr(self) -> str:
        return f"max_in={self.max_in}, max_out={self.max_out}, k={self.k}"


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

    writers = ("conv",)
    readers = ("conv",)
    internal: dict[str, tuple[str, tuple[str, ...]]] = {}

    def __init__(self, max_width: int, max_inner: int) -> None:
        super().__init__()
        self.conv = ElasticConv2d(max_width, max_width, 3)
        with torch.no_grad():
            self.conv.weight.mul_(self.IDENTITY_NOISE)
            centre = self.conv.weight[:, :, 1, 1]
            centre.diagonal().add_(1.0)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, cell: CellConfig) -> torch.Tensor:
        return F.relu(self.conv(x, cell.width))


class ElasticResCell(nn.Module):
    """3x3 (in -> inner) + ReLU, 3x3 (inner -> in), + identity."""

    writers = ("conv2",)
    readers = ("conv1",)
    internal = {"inner": ("conv1", ("conv2",))}

    def __init__(self, max_width: int, max_inner: int) -> None:
        super().__init__()
        self.conv1 = ElasticConv2d(max_width, max_inner, 3)
        self.conv2 = ElasticConv2d(max_inner, max_width, 3)

    def forward(self, x: torch.Tensor, cell: CellConfig) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x, cell.inner)), x.shape[1])


class ElasticWideCell(nn.Module):
    """1x1 (in -> inner) + ReLU, 1x1 (inner -> low), 3x3 (low -> in), + identity."""

    writers = ("conv",)
    readers = ("expand",)
    internal = {"inner": ("expand", ("reduce",)), "low": ("reduce", ("conv",))}

    def __init__(self, max_width: int, max_inner: int) -> None:
        super().__init__()
        self.expand = ElasticConv2d(max_width, max_inner, 1)
        self.reduce = ElasticConv2d(max_inner, wide_low(max_width), 1)
        self.conv = ElasticConv2d(wide_low(max_width), max_width, 3)

    def forward(self, x: torch.Tensor, cell: CellConfig) -> torch.Tensor:
        y = self.reduce(F.relu(self.expand(x, cell.inner)), wide_low(x.shape[1]))
        return x + self.conv(y, x.shape[1])


ELASTIC_CELLS: dict[str, type[nn.Module]] = {
    "conv": ElasticConvCell,
    "res": ElasticResCell,
    "wide": ElasticWideCell,
}
